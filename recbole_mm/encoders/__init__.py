"""Raw content -> item feature files: text (sentence-transformers), image (CLIP/SigLIP/ViT) and
fused multimodal-LLM features, plus AlignRec's ICA pre-training (``ica``). CLI: ``python -m
recbole_mm.encoders text|image|mllm --help``."""

from recbole_mm.encoders.text import encode_texts, resolve_text_model

__all__ = ["encode_texts", "resolve_text_model"]
