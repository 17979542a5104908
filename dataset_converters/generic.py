"""Any interactions table + feature files keyed by item id -> a recbole-mm dataset.

    python -m dataset_converters.generic INTERACTIONS OUTPUT_ROOT --name NAME
        [--user-column user] [--item-column item] [--rating-column rating --min-rating 4]
        [--split-column split] [--k-core 0] [--seed 2020]
        [--feature image=img.npy --feature text=text.parquet ...] [--dedupe] [--force]

INTERACTIONS: CSV, TSV or Parquet with a user and an item column and optionally a rating, a
timestamp and a split column (values train/valid/test or 0/1/2). With a split column the split is
kept; otherwise interactions (after ``--min-rating`` and ``--k-core``) are split per user 8:1:1,
at random with ``--seed`` or by ``--timestamp-column`` order with ``--split-order time``. A repeated
(user, item) pair (or, with a split column, one pair in two splits) is refused; ``--dedupe`` keeps
its first row (the earliest with a timestamp) and drops the others. Every split must end non-empty.

``--feature NAME=PATH`` (repeatable) adds a modality:
* ``.npy``: rows keyed by ``<stem>.ids`` beside it (one item id per line), or, without one, row r
  is item id r (integer ids);
* ``.csv`` / ``.tsv`` / ``.parquet``: an item id column (``--feature-id-column``, default: the
  interactions' item column) and numeric columns (the vector).
Feature rows of items that are not in the interactions are dropped; items with no row are left to
the dataset's missing-modality policy. A feature with no row for any item (0% coverage), a NaN/inf
or non-numeric value, or a value float32 cannot hold is an error naming the file and row.
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from dataset_converters._common import (
    SPLITS,
    ConversionError,
    check_features,
    check_pairs,
    add_output_arguments,
    check_splits,
    converter_parser,
    dataset_output,
    k_core,
    ordered_user_split,
    random_user_split,
    report,
    require_interactions,
    run_cli,
    split_by_label,
)
from recbole_mm.data.features import read_feature_matrix, read_id_file

_SPLIT_VALUES = {"train": 0, "valid": 1, "validation": 1, "val": 1, "test": 2, "0": 0, "1": 1, "2": 2}


def read_any(path: str) -> pd.DataFrame:
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: file not found")
    if path.endswith(".parquet"):
        try:
            return pd.read_parquet(path)
        except ImportError as exc:
            raise ConversionError(f"{path}: reading Parquet needs pyarrow (pip install 'pyarrow<21')") from exc
    return pd.read_csv(path, sep="\t" if path.endswith(".tsv") else ",", dtype=str, keep_default_na=False)


def _require(frame, columns, path):
    missing = [c for c in columns if c and c not in frame.columns]
    if missing:
        raise ConversionError(f"{path}: missing column(s) {missing}; found {list(frame.columns)}")


def load_interactions(args) -> dict:
    path = args.interactions
    frame = read_any(path)
    _require(frame, [args.user_column, args.item_column, args.rating_column, args.split_column,
                     args.timestamp_column], path)
    require_interactions(len(frame), path)
    for col in (args.user_column, args.item_column):
        blank = frame[col].astype(str).str.strip() == ""
        if blank.any():
            row = int(np.flatnonzero(blank.to_numpy())[0])
            raise ConversionError(f"{path}: field '{col}' row {row + 1}: empty id")
    rows = np.arange(1, len(frame) + 1)  # data row numbers, kept through the filters for messages
    if args.rating_column:
        rating = pd.to_numeric(frame[args.rating_column], errors="coerce")
        if rating.isna().any():
            row = int(np.flatnonzero(rating.isna().to_numpy())[0])
            raise ConversionError(f"{path}: field '{args.rating_column}' row {row + 1}: value "
                                  f"{frame[args.rating_column].iloc[row]!r} is not a number")
        if args.min_rating is not None:
            kept = (rating >= args.min_rating).to_numpy()
            frame, rows = frame[kept], rows[kept]
            require_interactions(len(frame), path, f"--min-rating {args.min_rating:g}")
    users = frame[args.user_column].astype(str).to_numpy()
    items = frame[args.item_column].astype(str).to_numpy()
    if args.split_column:
        labels = frame[args.split_column].astype(str).str.strip().str.lower().map(_SPLIT_VALUES)
        if labels.isna().any():
            row = int(np.flatnonzero(labels.isna().to_numpy())[0])
            raise ConversionError(f"{path}: field '{args.split_column}' row {rows[row]}: value "
                                  f"{frame[args.split_column].iloc[row]!r} is not train/valid/test or 0/1/2")
        users, items, labels = check_pairs(users, items, labels.astype(int).to_numpy(), path, rows, args.dedupe)
        print(f"keeping the split of column '{args.split_column}'")
        return split_by_label(users, items, labels)
    pairs = pd.DataFrame({"u": users, "i": items, "row": rows})
    if args.timestamp_column:
        pairs["t"] = pd.to_numeric(frame[args.timestamp_column], errors="coerce").to_numpy()
        pairs = pairs.sort_values("t", kind="mergesort")  # --dedupe keeps a pair's earliest row
    check_pairs(pairs["u"].to_numpy(), pairs["i"].to_numpy(), np.zeros(len(pairs), dtype=int), path,
                pairs["row"].to_numpy(), args.dedupe)
    pairs = pairs.drop_duplicates(["u", "i"])  # what --dedupe keeps; without it check_pairs refused repeats
    if args.k_core > 0:
        u, i = k_core(pairs["u"].to_numpy(), pairs["i"].to_numpy(), args.k_core, args.k_core)
        require_interactions(len(u), path, f"--k-core {args.k_core}")
        pairs = pd.DataFrame({"u": u, "i": i}).merge(pairs, on=["u", "i"], how="left")
    if args.split_order == "time":
        if not args.timestamp_column:
            raise ConversionError("--split-order time needs --timestamp-column")
        return ordered_user_split(pairs["u"].to_numpy(), pairs["i"].to_numpy(), pairs["t"].to_numpy())
    print(f"random per-user 8:1:1 split (seed {args.seed}) of {len(pairs):,} interactions")
    return random_user_split(pairs["u"].to_numpy(), pairs["i"].to_numpy(), seed=args.seed)


def load_feature(spec: str, item_column: str, id_column: str = None):
    """``(name, path, ids, float32 matrix, how rows are keyed)`` of one ``NAME=PATH`` feature argument;
    NaN/inf, non-numeric values and float32 overflow are errors naming the row."""
    if "=" not in spec:
        raise ConversionError(f"--feature {spec}: expected NAME=PATH")
    name, path = spec.split("=", 1)
    if path.endswith(".npy"):
        # the same checks as the dataset loader (2-D numeric array; non-blank, unique ids)
        matrix = read_feature_matrix(path, name)
        ids_path = os.path.splitext(path)[0] + ".ids"
        if os.path.isfile(ids_path):
            ids, keyed = read_id_file(ids_path).astype(str), f"id file {ids_path}"
            if len(ids) != len(matrix):
                raise ConversionError(f"{ids_path}: {len(ids)} ids for the {len(matrix)} rows of {path}")
        else:
            ids, keyed = np.arange(len(matrix)).astype(str), f"row number (no {os.path.basename(ids_path)})"
        return name, path, ids, check_features(matrix, path, ids), keyed
    frame = read_any(path)
    id_col = id_column or item_column
    _require(frame, [id_col], path)
    values = frame.drop(columns=[id_col]).apply(pd.to_numeric, errors="coerce")
    bad = values.isna().any(axis=1)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        col = values.columns[values.iloc[row].isna().to_numpy()][0]
        raise ConversionError(f"{path}: field '{col}' row {row + 1} (item {frame[id_col].iloc[row]}): not a number")
    ids = frame[id_col].astype(str).to_numpy()
    matrix = check_features(values.to_numpy(np.float64), path, ids, rows=np.arange(1, len(ids) + 1))
    return name, path, ids, matrix, f"column '{id_col}'"


def build_parser():
    p = converter_parser("dataset_converters.generic", __doc__)
    p.add_argument("interactions", help="CSV/TSV/Parquet of interactions")
    p.add_argument("--name", required=True)
    p.add_argument("--user-column", default="user")
    p.add_argument("--item-column", default="item")
    p.add_argument("--rating-column", default=None)
    p.add_argument("--min-rating", type=float, default=None, help="keep interactions rated at least this")
    p.add_argument("--timestamp-column", default=None)
    p.add_argument("--split-column", default=None, help="train/valid/test or 0/1/2: keep this split")
    p.add_argument("--split-order", choices=["random", "time"], default="random")
    p.add_argument("--k-core", type=int, default=0, help="min interactions per user and item (default 0: none)")
    p.add_argument("--seed", type=int, default=2020)
    p.add_argument("--feature", action="append", default=[], metavar="NAME=PATH", help="a modality (repeatable)")
    p.add_argument("--feature-id-column", default=None, help="item id column of CSV/Parquet feature files")
    p.add_argument("--dedupe", action="store_true", help="drop repeated (user, item) rows and pairs in two "
                   "splits, keeping the first (earliest with --timestamp-column); default: refuse them")
    return add_output_arguments(p)


def convert(args) -> str:
    splits = load_interactions(args)
    check_splits(splits, args.interactions)
    items = set(np.concatenate([splits[s][1] for s in SPLITS]).astype(str))
    features = [load_feature(spec, args.item_column, args.feature_id_column) for spec in args.feature]
    kept = []  # checked before anything is written
    for name, path, ids, matrix, keyed in features:
        dup = pd.Index(ids).duplicated()
        if dup.any():
            raise ConversionError(f"--feature {name}: duplicate item id '{ids[int(np.flatnonzero(dup)[0])]}'")
        keep = np.isin(ids, list(items))
        if not keep.any():  # 0% coverage: the loader would "fill" every item from nothing
            raise ConversionError(
                f"--feature {name}={path}: 0% coverage: none of its {len(ids)} rows (keyed by {keyed}; e.g. "
                f"{', '.join(ids[:3])}) is an item of {args.interactions} (e.g. {', '.join(sorted(items)[:3])})")
        kept.append((name, ids, matrix, keep))
    with dataset_output(args.output_root, args.name, splits, f"dataset_converters.generic from {args.interactions}",
                        args.force) as out:
        for name, ids, matrix, keep in kept:
            out.save_modality(name, matrix[keep], ids[keep])
            print(f"modality {name}: {int(keep.sum()):,} of {len(items):,} items have a row "
                  f"({int((~keep).sum()):,} rows for unknown items dropped)")
    report(args.name, splits, out.dir)
    return out.dir


def main(argv=None):
    convert(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
