"""Model and trainer registry: recbole_mm's models first, then RecBole's built-ins.

Names are matched case-insensitively (``--model=alignrec`` finds ``AlignRec``); an unknown name
raises a ``ValueError`` that lists every available model.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from functools import lru_cache

from recbole.utils import ModelType

from recbole_mm.compat import make_compatible

_RECBOLE_SUBMODULES = (
    "general_recommender",
    "context_aware_recommender",
    "sequential_recommender",
    "knowledge_aware_recommender",
    "exlib_recommender",
)


def plugin_models() -> dict:
    """``{ClassName: class}`` of every recbole_mm model."""
    from recbole_mm.model import general_recommender

    return dict(general_recommender.MODELS)


@lru_cache(maxsize=1)
def _recbole_model_index() -> dict:
    """``{lowercase name: (submodule, ClassName)}`` for RecBole's models, read from source files.

    RecBole names each model file after the lower-cased class name; we read the class statement
    instead of importing every module (some need optional packages such as xgboost).
    """
    root = os.path.dirname(importlib.util.find_spec("recbole.model").origin)
    index = {}
    for sub in _RECBOLE_SUBMODULES:
        folder = os.path.join(root, sub)
        if not os.path.isdir(folder):
            continue
        for fname in sorted(os.listdir(folder)):
            stem, ext = os.path.splitext(fname)
            if ext != ".py" or stem.startswith("_"):
                continue
            with open(os.path.join(folder, fname), encoding="utf-8") as fh:
                classes = re.findall(r"^class (\w+)\(", fh.read(), flags=re.M)
            for cls in classes:
                if cls.lower() == stem:
                    index[stem] = (sub, cls)
    return index


def model_names() -> list:
    """All model names: plugin models first, then RecBole's."""
    plugin = sorted(plugin_models())
    recbole = sorted(cls for _, cls in _recbole_model_index().values() if cls not in plugin)
    return plugin + recbole


def canonical_model_name(name: str) -> str:
    """The properly-cased model name for ``name`` (any case); ``ValueError`` if unknown."""
    if not isinstance(name, str):
        return name.__name__
    lowered = name.lower()
    for cls_name in plugin_models():
        if cls_name.lower() == lowered:
            return cls_name
    entry = _recbole_model_index().get(lowered)
    if entry is not None:
        return entry[1]
    raise ValueError(
        f"Unknown model '{name}'. Available models: recbole_mm: {', '.join(sorted(plugin_models()))}; "
        f"RecBole: {', '.join(n for n in model_names() if n not in plugin_models())}"
    )


def get_model(name):
    """Model class for ``name`` (case-insensitive): recbole_mm's first, then RecBole's."""
    if not isinstance(name, str):
        return name
    canonical = canonical_model_name(name)
    models = plugin_models()
    if canonical in models:
        return models[canonical]
    sub, cls = _recbole_model_index()[canonical.lower()]
    module = importlib.import_module(f"recbole.model.{sub}.{canonical.lower()}")
    return getattr(module, cls)


def get_trainer(model_type, model_name):
    """Trainer class: ``recbole_mm.trainer.<Model>Trainer``, then RecBole's, made compatible.

    For general models without a dedicated trainer we use :class:`recbole_mm.trainer.Trainer`
    (RecBole's loop plus per-epoch hooks and timing); every torch trainer gets
    :class:`recbole_mm.compat.CompatTrainerMixin`.
    """
    model_name = canonical_model_name(model_name)
    ours = importlib.import_module("recbole_mm.trainer")
    if hasattr(ours, model_name + "Trainer"):
        return make_compatible(getattr(ours, model_name + "Trainer"))
    recbole_trainers = importlib.import_module("recbole.trainer")
    if hasattr(recbole_trainers, model_name + "Trainer"):
        return make_compatible(getattr(recbole_trainers, model_name + "Trainer"))
    if model_type == ModelType.KNOWLEDGE:
        return make_compatible(recbole_trainers.KGTrainer)
    if model_type == ModelType.TRADITIONAL:
        return make_compatible(ours.TraditionalTrainer)
    return make_compatible(ours.Trainer)
