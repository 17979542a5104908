"""DiffMM / MMSSL / LightGT-style pickled matrices -> a recbole-mm dataset, keeping their split.

    python -m dataset_converters.diffmm INPUT_DIR OUTPUT_ROOT --name NAME [--dedupe] [--force]

INPUT_DIR holds ``trnMat.pkl`` and ``tstMat.pkl`` (and optionally ``valMat.pkl``): pickled SciPy
sparse users x items matrices (non-zeros = interactions) as the DiffMM and MMSSL repositories ship
them, plus feature files ``*_feat.npy`` (``image_feat.npy``, ``text_feat.npy``, ``audio_feat.npy``
...) whose row r is item r. Without ``valMat.pkl`` RecBole still needs a validation split, so
``--valid-from-train RATIO`` (default 0.1) moves that share of each user's training
interactions (seeded) to validation; ``--valid-from-test`` uses the test matrix for both instead
(the protocol of the DiffMM code, which has no validation set). An interaction stored twice, or
in two matrices (e.g. train and test), is refused; ``--dedupe`` keeps it in the earliest only.
Feature files are checked in full (readable, numeric, finite, float32-representable) and copied.
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from dataset_converters._common import (
    SPLITS,
    ConversionError,
    add_output_arguments,
    check_features,
    check_pairs,
    check_splits,
    converter_parser,
    dataset_output,
    random_user_split,
    read_feature_files,
    report,
    run_cli,
    split_by_label,
)


def read_matrix(path: str):
    """A pickled SciPy sparse matrix as COO; anything else is an error naming the file."""
    import scipy.sparse as sp

    if not os.path.isfile(path):
        raise ConversionError(f"{path}: file not found")
    with open(path, "rb") as fh:
        try:
            matrix = pickle.load(fh)
        except Exception as exc:
            raise ConversionError(f"{path}: cannot be unpickled ({exc})") from exc
    if not sp.issparse(matrix):
        raise ConversionError(f"{path}: expected a scipy.sparse matrix, got {type(matrix).__name__}")
    return sp.coo_matrix(matrix)


def build_parser():
    p = converter_parser("dataset_converters.diffmm", __doc__)
    p.add_argument("input_dir", help="folder with trnMat.pkl, tstMat.pkl [valMat.pkl] and *_feat.npy")
    p.add_argument("--name", required=True)
    p.add_argument("--valid-from-train", type=float, default=0.1,
                   help="without valMat.pkl: share of each user's training interactions moved to valid")
    p.add_argument("--valid-from-test", action="store_true",
                   help="without valMat.pkl: validate on the test matrix (DiffMM's own protocol)")
    p.add_argument("--seed", type=int, default=2020, help="seed of --valid-from-train")
    p.add_argument("--dedupe", action="store_true", help="drop an interaction stored twice or in two matrices "
                   "(kept in the earliest: train, valid, test); default: refuse it")
    return add_output_arguments(p)


def convert(args) -> str:
    mats, files = {}, {}
    for label, (split, fname) in enumerate((("train", "trnMat.pkl"), ("valid", "valMat.pkl"), ("test", "tstMat.pkl"))):
        path = os.path.join(args.input_dir, fname)
        if split == "valid" and not os.path.isfile(path):
            continue
        mats[split], files[label] = read_matrix(path), path
    shapes = {s: m.shape for s, m in mats.items()}
    if len(set(shapes.values())) != 1:
        raise ConversionError(f"{args.input_dir}: matrices disagree on users x items: {shapes}")
    n_items = mats["train"].shape[1]
    # one (user, item) twice, or in two matrices (a test interaction seen in training): refused or --dedupe'd
    labels = np.concatenate([np.full(m.nnz, SPLITS.index(s)) for s, m in mats.items()])
    users, items, labels = check_pairs(np.concatenate([m.row for m in mats.values()]).astype(np.int64),
                                       np.concatenate([m.col for m in mats.values()]).astype(np.int64),
                                       labels, files, dedupe=args.dedupe)
    splits = split_by_label(users, items, labels)
    if "valid" not in mats:
        if args.valid_from_test:
            splits["valid"] = splits["test"]
        else:
            u, i = splits["train"]
            inner = random_user_split(u, i, ratios=(1 - args.valid_from_train, args.valid_from_train, 0.0),
                                      seed=args.seed)
            splits["train"], splits["valid"] = inner["train"], inner["valid"]
    check_splits(splits, args.input_dir)
    features = {}
    # a truncated, text or object-dtype file, NaN/inf or float32 overflow: named now, not in training
    for name, path, matrix in read_feature_files(args.input_dir):
        if matrix.shape[0] != n_items:
            raise ConversionError(f"{path}: expected {n_items} rows (one per item of the matrices), got {matrix.shape}")
        check_features(matrix, path)
        features[name] = path
    with dataset_output(args.output_root, args.name, splits, f"dataset_converters.diffmm from {args.input_dir}",
                        args.force) as out:
        for name, path in features.items():
            out.copy(path, name)
    report(args.name, splits, out.dir, out.modalities)
    return out.dir


def main(argv=None):
    convert(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
