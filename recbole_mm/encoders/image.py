"""Image features from a vision or vision-language model of transformers (CLIP, SigLIP, ViT, ...).

Pooling:

* ``projection`` (default for CLIP/SigLIP): the model's image embedding in its joint image-text
  space (``get_image_features``);
* ``cls``: the vision tower's pooled output (CLS token after the final norm; SigLIP's attention
  pooling head);
* ``mean``: mean of the vision tower's last hidden states over all tokens (patches).

A model argument is a hub name (offline: taken from the local cache, ``HF_HUB_OFFLINE=1``) or a
local directory saved with ``save_pretrained``. Images that are missing or fail to decode are
reported with their item id and left to the dataset's missing-modality policy.
"""

from __future__ import annotations

import os

import numpy as np

DEFAULT_IMAGE_MODEL = "openai/clip-vit-base-patch32"
POOLINGS = ("projection", "cls", "mean")


def resolve_image_path(value: str, root: str = None) -> str:
    """Local file for an image cell: an absolute/relative path, or a URL whose file was downloaded
    into ``root`` (looked up by the URL's file name)."""
    value = str(value).strip()
    if not value:
        return ""
    if value.startswith(("http://", "https://")):
        name = value.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
        return os.path.join(root or ".", name)
    return value if os.path.isabs(value) or root is None else os.path.join(root, value)


def load_image(path: str):
    """An RGB PIL image; raises ``OSError``/``ValueError`` with the reason when it cannot be read."""
    from PIL import Image

    if not path:
        raise ValueError("no image path")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: not on disk")
    with Image.open(path) as img:
        img.load()
        return img.convert("RGB")


class ImageEncoder:
    """Batched image features; ``__call__(paths) -> (features, {position: reason})``."""

    def __init__(self, model: str = DEFAULT_IMAGE_MODEL, pooling: str = None, device: str = "cpu"):
        import torch
        from transformers import AutoConfig, AutoImageProcessor, AutoModel

        self.model_name = model
        config = AutoConfig.from_pretrained(model)
        self.joint = hasattr(config, "vision_config")  # CLIP/SigLIP-style image-text model
        if pooling is None:
            pooling = "projection" if self.joint else "cls"
        if pooling not in POOLINGS:
            raise ValueError(f"pooling '{pooling}' is not one of {POOLINGS}")
        if pooling == "projection" and not self.joint:
            raise ValueError(f"pooling 'projection' needs an image-text model (CLIP/SigLIP); {model} is "
                             f"'{config.model_type}': use cls or mean")
        self.pooling = pooling
        self.device = device
        self.processor = AutoImageProcessor.from_pretrained(model)
        self.model = AutoModel.from_pretrained(model).to(device).eval()
        self.torch = torch

    def _vision_tower(self):
        return getattr(self.model, "vision_model", self.model)

    def encode_images(self, images) -> np.ndarray:
        torch = self.torch
        inputs = self.processor(images=images, return_tensors="pt").to(self.device)
        with torch.no_grad():
            if self.pooling == "projection":
                out = self.model.get_image_features(pixel_values=inputs["pixel_values"])
                out = getattr(out, "pooler_output", out)  # transformers>=5 may return a model output
            else:
                hidden = self._vision_tower()(pixel_values=inputs["pixel_values"])
                if self.pooling == "cls":
                    out = hidden.pooler_output if hidden.pooler_output is not None else hidden.last_hidden_state[:, 0]
                else:
                    out = hidden.last_hidden_state.mean(dim=1)
        return out.float().cpu().numpy()

    def __call__(self, paths):
        images, positions, errors = [], [], {}
        for pos, path in enumerate(paths):
            try:
                images.append(load_image(path))
                positions.append(pos)
            except Exception as exc:  # any decode problem is a per-item failure, never a crash
                errors[pos] = f"{type(exc).__name__}: {exc}"
        feats = None
        if images:
            encoded = self.encode_images(images)
            feats = np.zeros((len(paths), encoded.shape[1]), dtype=np.float32)
            feats[positions] = encoded
        return (feats if feats is not None else np.zeros((len(paths), 0), np.float32)), errors
