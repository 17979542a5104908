"""recbole_mm's general (user-item) recommenders, one file per model.

The registry (:func:`recbole_mm.utils.plugin_models`) finds every :class:`MultimodalRecommender`
subclass defined in a module of this package: adding a model is adding its file (and its yaml in
``properties/model/``), nothing else.
"""

from __future__ import annotations

import importlib
import inspect
import pkgutil


def discover() -> dict:
    """``{ClassName: class}`` of the models defined in this package's modules, by module scan."""
    from recbole_mm.model.abstract_recommender import MultimodalRecommender

    found = {}
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        for name, obj in inspect.getmembers(module, inspect.isclass):
            if obj.__module__ == module.__name__ and issubclass(obj, MultimodalRecommender):
                found[name] = obj
    return found


def __getattr__(name):  # ``from recbole_mm.model.general_recommender import VBPR`` keeps working
    models = discover()
    if name in models:
        return models[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
