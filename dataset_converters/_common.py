"""Shared pieces of the converters: input checks, split files, dataset yaml, staged output."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil

import numpy as np
import pandas as pd
import yaml

from recbole_mm.io import atomic_save_npy, atomic_write_text, staged_output_dir, write_ids  # noqa: F401 (re-exported)

SPLITS = ("train", "valid", "test")


class ConversionError(ValueError):
    """Bad converter input; the message names the file, field and row."""


def read_table(path: str, required, sep="\t", dtype=None) -> pd.DataFrame:
    """Read a delimited file and check that the ``required`` columns exist."""
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, sep=sep, dtype=dtype, keep_default_na=False, encoding="utf-8", engine="c")
    except UnicodeDecodeError:
        frame = pd.read_csv(path, sep=sep, dtype=dtype, keep_default_na=False, encoding="latin-1", engine="c")
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise ConversionError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")
    return frame


def check_integer_column(frame: pd.DataFrame, column: str, path: str, allowed=None) -> np.ndarray:
    """Column as int64; a non-integer (or a value outside ``allowed``) is an error naming the row."""
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() | (values % 1 != 0)
    if allowed is not None:
        bad |= ~values.isin(list(allowed))
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        expect = f"one of {sorted(allowed)}" if allowed is not None else "an integer"
        raise ConversionError(
            f"{path}: field '{column}' row {row + 1} (data line {row + 2}): value {frame[column].iloc[row]!r} "
            f"is not {expect}"
        )
    return values.astype(np.int64).to_numpy()


def require_interactions(count: int, path: str, cause: str = None) -> None:
    """Refuse a dataset left with zero interactions, naming the file or the filter (``cause``) that emptied it."""
    if count == 0:
        raise ConversionError(f"{path}: {cause} removed every interaction; nothing is left to convert" if cause
                              else f"{path}: no interactions (the file holds only a header)")


def check_pairs(users, items, labels, source, rows=None, dedupe: bool = False):
    """Refuse repeated (user, item) pairs, or with ``dedupe`` drop them and say how many.

    Two kinds, both fatal to an evaluation: the same interaction twice in one split (duplicate rows)
    and one pair in two splits (a test interaction seen in training). ``source`` is the file named
    in messages, or ``{label: file}`` when each split is its own file (e.g. DiffMM's matrices);
    ``rows`` gives each interaction's row number in its file (default: 1-based position). Dropping
    keeps the pair's first row in the earliest split (train, then valid, then test): a held-out
    interaction already in training is no held-out one. Returns ``(users, items, labels)``.
    """
    users, items, labels = np.asarray(users), np.asarray(items), np.asarray(labels)
    order = np.lexsort((np.arange(len(labels)), labels))  # by split, then row: the kept copy comes first
    pairs = pd.DataFrame({"u": users[order], "i": items[order]})
    repeated = order[pairs.duplicated(keep="first").to_numpy()]
    if repeated.size == 0:
        return users, items, labels
    first_split = pd.Series(labels[order]).groupby([pairs["u"], pairs["i"]]).transform("first").to_numpy()
    first_split = first_split[np.argsort(order)]  # back to input order
    across = labels[repeated] != first_split[repeated]
    counts = f"{int((~across).sum())} duplicate rows, {int(across.sum())} pairs in two splits"
    if dedupe:
        keep = np.ones(len(labels), dtype=bool)
        keep[repeated] = False
        print(f"--dedupe: dropped {repeated.size} repeated (user, item) interactions ({counts})")
        return users[keep], items[keep], labels[keep]
    r = int(repeated[across.argmax()] if across.any() else repeated[0])  # a leak is reported first
    same = np.flatnonzero((users == users[r]) & (items == items[r]))
    first = int(same[labels[same] == first_split[r]][0])
    rows = np.arange(1, len(labels) + 1) if rows is None else np.asarray(rows)

    def at(k):
        split = SPLITS[labels[k]]
        return f"{source[labels[k]]} ({split})" if isinstance(source, dict) else f"row {rows[k]} ({split})"

    prefix = "" if isinstance(source, dict) else f"{source}: "
    what = "is in two splits" if labels[r] != labels[first] else "is repeated"
    raise ConversionError(f"{prefix}(user {users[r]}, item {items[r]}) {what}: {at(first)} and {at(r)} ({counts}); "
                          "remove the repeats or pass --dedupe to drop them")


def check_splits(splits: dict, source: str) -> None:
    """Every split must hold at least one interaction (no empty test or valid set to evaluate on)."""
    empty = [s for s in SPLITS if len(splits[s][0]) == 0]
    if empty:
        sizes = ", ".join(f"{s} {len(splits[s][0])}" for s in SPLITS)
        raise ConversionError(f"{source}: the {' and '.join(empty)} split{'s are' if len(empty) > 1 else ' is'} "
                              f"empty ({sizes} interactions); every split needs at least one interaction")


def check_features(matrix, path: str, ids=None, rows=None) -> np.ndarray:
    """Feature rows as float32; NaN/inf, or a value float32 cannot hold, is an error naming the row
    (``rows``: the row numbers to name, default 0..n-1 as in a .npy; ``ids``: the item of each)."""
    from recbole_mm.data.features import FeatureError, to_float32

    try:
        return to_float32(np.asarray(matrix), f"{path}:", rows=rows, row_ids=ids)
    except FeatureError as exc:
        raise ConversionError(str(exc)) from exc


def split_by_label(users, items, labels) -> dict:
    """``{'train'|'valid'|'test': (users, items)}`` from x_label 0/1/2."""
    return {name: (users[labels == k], items[labels == k]) for k, name in enumerate(SPLITS)}


def random_user_split(users, items, ratios=(0.8, 0.1, 0.1), seed=2020) -> dict:
    """Per-user random split: each user's interactions shuffled (seeded) and cut by ``ratios``."""
    rng = np.random.default_rng(seed)
    return ordered_user_split(users, items, rng.random(len(users)), ratios)


def ordered_user_split(users, items, order, ratios=(0.8, 0.1, 0.1)) -> dict:
    """Per-user split along ``order`` (a random key, or a timestamp: oldest to train).

    A user with n interactions gets ``round(r_valid n)`` validation and ``round(r_test n)`` test
    interactions, at least one training interaction being kept. Vectorised (no per-user loop).
    """
    frame = pd.DataFrame({"u": users, "i": items, "key": order})
    frame = frame.sort_values(["u", "key"], kind="mergesort").reset_index(drop=True)
    rank = frame.groupby("u").cumcount().to_numpy()
    n = frame.groupby("u")["i"].transform("size").to_numpy()
    n_valid = np.round(n * ratios[1]).astype(int)
    n_test = np.round(n * ratios[2]).astype(int)
    excess = np.maximum(n_valid + n_test - (n - 1), 0)  # keep >= 1 training interaction
    cut_test = np.minimum(excess, n_test)
    n_test, n_valid = n_test - cut_test, n_valid - (excess - cut_test)
    n_train = n - n_valid - n_test
    label = np.where(rank < n_train, 0, np.where(rank < n_train + n_valid, 1, 2))
    return split_by_label(frame["u"].to_numpy(), frame["i"].to_numpy(), label)


def k_core(users, items, min_user: int, min_item: int):
    """Iteratively drop users/items with fewer interactions than the thresholds."""
    users, items = np.asarray(users), np.asarray(items)
    while True:
        u_count = pd.Series(users).map(pd.Series(users).value_counts()).to_numpy()
        i_count = pd.Series(items).map(pd.Series(items).value_counts()).to_numpy()
        keep = (u_count >= min_user) & (i_count >= min_item)
        if keep.all():
            return users, items
        users, items = users[keep], items[keep]


def write_split_files(folder: str, name: str, splits: dict) -> None:
    """``<name>.<split>.inter`` atomic files (call inside a staged output folder)."""
    for split in SPLITS:
        users, items = splits[split]
        frame = pd.DataFrame({"user_id:token": users, "item_id:token": items})
        frame.to_csv(os.path.join(folder, f"{name}.{split}.inter"), sep="\t", index=False)


def write_dataset_yaml(folder: str, name: str, modalities: dict, source: str, extra=None) -> None:
    config = {
        "USER_ID_FIELD": "user_id",
        "ITEM_ID_FIELD": "item_id",
        "load_col": {"inter": ["user_id", "item_id"]},
        "benchmark_filename": list(SPLITS),
        "modalities": modalities,
    }
    config.update(extra or {})
    header = f"# {name}: written by {source}; the split is kept in {name}.{{train,valid,test}}.inter\n"
    atomic_write_text(os.path.join(folder, f"{name}.yaml"), header + yaml.safe_dump(config, sort_keys=False))


def output_dir(output_root: str, name: str, force: bool) -> str:
    """``<output_root>/<name>`` (absolute), refused at once when it exists and not ``force``: a converter
    with slow steps before writing calls it first (the staging checks again, under its lock)."""
    out_dir = os.path.join(os.path.abspath(output_root), name)
    if os.path.exists(out_dir) and not force:
        raise FileExistsError(f"output {out_dir} already exists; pass --force to overwrite it")
    return out_dir


class DatasetOutput:
    """The staged dataset folder a converter fills (see :func:`dataset_output`): ``dir`` is where it
    will be, ``stage`` where files go now, ``modalities`` the ``{name: feature file}`` of the yaml."""

    def __init__(self, out_dir: str, stage: str):
        self.dir, self.stage, self.modalities = out_dir, stage, {}

    def save_modality(self, name: str, matrix: np.ndarray, ids) -> None:
        """``<name>_feat.npy`` with its rows' item tokens in ``<name>_feat.ids``."""
        atomic_save_npy(os.path.join(self.stage, f"{name}_feat.npy"), matrix)
        write_ids(os.path.join(self.stage, f"{name}_feat.ids"), ids)
        self.modalities[name] = f"{name}_feat.npy"

    def copy(self, path: str, modality: str = None) -> None:
        """Copy ``path`` into the folder as it is (a feature file when ``modality`` names it)."""
        shutil.copyfile(path, os.path.join(self.stage, os.path.basename(path)))
        if modality is not None:
            self.modalities[modality] = os.path.basename(path)


@contextlib.contextmanager
def dataset_output(output_root: str, name: str, splits: dict, source: str, force: bool = False):
    """Write ``<output_root>/<name>/`` as every converter does: staged (see ``staged_output_dir``), the
    split files first, then what the ``with`` body adds to the yielded :class:`DatasetOutput`, the
    dataset yaml (``source`` in its header) last; published in one rename when the body succeeds."""
    out_dir = output_dir(output_root, name, force)
    with staged_output_dir(out_dir, force=force) as stage:
        out = DatasetOutput(out_dir, stage)
        write_split_files(stage, name, splits)
        yield out
        write_dataset_yaml(stage, name, out.modalities, source=source)


def read_feature_files(folder: str):
    """``(modality, path, matrix)`` of every ``*_feat.npy`` in ``folder``, sorted (modality: the file
    name without ``_feat.npy``), read with the dataset loader's checks: a truncated, text or
    object-dtype file is an error naming it."""
    from recbole_mm.data.features import FeatureError, read_feature_matrix

    for path in sorted(glob.glob(os.path.join(folder, "*_feat.npy"))):
        modality = os.path.basename(path)[: -len("_feat.npy")]
        try:
            matrix = read_feature_matrix(path, modality)
        except FeatureError as exc:
            raise ConversionError(str(exc)) from exc
        yield modality, path, matrix


def encode_text(texts, model: str, batch_size: int, device: str) -> np.ndarray:
    """Sentence-transformers features of ``texts`` (the text modality), checked as a feature file is."""
    from recbole_mm.encoders.text import encode_texts

    features = encode_texts(texts, model=model, batch_size=batch_size, device=device)
    return check_features(features, f"text features from {model}")


def add_output_arguments(parser):
    """The arguments every converter ends with: ``output_root`` and ``--force``. Added last, they still
    read in place: argparse lists (and parses) positionals and options apart, each in added order."""
    parser.add_argument("output_root", help="folder that will hold <name>/ (use it as --data_path)")
    parser.add_argument("--force", action="store_true", help="replace an existing <output_root>/<name>/")
    return parser


def summary(name: str, splits: dict) -> str:
    users = np.unique(np.concatenate([splits[s][0] for s in SPLITS]))
    items = np.unique(np.concatenate([splits[s][1] for s in SPLITS]))
    sizes = " / ".join(f"{s} {len(splits[s][0]):,}" for s in SPLITS)
    return f"{name}: {len(users):,} users x {len(items):,} items; {sizes} interactions"


def converter_parser(module: str, doc: str):
    """The converters' argument parser: first docstring paragraph as description, the rest
    (formats, examples) as the ``--help`` epilog, kept as written."""
    import argparse

    description, _, epilog = doc.partition("\n\n")
    return argparse.ArgumentParser(prog=f"python -m {module}", description=description, epilog=epilog or None,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def report(name: str, splits: dict, out_dir: str, modalities=None, also: str = "") -> None:
    """What every converter prints at the end: the split summary, then the modalities written
    (when the converter tracks them), anything converter-specific, and the output folder."""
    print(summary(name, splits))
    parts = [] if modalities is None else [f"modalities: {', '.join(modalities) or 'none'}"]
    print("; ".join(parts + ([also] if also else []) + [f"written to {out_dir}"]))


def run_cli(main, argv=None) -> int:
    """Run a converter's ``main``; bad input ends with a one-line error and exit status 2."""
    from recbole_mm.cli import run_main

    return run_main(main, argv)


__all__ = [
    "ConversionError",
    "DatasetOutput",
    "SPLITS",
    "add_output_arguments",
    "check_features",
    "check_integer_column",
    "check_pairs",
    "check_splits",
    "converter_parser",
    "dataset_output",
    "encode_text",
    "k_core",
    "ordered_user_split",
    "output_dir",
    "random_user_split",
    "read_feature_files",
    "read_table",
    "report",
    "require_interactions",
    "run_cli",
    "split_by_label",
    "staged_output_dir",
    "summary",
    "write_dataset_yaml",
    "write_split_files",
]
