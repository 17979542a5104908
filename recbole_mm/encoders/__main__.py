"""Raw content -> feature file.

    python -m recbole_mm.encoders text --items FILE --output FEAT.npy [--model NAME_OR_PATH]
        [--id-column itemID] [--fields title description ...] [--template "{title}. {brand}"]
        [--batch-size 64] [--device cpu] [--force]

FILE is a CSV, TSV or JSONL with an item id column and the content columns. Writes FEAT.npy (one
row per item that has content), FEAT.ids (the item id of each row: the dataset loader's id file)
and FEAT.json (model, dims, item count, date). Items whose text is empty get no row: the
dataset's ``missing_modality`` policy decides what they get. Output is written atomically and an
existing FEAT.npy is only replaced with ``--force``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from datetime import datetime, timezone

import numpy as np
import pandas as pd

from recbole_mm.encoders.text import DEFAULT_TEXT_MODEL, encode_texts, resolve_text_model
from recbole_mm.io import atomic_save_npy, atomic_write_text, write_ids


class EncoderInputError(ValueError):
    pass


def read_items(path: str, id_column: str) -> pd.DataFrame:
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


def item_texts(frame: pd.DataFrame, fields, template, path: str) -> pd.Series:
    """One text per item: ``template`` filled from the row, or the non-empty ``fields`` joined by '. '."""
    if template:
        missing = [f for f in _template_fields(template) if f not in frame.columns]
        if missing:
            raise EncoderInputError(f"{path}: template field(s) {missing} are not columns ({list(frame.columns)})")
        rows = frame.fillna("").astype(str).to_dict("records")
        return pd.Series([template.format(**r).strip() for r in rows], index=frame.index)
    missing = [f for f in fields if f not in frame.columns]
    if missing:
        raise EncoderInputError(f"{path}: field(s) {missing} are not columns ({list(frame.columns)})")
    parts = frame[fields].fillna("").astype(str).apply(lambda col: col.str.strip())
    return parts.apply(lambda row: ". ".join(v for v in row if v), axis=1)


def _template_fields(template: str):
    import string

    return [name for _, name, _, _ in string.Formatter().parse(template) if name]


def encode_text_file(args) -> str:
    if os.path.exists(args.output) and not args.force:
        raise FileExistsError(f"output {args.output} already exists; pass --force to overwrite it")
    frame = read_items(args.items, args.id_column)
    texts = item_texts(frame, args.fields, args.template, args.items)
    has_text = (texts.str.strip() != "").to_numpy()
    ids = frame[args.id_column].astype(str).to_numpy()
    print(f"{int(has_text.sum()):,} of {len(frame):,} items have text; encoding with {args.model}", file=sys.stderr)
    feats = encode_texts(texts[has_text].tolist(), model=args.model, batch_size=args.batch_size, device=args.device)
    stem = os.path.splitext(args.output)[0]
    write_ids(stem + ".ids", ids[has_text])
    atomic_write_text(stem + ".json", json.dumps({
        "encoder": "text", "model": args.model, "resolved_model": resolve_text_model(args.model),
        "fields": args.fields, "template": args.template, "dims": int(feats.shape[1]) if len(feats) else 0,
        "items": int(len(feats)), "items_without_text": int((~has_text).sum()), "source": os.path.abspath(args.items),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }, indent=2) + "\n")
    atomic_save_npy(args.output, feats)
    print(f"wrote {args.output} {feats.shape} + {stem}.ids + {stem}.json", file=sys.stderr)
    return args.output


def build_parser():
    parser = argparse.ArgumentParser(prog="python -m recbole_mm.encoders", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="encoder", required=True)
    text = sub.add_parser("text", help="sentence-transformers text features")
    text.add_argument("--items", required=True, help="CSV/TSV/JSONL with an item id column and text columns")
    text.add_argument("--output", required=True, help="FEAT.npy to write (plus FEAT.ids and FEAT.json)")
    text.add_argument("--model", default=DEFAULT_TEXT_MODEL, help="local dir, packaged name or hub name")
    text.add_argument("--id-column", default="itemID", help="item id column (default itemID)")
    text.add_argument("--fields", nargs="+", default=["title"], help="text columns joined by '. ' (default title)")
    text.add_argument("--template", default=None, help='python format string over columns, e.g. "{title}. {brand}"')
    text.add_argument("--batch-size", type=int, default=64)
    text.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1 ...")
    text.add_argument("--force", action="store_true", help="overwrite an existing output")
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        encode_text_file(args)
    except (EncoderInputError, FileExistsError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
