"""Where recbole_mm keeps what it builds: ``mm_cache_dir``, else ``$RECBOLE_MM_CACHE``, else
``~/.cache/recbole_mm`` (built features, item-item graphs, stage-1 outputs of read-only datasets)."""

from __future__ import annotations

import os


def cache_root(config=None) -> str:
    configured = config["mm_cache_dir"] if config is not None else None
    return os.path.abspath(
        configured
        or os.environ.get("RECBOLE_MM_CACHE")
        or os.path.join(os.path.expanduser("~"), ".cache", "recbole_mm")
    )


def graph_cache_dir(config):
    """Where item-item graphs are cached (``graph_cache_dir``, else ``<cache root>/graphs``); None: off."""
    if not config["graph_cache"]:
        return None
    return config["graph_cache_dir"] or os.path.join(cache_root(config), "graphs")
