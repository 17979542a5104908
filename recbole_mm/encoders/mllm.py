"""Text-guided fused item features from a multimodal LLM (USERec, PRAI 2025, item side).

For each item a prompt is filled from its text fields; prompt + image go through a vision-language
model of transformers (``AutoModelForImageTextToText``: Qwen2-VL, LLaVA, MiMo-VL, ...). The hidden
states of the **second-to-last layer** over the T input tokens, ``H_i in R^{T x d}``, are pooled to
``z_i`` (mean over the non-padding tokens by default, or the last token) and L2-normalised,
``e_i = z_i / ||z_i||``; an optional PCA (fit once on all items, saved beside the features) reduces
them, e.g. to the paper's 768 dims. The LLM only runs here, never during training.

Batching pads on the right: with causal attention the real tokens then see exactly what they see
unbatched, so features do not depend on the batch size.
"""

from __future__ import annotations

import numpy as np

from recbole_mm.encoders.image import load_image

# USERec's prompt: a multi-dimensional analysis of the product and its image, its likely buyers and
# what else they would buy, grounded in the item's text (title, description, price, brand).
DEFAULT_PROMPT = (
    "Product title: {title}\nBrand: {brand}\nPrice: {price}\nDescription: {description}\n"
    "Look at the product image together with this information. Give a detailed, multi-dimensional "
    "analysis of the product (category, function, material, style, colour, quality and price level), "
    "describe the profile of the users who are likely to buy it, and list which other products they "
    "would also buy."
)
MLLM_POOLINGS = ("mean", "last")


class _Defaults(dict):
    def __missing__(self, key):  # a field the items file lacks reads as "unknown" in the prompt
        return "unknown"


def fill_prompt(template: str, row: dict) -> str:
    clean = _Defaults({k: ("unknown" if v is None or str(v).strip() == "" else str(v).strip()) for k, v in row.items()})
    return template.format_map(clean)


class MLLMEncoder:
    """``__call__([(prompt, image_path_or_None), ...]) -> (features, {position: reason})``."""

    def __init__(self, model: str, pooling: str = "mean", layer: int = -2, device: str = "cpu",
                 require_image: bool = False):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        if pooling not in MLLM_POOLINGS:
            raise ValueError(f"pooling '{pooling}' is not one of {MLLM_POOLINGS}")
        self.model_name, self.pooling, self.layer, self.device = model, pooling, layer, device
        self.require_image = require_image
        self.processor = AutoProcessor.from_pretrained(model)
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "right"
        self.model = AutoModelForImageTextToText.from_pretrained(model).to(device).eval()
        self.torch = torch

    def _text(self, prompt: str, with_image: bool) -> str:
        content = ([{"type": "image"}] if with_image else []) + [{"type": "text", "text": prompt}]
        if getattr(self.processor, "chat_template", None):
            return self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                      add_generation_prompt=False, tokenize=False)
        token = getattr(self.processor, "image_token", "<image>")
        return f"{token}\n{prompt}" if with_image else prompt

    def _forward(self, texts, images):
        torch = self.torch
        kwargs = {"text": texts, "return_tensors": "pt", "padding": True}
        if images:
            kwargs["images"] = images
        inputs = self.processor(**kwargs).to(self.device)
        with torch.no_grad():
            out = self.model(**inputs, output_hidden_states=True)
        hidden = out.hidden_states[self.layer].float()  # (B, T, d); [-2] = second-to-last layer
        mask = inputs["attention_mask"].to(hidden.dtype).unsqueeze(-1)
        if self.pooling == "mean":
            z = (hidden * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        else:  # last real token (right padding)
            last = inputs["attention_mask"].sum(1) - 1
            z = hidden[torch.arange(hidden.shape[0]), last]
        return torch.nn.functional.normalize(z, dim=1).cpu().numpy()

    def __call__(self, items):
        errors, with_img, without_img = {}, [], []
        for pos, (prompt, path) in enumerate(items):
            image = None
            if path:
                try:
                    image = load_image(path)
                except Exception as exc:
                    if self.require_image:
                        errors[pos] = f"{type(exc).__name__}: {exc}"
                        continue
            elif self.require_image:
                errors[pos] = "no image"
                continue
            (with_img if image is not None else without_img).append((pos, prompt, image))
        feats = {}
        # items with and without an image form separate model calls (a batch mixes no image-less rows)
        if with_img:
            encoded = self._forward([self._text(p, True) for _, p, _ in with_img], [im for _, _, im in with_img])
            feats.update({pos: row for (pos, _, _), row in zip(with_img, encoded)})
        if without_img:
            encoded = self._forward([self._text(p, False) for _, p, _ in without_img], None)
            feats.update({pos: row for (pos, _, _), row in zip(without_img, encoded)})
        dim = next(iter(feats.values())).shape[0] if feats else 0
        out = np.zeros((len(items), dim), dtype=np.float32)
        for pos, row in feats.items():
            out[pos] = row
        return out, errors


def fit_pca(features: np.ndarray, dims: int):
    """PCA to ``dims`` components (SVD of the centred features); returns (projected, state dict)."""
    n, d = features.shape
    if dims > min(n, d):
        raise ValueError(f"--pca {dims}: at most min(items, dims) = {min(n, d)} components")
    mean = features.mean(0, dtype=np.float64)
    centred = features - mean
    _, s, vt = np.linalg.svd(centred.astype(np.float64), full_matrices=False)
    components = vt[:dims]
    explained = (s[:dims] ** 2) / max(n - 1, 1)
    total = (s ** 2).sum() / max(n - 1, 1)
    projected = (centred @ components.T).astype(np.float32)
    state = {"mean": mean.astype(np.float32), "components": components.astype(np.float32),
             "explained_variance": explained.astype(np.float32),
             "explained_variance_ratio": (explained / total).astype(np.float32)}
    return projected, state


def apply_pca(features: np.ndarray, state) -> np.ndarray:
    """Project new features with a saved PCA (``FEAT.pca.npz``)."""
    return ((features - state["mean"]) @ state["components"].T).astype(np.float32)
