"""What every encoder shares: reading the items file, the device, the resumable batch loop with its
on-disk cache, and writing ``FEAT.npy`` + ``FEAT.ids`` + ``FEAT.json``.

Resumable cache: items are encoded in parts (``part_size`` items each) and every finished part is
saved atomically under ``<FEAT>.cache/`` together with the run's settings. A run that is stopped
(Ctrl-C, crash, lost machine) and started again with the same settings skips the parts already
saved; with different settings it refuses to mix features (``--force`` starts afresh). The cache is
removed once the output is written.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from recbole_mm.io import atomic_save_npy, atomic_write_text, write_ids


class EncoderInputError(ValueError):
    """Bad encoder input (missing file/column, duplicate or empty id); the message names it."""


def read_items(path: str, id_column: str) -> pd.DataFrame:
    """CSV / TSV / JSONL items table; every cell read as text, ids checked (non-empty, unique)."""
    if not os.path.isfile(path):
        raise EncoderInputError(f"{path}: file not found")
    if path.endswith((".jsonl", ".json")):
        frame = pd.read_json(path, lines=True, dtype=False)
    else:
        frame = pd.read_csv(path, sep="\t" if path.endswith(".tsv") else ",", dtype=str, keep_default_na=False)
    if id_column not in frame.columns:
        raise EncoderInputError(f"{path}: no item id column '{id_column}' (columns: {list(frame.columns)})")
    ids = frame[id_column].astype(str)
    blank = (ids.str.strip() == "") | frame[id_column].isna()
    if blank.any():
        raise EncoderInputError(f"{path}: row {int(np.flatnonzero(blank.to_numpy())[0]) + 1}: empty item id")
    dup = ids.duplicated()
    if dup.any():
        row = int(np.flatnonzero(dup.to_numpy())[0])
        raise EncoderInputError(f"{path}: row {row + 1}: duplicate item id '{ids.iloc[row]}'")
    return frame


def resolve_device(device: str = "cpu") -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; an explicit CUDA device must exist."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise EncoderInputError(f"--device {device}: CUDA is not available on this machine (use cpu or auto)")
    return device


@dataclass
class EncodingResult:
    ids: list  # item ids with a feature row, in input order
    features: np.ndarray  # (len(ids), d) float32
    failures: dict = field(default_factory=dict)  # item id -> reason (e.g. an image that does not decode)


class FeatureCache:
    """Parts of an interrupted encoding run, keyed by the run's settings."""

    def __init__(self, directory: str, settings: dict, force: bool = False):
        self.directory = directory
        self.settings = json.loads(json.dumps(settings, sort_keys=True, default=str))
        settings_file = os.path.join(directory, "settings.json")
        if force and os.path.isdir(directory):
            shutil.rmtree(directory)
        if os.path.isfile(settings_file):
            with open(settings_file) as fh:
                saved = json.load(fh)
            if saved != self.settings:
                changed = sorted(k for k in set(saved) | set(self.settings) if saved.get(k) != self.settings.get(k))
                raise EncoderInputError(
                    f"{directory}: holds a partial run with other settings ({', '.join(changed)}); "
                    "pass --force to discard it, or rerun with the same settings to resume"
                )
        os.makedirs(directory, exist_ok=True)
        atomic_write_text(settings_file, json.dumps(self.settings, indent=2, sort_keys=True) + "\n")

    def _part_file(self, index: int) -> str:
        return os.path.join(self.directory, f"part-{index:06d}.npz")

    def load(self, index: int):
        path = self._part_file(index)
        if not os.path.isfile(path):
            return None
        with np.load(path, allow_pickle=False) as data:
            return (list(data["ids"].astype(str)), data["features"].astype(np.float32),
                    dict(zip(data["failed_ids"].astype(str), data["failed_reasons"].astype(str))))

    def save(self, index: int, ids, features: np.ndarray, failures: dict) -> None:
        path = self._part_file(index)
        tmp = path + ".tmp.npz"
        np.savez(tmp, ids=np.asarray(ids, dtype=str), features=np.asarray(features, dtype=np.float32),
                 failed_ids=np.asarray(list(failures), dtype=str),
                 failed_reasons=np.asarray(list(failures.values()), dtype=str))
        os.replace(tmp, path)

    def done_parts(self) -> int:
        return len(glob.glob(os.path.join(self.directory, "part-*.npz")))

    def remove(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def run_batches(ids, payloads, encode_batch, *, batch_size: int, cache: FeatureCache = None,
                part_size: int = None, show_progress: bool = True, desc: str = "encoding") -> EncodingResult:
    """Encode ``payloads`` (one per item id) with ``encode_batch(list) -> (features, {position: reason})``.

    ``encode_batch`` returns one row per payload; rows at the failed positions are dropped and their
    reasons kept. Parts of ``part_size`` items are cached, so a rerun resumes after the last one.
    """
    from tqdm.auto import tqdm

    ids = [str(i) for i in ids]
    part_size = part_size or batch_size * 16
    kept_ids, kept_feats, failures = [], [], {}
    n_parts = (len(ids) + part_size - 1) // part_size
    bar = tqdm(total=len(ids), desc=desc, unit="item", disable=not show_progress, file=sys.stderr)
    for part in range(n_parts):
        lo, hi = part * part_size, min((part + 1) * part_size, len(ids))
        cached = cache.load(part) if cache is not None else None
        if cached is None:
            part_ids, part_feats, part_fail = [], [], {}
            for start in range(lo, hi, batch_size):
                stop = min(start + batch_size, hi)
                feats, errors = encode_batch(payloads[start:stop])
                feats = np.asarray(feats, dtype=np.float32)
                for pos in range(stop - start):
                    if pos in errors:
                        part_fail[ids[start + pos]] = str(errors[pos])
                    else:
                        part_ids.append(ids[start + pos])
                        part_feats.append(feats[pos])
                bar.update(stop - start)
            dim = part_feats[0].shape[0] if part_feats else 0
            part_feats = np.stack(part_feats) if part_feats else np.zeros((0, dim), np.float32)
            if cache is not None:
                cache.save(part, part_ids, part_feats, part_fail)
        else:
            part_ids, part_feats, part_fail = cached
            bar.update(hi - lo)
        kept_ids += part_ids
        kept_feats.append(part_feats)
        failures.update(part_fail)
    bar.close()
    dims = {f.shape[1] for f in kept_feats if len(f)}
    if len(dims) > 1:
        raise RuntimeError(f"parts of the cache have different widths {sorted(dims)}; rerun with --force")
    features = np.concatenate([f for f in kept_feats if len(f)]) if dims else np.zeros((0, 0), np.float32)
    return EncodingResult(kept_ids, features, failures)


def check_output(path: str, force: bool) -> None:
    if os.path.exists(path) and not force:
        raise FileExistsError(f"output {path} already exists; pass --force to overwrite it")
    if not path.endswith(".npy"):
        raise EncoderInputError(f"--output {path}: expected a .npy file name")


def cache_dir_for(output: str, cache_dir: str = None) -> str:
    return cache_dir or os.path.splitext(output)[0] + ".cache"


def write_features(output: str, ids, features: np.ndarray, sidecar: dict, failures: dict = None,
                   extra_files: dict = None) -> None:
    """``FEAT.npy`` (rows follow ``ids``), ``FEAT.ids`` (the dataset loader's id file) and ``FEAT.json``.

    The sidecar records what produced the features; failures are listed by item id with their reason.
    ``extra_files`` ({suffix: array dict}) are written as ``FEAT<suffix>.npz`` (e.g. a fitted PCA).
    """
    stem = os.path.splitext(output)[0]
    failures = failures or {}
    meta = dict(sidecar)
    meta.update({
        "dims": int(features.shape[1]) if features.ndim == 2 and len(features) else 0,
        "items": int(len(ids)),
        "failed": len(failures),
        "failures": [{"id": k, "reason": v} for k, v in list(failures.items())[:1000]],
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    })
    for suffix, arrays in (extra_files or {}).items():
        tmp = stem + suffix + ".tmp.npz"
        np.savez(tmp, **arrays)
        os.replace(tmp, stem + suffix + ".npz")
    write_ids(stem + ".ids", np.asarray(ids, dtype=str))
    atomic_write_text(stem + ".json", json.dumps(meta, indent=2, default=str) + "\n")
    atomic_save_npy(output, np.asarray(features, dtype=np.float32))


def report_failures(failures: dict, what: str, limit: int = 20) -> None:
    if not failures:
        return
    print(f"{len(failures):,} item(s) without {what} (the dataset's missing_modality policy fills them):",
          file=sys.stderr)
    for item, reason in list(failures.items())[:limit]:
        print(f"  item {item}: {reason}", file=sys.stderr)
    if len(failures) > limit:
        print(f"  ... {len(failures) - limit} more, all listed in the .json sidecar", file=sys.stderr)
