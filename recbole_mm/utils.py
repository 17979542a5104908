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


_REGISTERED: dict = {}  # models registered from outside the package (register_model)


@lru_cache(maxsize=1)
def _package_models() -> dict:
    from recbole_mm.model.general_recommender import discover

    return discover()


def register_model(model_class):
    """Make a model class defined outside recbole_mm known by name (usable as a decorator).

    Afterwards ``--model=<ClassName>`` (any case), ``run_recbole_mm("<ClassName>", ...)``,
    ``objective_function({"model": "<ClassName>", ...})`` and ``run_hyper.py`` find it, and the
    unknown-model message lists it. Its defaults come from ``model_class.config_file`` (a yaml
    path) when it sets one. Passing the class itself to ``run_recbole_mm``/``objective_function``
    registers it too. From the command line, ``--model=package.module:ClassName`` imports and
    registers it.
    """
    if not isinstance(model_class, type):
        raise TypeError(f"register_model takes a model class, got {model_class!r}")
    name = model_class.__name__
    builtin = _builtin_model(name)
    if builtin is model_class:  # recbole_mm's or RecBole's own class: nothing to register
        return model_class
    if builtin is not None:
        raise ValueError(f"register_model: '{name}' is already a model of recbole_mm or RecBole; rename the class")
    _REGISTERED[name] = model_class
    return model_class


def _builtin_model(name: str):
    """The recbole_mm or RecBole class named ``name`` (exact case-insensitive match), or None."""
    for cls_name, cls in _package_models().items():
        if cls_name.lower() == name.lower():
            return cls
    entry = _recbole_model_index().get(name.lower())
    if entry is None:
        return None
    sub, cls_name = entry
    return getattr(importlib.import_module(f"recbole.model.{sub}.{cls_name.lower()}"), cls_name)


def _import_model(path: str):
    """``package.module:ClassName`` -> the class, registered."""
    module_name, _, cls_name = path.partition(":")
    try:
        model_class = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise ValueError(f"--model={path}: cannot import {cls_name!r} from module {module_name!r} ({exc})") from exc
    return register_model(model_class)


def plugin_models() -> dict:
    """``{ClassName: class}`` of every recbole_mm model, then the registered outside ones."""
    return {**_package_models(), **_REGISTERED}


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


def canonical_model_name(name) -> str:
    """The properly-cased model name for ``name`` (any case, a class, or ``module:Class``);
    ``ValueError`` if unknown."""
    if not isinstance(name, str):
        return register_model(name).__name__
    if ":" in name:
        return _import_model(name).__name__
    lowered = name.lower()
    for cls_name in plugin_models():
        if cls_name.lower() == lowered:
            return cls_name
    entry = _recbole_model_index().get(lowered)
    if entry is not None:
        return entry[1]
    raise ValueError(
        f"Unknown model '{name}'. Available models: recbole_mm: {', '.join(sorted(plugin_models()))}; "
        f"RecBole: {', '.join(n for n in model_names() if n not in plugin_models())} "
        "(a model of your own: recbole_mm.register_model, or --model=package.module:ClassName)"
    )


def get_model(name):
    """Model class for ``name`` (case-insensitive): recbole_mm's first, then RecBole's."""
    canonical = canonical_model_name(name)
    return _REGISTERED.get(canonical) or _builtin_model(canonical)


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
