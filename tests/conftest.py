"""Shared fixtures: tiny MMRec-style datasets built by the tests, and the real data folder."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(os.environ.get("RECBOLE_MM_DATA", REPO.parent / "shared" / "data"))

# Fast, quiet training settings for tests.
FAST = {
    "epochs": 2,
    "show_progress": False,
    "train_batch_size": 64,
    "eval_batch_size": 100000,
    "state": "WARNING",
    "stopping_step": 2,
    "embedding_size": 16,
    "feature_embedding_size": 8,
}


def make_mmrec_folder(root: Path, name: str = "tiny", n_users: int = 40, n_items: int = 60, seed: int = 0,
                      dims=(("text", 8), ("image", 6))) -> Path:
    """An MMRec folder: <name>.inter (userID, itemID, x_label) + <mod>_feat.npy, every item used.

    Feature row r is ``r`` in column 0 and ``-r`` in column 1, so alignment is checkable.
    """
    rng = np.random.default_rng(seed)
    folder = root / name
    folder.mkdir(parents=True)
    rows = []
    for u in range(n_users):
        items = rng.choice(n_items, size=10, replace=False)
        labels = [0] * 7 + [1, 1, 2]
        rows += [(u, int(i), lab) for i, lab in zip(items, labels)]
    # make sure every item occurs in training
    rows += [(int(rng.integers(n_users)), i, 0) for i in range(n_items)]
    frame = pd.DataFrame(rows, columns=["userID", "itemID", "x_label"]).drop_duplicates(["userID", "itemID"])
    frame.to_csv(folder / f"{name}.inter", sep="\t", index=False)
    for mod, dim in dims:
        feat = rng.normal(size=(n_items, dim)).astype(np.float32)
        feat[:, 0] = np.arange(n_items)
        feat[:, 1] = -np.arange(n_items)
        np.save(folder / f"{mod}_feat.npy", feat)
    return folder


@pytest.fixture
def tiny_mmrec(tmp_path) -> Path:
    return make_mmrec_folder(tmp_path / "raw")


@pytest.fixture
def tiny_dataset(tmp_path, tiny_mmrec):
    """``(data_path, name)`` of the tiny dataset converted to RecBole benchmark files."""
    from dataset_converters.mmrec import convert

    out = tmp_path / "data"
    convert(str(tiny_mmrec), str(out))
    return str(out), "tiny"


@pytest.fixture
def run_config(tmp_path):
    """Base config dict for test runs (checkpoints in tmp)."""
    return dict(FAST, checkpoint_dir=str(tmp_path / "saved"))


@pytest.fixture(autouse=True)
def _isolate_cwd(tmp_path, monkeypatch):
    """RecBole writes log/ and saved/ into the working directory: keep them in tmp."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("RECBOLE_MM_CACHE", str(tmp_path / "mm_cache"))


def shared_dataset(name: str) -> Path:
    folder = SHARED_DATA / name
    if not folder.is_dir():
        pytest.skip(f"real dataset {folder} is absent (set RECBOLE_MM_DATA to the folder holding {name}/)")
    return folder
