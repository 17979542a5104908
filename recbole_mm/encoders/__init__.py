"""Raw content -> item feature files (text now; image and MLLM encoders build on the same I/O)."""

from recbole_mm.encoders.text import encode_texts, resolve_text_model

__all__ = ["encode_texts", "resolve_text_model"]
