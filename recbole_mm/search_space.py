"""Search spaces that ship with the models: read, validate, subsample, hand to RecBole's HyperTuning.

A plugin model's space is the ``search_space:`` block of its ``properties/model/<Model>.yaml``
(or of a registered outside model's ``config_file``); a RecBole built-in used as a baseline has
``properties/baselines/<Model>.yaml`` holding only that block (its defaults stay RecBole's).
A space is a grid, ``{parameter: [values]}``; every parameter must be one the model's yaml or
the global configuration (ours or RecBole's ``overall.yaml``) defines, so that a typo cannot
silently search nothing.

``grid_points(space, budget, seed)`` takes a seeded random subset of the grid: the first
``budget`` points of one seeded permutation, so a larger budget extends a smaller one's trials
(and a resumed leaderboard reuses them).
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from recbole_mm.config import properties_dir
from recbole_mm.utils import canonical_model_name, plugin_models

_SCALARS = (bool, int, float, str, type(None))


def baseline_models() -> list:
    """RecBole built-ins that ship a search space (``properties/baselines/*.yaml``), sorted."""
    return sorted(p.stem for p in (properties_dir() / "baselines").glob("*.yaml"))


def models_with_space() -> list:
    """Every model whose search space ships: the baselines, then the plugin models (sorted)."""
    return baseline_models() + sorted(m for m in plugin_models() if _plugin_yaml(m) is not None)


def _plugin_yaml(model: str):
    cls = plugin_models().get(model)
    if cls is None:
        return None
    own = getattr(cls, "config_file", None)
    path = Path(own) if own else properties_dir() / "model" / f"{model}.yaml"
    return path if path.is_file() else None


def _recbole_properties() -> Path:
    import recbole

    return Path(recbole.__file__).resolve().parent / "properties"


def _read(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return yaml.safe_load(fh) or {}


def space_file(model) -> Path:
    """The yaml that holds ``model``'s search space (``ValueError`` when none ships)."""
    name = canonical_model_name(model)
    path = _plugin_yaml(name) if name in plugin_models() else properties_dir() / "baselines" / f"{name}.yaml"
    if path is None or not path.is_file():
        raise ValueError(f"model {name}: no search space ships with it (properties/model/{name}.yaml or "
                         f"properties/baselines/{name}.yaml); pass --params_file=FILE")
    return path


def known_keys(model) -> set:
    """Parameters a space of ``model`` may search: its own yaml's keys (ours, or RecBole's model yaml
    for a built-in) and the global ones (our and RecBole's ``overall.yaml``, e.g. learning_rate)."""
    name = canonical_model_name(model)
    files = [properties_dir() / "overall.yaml", _recbole_properties() / "overall.yaml"]
    if name in plugin_models():
        files.append(_plugin_yaml(name))
    else:
        files.append(_recbole_properties() / "model" / f"{name}.yaml")
    keys = set()
    for path in files:
        if path is not None and path.is_file():
            keys.update(_read(path))
    return keys - {"search_space"}


def validate_space(space, known: set, where: str) -> dict:
    """``space`` as ``{parameter: [values]}``; ``ValueError`` naming ``where`` and the field otherwise."""
    if not isinstance(space, dict) or not space:
        raise ValueError(f"{where}: search_space: must be a non-empty mapping parameter: [values]")
    for key, values in space.items():
        field = f"{where}: search_space: {key}"
        if key not in known:
            raise ValueError(f"{field}: not a parameter of this model or of the global configuration")
        if not isinstance(values, list) or not values:
            raise ValueError(f"{field}: must be a non-empty list of values, got {values!r}")
        for value in values:
            items = value if isinstance(value, list) else [value]
            if not all(isinstance(v, _SCALARS) for v in items):
                raise ValueError(f"{field}: value {value!r} is not a number, string, bool or list of them")
            for v in items:
                if isinstance(v, str):
                    try:
                        float(v)
                    except ValueError:
                        continue
                    raise ValueError(f"{field}: value {v!r} is a string (YAML reads 1e-5 as text): write 1.0e-05")
        if len({repr(v) for v in values}) != len(values):
            raise ValueError(f"{field}: repeated values in {values!r}")
    return space


def load_space(model) -> dict:
    """``model``'s shipped search space, validated: ``{parameter: [values]}`` in the yaml's order."""
    path = space_file(model)
    data = _read(path)
    if "search_space" not in data:
        raise ValueError(f"{path}: no search_space: block; pass --params_file=FILE")
    return validate_space(data["search_space"], known_keys(model), str(path))


def grid_size(space: dict) -> int:
    return math.prod(len(v) for v in space.values())


def sample_indices(sizes, budget=None, seed: int = 0) -> list:
    """Index tuples into a grid of ``sizes`` (one index per parameter): the whole grid in order
    without ``budget``, else the first ``budget`` points of a permutation seeded by ``seed`` (the
    same seed gives the same subset; a larger budget extends a smaller one)."""
    import numpy as np

    sizes = [int(s) for s in sizes]
    total = math.prod(sizes)
    if budget is not None and budget < 1:
        raise ValueError(f"--budget must be at least 1, got {budget}")
    order = np.arange(total) if budget is None or budget >= total else \
        np.random.default_rng(seed).permutation(total)[:budget]
    return [tuple(int(i) for i in np.unravel_index(int(flat), sizes)) for flat in order]


def grid_indices(space: dict, budget=None, seed: int = 0) -> list:
    """:func:`sample_indices` of ``space``'s grid (parameters in ``space`` order)."""
    return sample_indices([len(v) for v in space.values()], budget, seed)


def grid_points(space: dict, budget=None, seed: int = 0) -> list:
    """The points of :func:`grid_indices` as ``{parameter: value}`` dicts."""
    keys = list(space)
    return [{k: space[k][i] for k, i in zip(keys, idx)} for idx in grid_indices(space, budget, seed)]


def format_value(value) -> str:
    """A value as RecBole's command line and params file read it back (no spaces: RecBole's
    params-file reader splits on them)."""
    if isinstance(value, list):
        return "[" + ",".join(format_value(v) for v in value) + "]"
    if isinstance(value, str):
        return repr(value)
    return repr(value)


def to_params_file(space: dict) -> str:
    """The space in RecBole's params-file form (``name choice [v1,v2]`` a line)."""
    return "".join(f"{k} choice [{','.join(format_value(v) for v in vals)}]\n" for k, vals in space.items())


def hyperopt_choices(space: dict):
    """``(space, decode)``: ``space`` with list values (NGCF's ``hidden_size_list``) replaced by
    their text, which RecBole's exhaustive search can count (it reads each choice's options as
    literals), and ``decode(config_dict)`` that puts the lists back before a trial runs."""
    texts = {k: {format_value(v): v for v in vals} for k, vals in space.items()
             if any(isinstance(v, list) for v in vals)}
    encoded = {k: (list(texts[k]) if k in texts else vals) for k, vals in space.items()}

    def decode(config_dict: dict) -> dict:
        return {k: (texts[k][v] if k in texts and isinstance(v, str) and v in texts[k] else v)
                for k, v in (config_dict or {}).items()}

    return encoded, decode
