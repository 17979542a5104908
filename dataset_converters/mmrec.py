"""MMRec folder -> RecBole benchmark files + feature files + dataset yaml.

    python -m dataset_converters.mmrec <input_dir> <output_root> [--name NAME] [--dedupe] [--force]

Reads ``<input_dir>/<name>.inter`` (tab-separated, columns userID, itemID, x_label with
0/1/2 = train/valid/test) and every ``*_feat.npy`` beside it (one modality each, named by the
file stem without ``_feat``; row r = itemID r, MMRec's convention). Writes
``<output_root>/<name>/`` keeping the exact split. The inputs are only read. A repeated
(user, item) row, or one pair in two splits, is refused (``--dedupe``: the later copies are dropped).
"""

from __future__ import annotations

import argparse
import os

import numpy as np

from dataset_converters._common import (
    ConversionError,
    add_output_arguments,
    check_features,
    check_integer_column,
    check_pairs,
    check_splits,
    dataset_output,
    read_feature_files,
    read_table,
    report,
    require_interactions,
    run_cli,
    split_by_label,
)


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m dataset_converters.mmrec", description=__doc__.split("\n\n")[0])
    parser.add_argument("input_dir", help="MMRec dataset folder with <name>.inter and *_feat.npy")
    parser.add_argument("--name", default=None, help="dataset name (default: the input folder's name)")
    parser.add_argument("--dedupe", action="store_true",
                        help="drop repeated (user, item) rows and pairs in two splits (default: refuse them)")
    return add_output_arguments(parser)


def convert(input_dir: str, output_root: str, name: str = None, force: bool = False, dedupe: bool = False) -> str:
    input_dir = os.path.abspath(input_dir)
    name = name or os.path.basename(input_dir.rstrip(os.sep))
    inter_path = os.path.join(input_dir, f"{name}.inter")
    frame = read_table(inter_path, required=["userID", "itemID", "x_label"])
    require_interactions(len(frame), inter_path)
    users = check_integer_column(frame, "userID", inter_path)
    items = check_integer_column(frame, "itemID", inter_path)
    labels = check_integer_column(frame, "x_label", inter_path, allowed={0, 1, 2})
    if (users < 0).any() or (items < 0).any():
        column = "userID" if (users < 0).any() else "itemID"
        row = int(np.flatnonzero((users if column == "userID" else items) < 0)[0])
        raise ConversionError(f"{inter_path}: field '{column}' row {row + 1}: negative id")
    users, items, labels = check_pairs(users, items, labels, inter_path, dedupe=dedupe)
    splits = split_by_label(users, items, labels)
    check_splits(splits, inter_path)

    features = {}
    for modality, path, matrix in read_feature_files(input_dir):
        if matrix.shape[0] <= items.max():
            raise ConversionError(
                f"{path}: wrong row count: {matrix.shape[0]} rows but {inter_path} has itemID {items.max()} "
                "(MMRec rule: row r = itemID r)"
            )
        check_features(matrix, path)  # NaN/inf or float32 overflow: refused now, not in training
        features[modality] = path

    with dataset_output(output_root, name, splits, f"dataset_converters.mmrec from {input_dir}", force) as out:
        for modality, path in features.items():
            out.copy(path, modality)
        for mapping in ("i_id_mapping.tsv", "u_id_mapping.tsv", "i_id_mapping.csv", "u_id_mapping.csv"):
            if os.path.isfile(os.path.join(input_dir, mapping)):
                out.copy(os.path.join(input_dir, mapping))
    report(name, splits, out.dir, out.modalities)
    return out.dir


def main(argv=None):
    args = build_parser().parse_args(argv)
    convert(args.input_dir, args.output_root, name=args.name, force=args.force, dedupe=args.dedupe)


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
