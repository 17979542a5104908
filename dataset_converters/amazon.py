"""Amazon product data (McAuley et al.; 2014 and 2018 releases) -> a recbole-mm dataset.

    python -m dataset_converters.amazon REVIEWS META OUTPUT_ROOT --name baby [--k-core 5] [--seed 2020]
        [--split-from MMREC_DIR [--dedupe]] [--text-model all-MiniLM-L6-v2 | --no-text] [--force]

REVIEWS: ``reviews_<Cat>_5.json(.gz)`` (2014) or ``<Cat>_5.json(.gz)`` / ``<Cat>.json(.gz)``
(2018), one review per line with ``reviewerID``, ``asin``, ``unixReviewTime`` (``overall``).
META: ``meta_<Cat>.json(.gz)``; 2014 lines are Python dict literals, 2018 lines JSON. Both are
read the same way.

Steps: reviews -> (user, item) interactions (duplicates dropped, earliest kept), ``--k-core``
filtering of users and items, id maps like MMRec's (sorted asin -> itemID, sorted reviewerID ->
userID, written as ``i_id_mapping.csv`` / ``u_id_mapping.csv``), a per-user 8:1:1 split (random
with ``--seed``, or by time with ``--split-order time``) -- or the split of an existing MMRec
folder (``--split-from``: its ``<name>.inter`` + id mappings) -- then the items file
``<name>.items.jsonl`` (itemID, asin, title, brand, categories, description, price, image URL and
the assembled ``text``) for the encoders, and the text modality (MiniLM over ``text``). Items
without metadata text get no row and are filled by the dataset's missing-modality policy.
"""

from __future__ import annotations

import ast
import gzip
import json
import os
import zlib

import numpy as np
import pandas as pd

from dataset_converters._common import (
    ConversionError,
    check_pairs,
    add_output_arguments,
    check_splits,
    converter_parser,
    dataset_output,
    encode_text,
    k_core,
    ordered_user_split,
    output_dir,
    random_user_split,
    read_table,
    report,
    require_interactions,
    run_cli,
    split_by_label,
)
from recbole_mm.io import atomic_write_text

TEXT_FIELDS = ("title", "brand", "categories", "description")


def _open(path: str):
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: file not found")
    return gzip.open(path, "rt", encoding="utf-8") if path.endswith(".gz") else open(path, encoding="utf-8")


def iter_records(path: str):
    """``(line_number, dict)`` of a JSON-lines file whose lines may also be Python literals (2014 meta).
    A non-gzip, truncated or corrupt ``.gz`` (or undecodable text) is an error naming the file."""
    number = 0
    try:
        with _open(path) as fh:
            for number, line in enumerate(fh, start=1):
                line = line.strip()
                if not line:
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    try:
                        record = ast.literal_eval(line)
                    except (ValueError, SyntaxError) as exc:
                        raise ConversionError(f"{path}: line {number}: neither JSON nor a Python dict ({exc})") from exc
                if not isinstance(record, dict):
                    raise ConversionError(f"{path}: line {number}: expected an object, got {type(record).__name__}")
                yield number, record
    except gzip.BadGzipFile as exc:
        raise ConversionError(f"{path}: not a gzip file ({exc}); decompress it or drop the .gz suffix") from exc
    except EOFError as exc:
        raise ConversionError(f"{path}: truncated: the compressed data ends after line {number} ({exc})") from exc
    except (OSError, zlib.error) as exc:
        raise ConversionError(f"{path}: corrupt compressed data after line {number} ({exc})") from exc
    except UnicodeDecodeError as exc:
        raise ConversionError(f"{path}: line {number + 1}: not UTF-8 text ({exc})") from exc


def read_reviews(path: str) -> pd.DataFrame:
    users, items, times = [], [], []
    for number, rec in iter_records(path):
        missing = [k for k in ("reviewerID", "asin") if not rec.get(k)]
        if missing:
            raise ConversionError(f"{path}: line {number}: missing field(s) {missing}")
        users.append(str(rec["reviewerID"]))
        items.append(str(rec["asin"]))
        t = rec.get("unixReviewTime", 0)
        try:
            times.append(int(t))
        except (TypeError, ValueError):
            raise ConversionError(f"{path}: line {number}: field 'unixReviewTime' value {t!r} is not an integer")
    frame = pd.DataFrame({"user": users, "item": items, "time": times})
    require_interactions(len(frame), path)
    # one interaction per (user, item): the earliest review
    return frame.sort_values("time", kind="mergesort").drop_duplicates(["user", "item"]).reset_index(drop=True)


def _flatten(value) -> list:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        out = []
        for v in value:
            out += _flatten(v)
        return out
    return [str(value)]


def read_meta(path: str, wanted) -> pd.DataFrame:
    """Metadata of the ``wanted`` asins: title, brand, categories, description, price, image URL."""
    wanted = set(wanted)
    rows = []
    for _, rec in iter_records(path):
        asin = str(rec.get("asin", ""))
        if asin not in wanted:
            continue
        cats = rec.get("categories", rec.get("category"))  # 2014: list of lists; 2018: list
        cats = list(dict.fromkeys(c.strip() for c in _flatten(cats) if c.strip()))
        desc = " ".join(d.strip() for d in _flatten(rec.get("description")) if d.strip())
        image = rec.get("imUrl") or (_flatten(rec.get("imageURLHighRes")) or _flatten(rec.get("imageURL")) or [""])[0]
        rows.append({"asin": asin, "title": str(rec.get("title", "") or "").strip(),
                     "brand": str(rec.get("brand", "") or "").strip(), "categories": ", ".join(cats),
                     "description": desc, "price": str(rec.get("price", "") or "").strip(), "image_url": image})
    return pd.DataFrame(rows, columns=["asin", "title", "brand", "categories", "description", "price", "image_url"])


def item_text(meta: pd.DataFrame, max_chars: int = 2000) -> pd.Series:
    """``"title. Brand: b. Categories: c. description"`` from the non-empty fields (description cut)."""
    parts = [meta["title"],
             np.where(meta["brand"] != "", "Brand: " + meta["brand"], ""),
             np.where(meta["categories"] != "", "Categories: " + meta["categories"], ""),
             meta["description"].str.slice(0, max_chars)]
    frame = pd.DataFrame({i: p for i, p in enumerate(parts)}).fillna("").astype(str)
    return frame.apply(lambda row: ". ".join(v.strip() for v in row if v.strip()), axis=1)


def build_parser():
    p = converter_parser("dataset_converters.amazon", __doc__)
    p.add_argument("reviews", help="reviews_<Cat>_5.json(.gz) (2014) or <Cat>_5.json(.gz) (2018)")
    p.add_argument("meta", help="meta_<Cat>.json(.gz)")
    p.add_argument("--name", required=True, help="dataset name, e.g. baby")
    p.add_argument("--k-core", type=int, default=5, help="min interactions per user and per item (default 5)")
    p.add_argument("--seed", type=int, default=2020, help="seed of the random per-user 8:1:1 split")
    p.add_argument("--split-order", choices=["random", "time"], default="random",
                   help="per-user 8:1:1 by random order (default) or by review time (oldest -> train)")
    p.add_argument("--split-from", default=None, help="an MMRec folder (<name>.inter with x_label + "
                   "i_id_mapping.csv + u_id_mapping.csv): keep its ids and split instead")
    p.add_argument("--text-model", default="all-MiniLM-L6-v2", help="sentence-transformers model for the text modality")
    p.add_argument("--no-text", action="store_true", help="write the items file only; encode later")
    p.add_argument("--batch-size", type=int, default=64, help="text encoder batch size")
    p.add_argument("--device", default="cpu", help="text encoder device")
    p.add_argument("--dedupe", action="store_true", help="--split-from: drop repeated (user, item) rows and pairs "
                   "in two splits (default: refuse them)")
    return add_output_arguments(p)


def interactions(args):
    """``(splits, user map, item map)``; maps are DataFrames (raw id, integer id)."""
    reviews = read_reviews(args.reviews)
    if args.split_from:
        inter_path = os.path.join(args.split_from, f"{args.name}.inter")
        inter = read_table(inter_path, required=["userID", "itemID", "x_label"])
        require_interactions(len(inter), inter_path)
        umap = read_table(os.path.join(args.split_from, "u_id_mapping.csv"), required=["user_id", "userID"], dtype=str)
        imap = read_table(os.path.join(args.split_from, "i_id_mapping.csv"), required=["asin", "itemID"], dtype=str)
        imap["itemID"], umap["userID"] = imap["itemID"].astype(int), umap["userID"].astype(int)
        u_of = dict(zip(umap["userID"], umap["user_id"]))
        i_of = dict(zip(imap["itemID"], imap["asin"]))
        known = set(zip(reviews["user"], reviews["item"]))
        pairs = list(zip(inter["userID"].astype(int).map(u_of), inter["itemID"].astype(int).map(i_of)))
        absent = [r for r, pair in enumerate(pairs) if pair not in known]
        if absent:
            r = absent[0]
            raise ConversionError(f"{inter_path}: row {r + 1}: (userID {inter['userID'].iloc[r]}, itemID "
                                  f"{inter['itemID'].iloc[r]}) -> {pairs[r]} has no review in {args.reviews}")
        users, items, labels = check_pairs(inter["userID"].astype(int).to_numpy(), inter["itemID"].astype(int).to_numpy(),
                                           inter["x_label"].astype(int).to_numpy(), inter_path, dedupe=args.dedupe)
        print(f"keeping the ids and split of {inter_path}")
        splits = split_by_label(users, items, labels)
        return splits, umap.rename(columns={"user_id": "raw"}), imap.rename(columns={"asin": "raw"})
    users, items = k_core(reviews["user"].to_numpy(), reviews["item"].to_numpy(), args.k_core, args.k_core)
    require_interactions(len(users), args.reviews, f"--k-core {args.k_core}")
    kept = pd.DataFrame({"user": users, "item": items}).merge(reviews, on=["user", "item"], how="left")
    umap = pd.DataFrame({"raw": np.sort(kept["user"].unique())})
    umap["userID"] = np.arange(len(umap))
    imap = pd.DataFrame({"raw": np.sort(kept["item"].unique())})
    imap["itemID"] = np.arange(len(imap))
    u = kept["user"].map(dict(zip(umap["raw"], umap["userID"]))).to_numpy()
    i = kept["item"].map(dict(zip(imap["raw"], imap["itemID"]))).to_numpy()
    if args.split_order == "time":
        print(f"per-user 8:1:1 split by review time of {len(u):,} interactions after {args.k_core}-core")
        return ordered_user_split(u, i, kept["time"].to_numpy()), umap, imap
    print(f"random per-user 8:1:1 split (seed {args.seed}) of {len(u):,} interactions after {args.k_core}-core")
    return random_user_split(u, i, seed=args.seed), umap, imap


def convert(args) -> str:
    splits, umap, imap = interactions(args)
    check_splits(splits, args.split_from or args.reviews)
    output_dir(args.output_root, args.name, args.force)  # an existing output is refused before reading meta
    meta = read_meta(args.meta, imap["raw"])
    items = imap.merge(meta, left_on="raw", right_on="asin", how="left").drop(columns=["asin"])
    items = items.rename(columns={"raw": "asin"}).fillna("")
    items["text"] = item_text(items)
    has_text = (items["text"].str.strip() != "").to_numpy()
    print(f"metadata for {len(meta):,} of {len(imap):,} items; {int(has_text.sum()):,} with text, "
          f"{int((items['image_url'] != '').sum()):,} with an image URL")
    with dataset_output(args.output_root, args.name, splits, f"dataset_converters.amazon from {args.reviews}",
                        args.force) as out:
        atomic_write_text(os.path.join(out.stage, "i_id_mapping.csv"),
                          imap.rename(columns={"raw": "asin"})[["asin", "itemID"]].to_csv(sep="\t", index=False))
        atomic_write_text(os.path.join(out.stage, "u_id_mapping.csv"),
                          umap.rename(columns={"raw": "user_id"})[["user_id", "userID"]].to_csv(sep="\t", index=False))
        cols = ["itemID", "asin", "title", "brand", "categories", "description", "price", "image_url", "text"]
        atomic_write_text(os.path.join(out.stage, f"{args.name}.items.jsonl"),
                          items[cols].to_json(orient="records", lines=True, force_ascii=False))
        if not args.no_text and has_text.any():
            print(f"encoding the text of {int(has_text.sum()):,} items with {args.text_model}")
            out.save_modality("text", encode_text(items.loc[has_text, "text"].tolist(), args.text_model,
                                                  args.batch_size, args.device),
                              items.loc[has_text, "itemID"].astype(str))
    report(args.name, splits, out.dir, out.modalities, also=f"items file {args.name}.items.jsonl")
    return out.dir


def main(argv=None):
    convert(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
