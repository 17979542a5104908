"""Config and split checks that run before any training, so that a bad value is one clear error
instead of a crash (or silent nonsense) epochs later.

* :func:`check_config` -- keys known before the data (called at the end of ``Config.__init__``);
* :func:`check_against_dataset` -- keys that depend on the loaded dataset (``topk``, ``knn_k``);
* :func:`check_splits` -- empty splits are errors, users seen only at evaluation a warning.

Bounds: ``embedding_size`` / ``feature_embedding_size`` are integers in [1, 65536]. 65536 is far
beyond any published multimodal recommender (64 is the usual) while an embedding table of that
width for 100k users and items is already ~50 GB; the bound stops typos such as ``1e11`` (which
asks torch for ~24 TB) before any allocation.
"""

from __future__ import annotations

import numbers
import os
from logging import getLogger

import numpy as np

MAX_EMBEDDING_SIZE = 2**16
EMBEDDING_KEYS = ("embedding_size", "feature_embedding_size")


class ConfigError(ValueError):
    """A config value that cannot work; the message names the key, the value and what is allowed."""


def positive_int(label: str, value, upper: int = None):
    """``value`` if it is an integer in [1, upper]; else a :class:`ConfigError` naming ``label``."""
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if number and upper is not None and value > upper:
        raise ConfigError(f"{label} is {value:g}, more than the sane maximum {upper}")
    if not number or not isinstance(value, numbers.Integral) or value < 1:
        raise ConfigError(f"{label} must be a positive integer, got {value!r}")
    return int(value)


def _topk(config) -> list:
    topk = config["topk"]
    return [] if topk is None else list(topk) if isinstance(topk, (list, tuple)) else [topk]


def check_config(config) -> None:
    """Refuse config values that are wrong whatever the data: sizes, ``knn_k``, policies, an empty
    ``use_modalities`` (RecBole's own Config already refuses a non-positive ``topk``)."""
    from recbole_mm.data.features import MISSING_POLICIES
    from recbole_mm.data.utils import TEST_MASKS

    for key in EMBEDDING_KEYS:
        if config[key] is not None:
            positive_int(f"config key '{key}'", config[key], MAX_EMBEDDING_SIZE)
    if config["knn_k"] is not None:
        positive_int("config key 'knn_k'", config["knn_k"])
    for key, allowed in (("missing_modality", MISSING_POLICIES), ("test_mask", TEST_MASKS)):
        if config[key] is not None and config[key] not in allowed:
            raise ConfigError(f"config key '{key}' must be one of {list(allowed)}, got {config[key]!r}")
    wanted = config["use_modalities"]
    if wanted is not None and not isinstance(wanted, str) and len(wanted) == 0:
        raise ConfigError("config key 'use_modalities' is an empty list: name the modalities to use, "
                          "or leave it unset to use all of the dataset's modalities")


def check_against_dataset(config, dataset) -> None:
    """``topk`` must not exceed the item count (an error); ``knn_k`` >= it is a complete graph (a warning)."""
    n_items = dataset.item_num - 1  # without the padding id 0
    where = f"dataset '{dataset.dataset_name}' ({dataset.dataset_path})"
    topk = _topk(config)
    if topk and max(topk) > n_items:
        raise ConfigError(f"config key 'topk' asks for the top {max(topk)} items, but {where} has only "
                          f"{n_items} items; set topk to values <= {n_items}")
    knn_k = config["knn_k"]
    if knn_k is not None and knn_k >= n_items:
        getLogger().warning("config key 'knn_k' is %d but %s has %d items: every item is a neighbour of every "
                            "other (a complete graph, no selection); lower knn_k", knn_k, where, n_items)


def check_splits(dataset, built) -> None:
    """Refuse an empty train, valid or test split (naming its file); warn about users that are only
    in valid/test (they are ranked by an embedding no training step ever updated)."""
    names = ("train", "valid", "test")
    files = dataset.config["benchmark_filename"]
    for i, (name, split) in enumerate(zip(names, built)):
        if len(split) == 0:
            source = (os.path.join(dataset.dataset_path, f"{dataset.dataset_name}.{files[i]}.inter") if files
                      else f"eval_args split {dataset.config['eval_args']['split']}")
            raise ValueError(f"dataset '{dataset.dataset_name}' ({dataset.dataset_path}): the {name} split is "
                             f"empty ({source} has no interactions after loading and filtering); every split "
                             "needs at least one interaction")
    uid = dataset.uid_field
    train_users = np.unique(built[0].inter_feat[uid].numpy())
    eval_users = np.unique(np.concatenate([built[1].inter_feat[uid].numpy(), built[2].inter_feat[uid].numpy()]))
    cold = np.setdiff1d(eval_users, train_users, assume_unique=True)
    if cold.size:
        tokens = dataset.field2id_token[uid][cold[:5]]
        getLogger().warning("dataset '%s': %d of the %d users in the valid/test splits have no training "
                            "interaction (e.g. user ids %s); they are ranked by untrained embeddings",
                            dataset.dataset_name, cold.size, eval_users.size, ", ".join(map(str, tokens)))
