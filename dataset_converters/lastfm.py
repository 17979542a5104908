"""Last.fm HetRec-2011 raw files -> RecBole benchmark files + a text modality + dataset yaml.

    python -m dataset_converters.lastfm <raw_dir> <output_root> [--name lfm2k] [--text-model PATH] [--dedupe] [--force]

Reads from ``raw_dir`` (only reads):

* ``user_artists.dat`` (userID, artistID, weight): the interactions;
* the artists' tag text: ``lfm2k_text.tsv`` (artistID, text) if present, else built from
  ``user_taggedartists.dat`` + ``tags.dat`` (each artist's distinct tag values, sorted, joined
  by ``,``: the text the published lfm2k features were encoded from).

Split: with ``--split-from FILE`` (or ``<raw_dir>/<name>_og_ids.inter`` when it exists) the
interactions and their split are taken from that file (columns userID, itemID, x_label in HetRec
ids; every pair must occur in user_artists.dat, and a repeated pair or one pair in two splits is
refused unless ``--dedupe``). Otherwise all of user_artists.dat is k-core
filtered (``--min-user-inter``/``--min-item-inter``) and split per user at random 8:1:1 with
``--seed``. Item tokens are HetRec artistIDs and user tokens HetRec userIDs.

The text modality (``text_feat.npy`` + ``text_feat.ids``) is the sentence-transformers embedding
(default all-MiniLM-L6-v2, resolved offline-first) of each artist's tag text; artists without
tags get no row (the dataset's missing_modality policy decides).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import pandas as pd

from dataset_converters._common import (
    ConversionError,
    add_output_arguments,
    check_integer_column,
    check_pairs,
    check_splits,
    dataset_output,
    encode_text,
    k_core,
    random_user_split,
    read_table,
    report,
    require_interactions,
    run_cli,
    split_by_label,
)


def build_parser():
    parser = argparse.ArgumentParser(
        prog="python -m dataset_converters.lastfm",
        description="Last.fm HetRec-2011 raw files -> RecBole benchmark files + MiniLM tag-text modality",
    )
    parser.add_argument("raw_dir", help="folder with user_artists.dat and tag files (HetRec 2011)")
    parser.add_argument("--name", default="lfm2k", help="dataset name (default lfm2k)")
    parser.add_argument("--text-model", default="all-MiniLM-L6-v2",
                        help="sentence-transformers model: local dir, packaged name or hub name")
    parser.add_argument("--split-from", default=None,
                        help="inter file (userID, itemID, x_label; HetRec ids) whose rows and split to keep; "
                             "default <raw_dir>/<name>_og_ids.inter if it exists")
    parser.add_argument("--no-split-from", action="store_true", help="ignore <name>_og_ids.inter; split at random")
    parser.add_argument("--seed", type=int, default=2020, help="seed of the random per-user 8:1:1 split")
    parser.add_argument("--min-user-inter", type=int, default=5, help="k-core threshold for users (random split)")
    parser.add_argument("--min-item-inter", type=int, default=5, help="k-core threshold for items (random split)")
    parser.add_argument("--batch-size", type=int, default=64, help="text encoder batch size")
    parser.add_argument("--device", default="cpu", help="text encoder device (cpu, cuda, cuda:1 ...)")
    parser.add_argument("--no-text", action="store_true", help="skip the text modality")
    parser.add_argument("--dedupe", action="store_true", help="--split-from: drop repeated (user, item) rows and "
                        "pairs in two splits (default: refuse them)")
    return add_output_arguments(parser)


def artist_tag_text(raw_dir: str) -> pd.Series:
    """``artistID -> tag text``, from lfm2k_text.tsv or from the HetRec tag assignments."""
    text_path = os.path.join(raw_dir, "lfm2k_text.tsv")
    if os.path.isfile(text_path):
        frame = read_table(text_path, required=["artistID", "text"], dtype=str)
        ids = check_integer_column(frame, "artistID", text_path)
        return pd.Series(frame["text"].to_numpy(), index=ids)
    assign_path = os.path.join(raw_dir, "user_taggedartists.dat")
    tags_path = os.path.join(raw_dir, "tags.dat")
    assign = read_table(assign_path, required=["artistID", "tagID"])
    tags = read_table(tags_path, required=["tagID", "tagValue"])
    values = pd.Series(tags["tagValue"].to_numpy(), index=check_integer_column(tags, "tagID", tags_path))
    tag_ids = check_integer_column(assign, "tagID", assign_path)
    unknown = ~pd.Index(tag_ids).isin(values.index)
    if unknown.any():
        row = int(np.flatnonzero(unknown)[0])
        raise ConversionError(
            f"{assign_path}: field 'tagID' row {row + 1}: unknown tag id {tag_ids[row]} (not in {tags_path})"
        )
    artists = check_integer_column(assign, "artistID", assign_path)
    pairs = pd.DataFrame({"a": artists, "t": values.loc[tag_ids].to_numpy()})
    pairs = pairs.drop_duplicates().sort_values(["a", "t"])
    return pairs.groupby("a")["t"].agg(",".join)


def load_interactions(args) -> dict:
    raw = args.raw_dir
    ua_path = os.path.join(raw, "user_artists.dat")
    ua = read_table(ua_path, required=["userID", "artistID"])
    require_interactions(len(ua), ua_path)
    ua_users = check_integer_column(ua, "userID", ua_path)
    ua_items = check_integer_column(ua, "artistID", ua_path)
    split_from = args.split_from
    default_split = os.path.join(raw, f"{args.name}_og_ids.inter")
    if split_from is None and not args.no_split_from and os.path.isfile(default_split):
        split_from = default_split
    if split_from is None:
        users, items = k_core(ua_users, ua_items, args.min_user_inter, args.min_item_inter)
        require_interactions(len(users), ua_path,
                             f"the k-core filter (--min-user-inter {args.min_user_inter}, --min-item-inter "
                             f"{args.min_item_inter})")
        print(f"random per-user 8:1:1 split (seed {args.seed}) of {len(users):,} interactions after k-core")
        return random_user_split(users, items, seed=args.seed)
    frame = read_table(split_from, required=["userID", "itemID", "x_label"])
    require_interactions(len(frame), split_from)
    users = check_integer_column(frame, "userID", split_from)
    items = check_integer_column(frame, "itemID", split_from)
    labels = check_integer_column(frame, "x_label", split_from, allowed={0, 1, 2})
    known = pd.MultiIndex.from_arrays([ua_users, ua_items])
    absent = ~pd.MultiIndex.from_arrays([users, items]).isin(known)
    if absent.any():
        row = int(np.flatnonzero(absent)[0])
        raise ConversionError(
            f"{split_from}: row {row + 1}: (userID {users[row]}, itemID {items[row]}) is not in {ua_path}"
        )
    users, items, labels = check_pairs(users, items, labels, split_from, dedupe=args.dedupe)
    print(f"keeping the split of {split_from}")
    return split_by_label(users, items, labels)


def convert(args) -> str:
    splits = load_interactions(args)
    check_splits(splits, args.split_from or args.raw_dir)
    # an existing output is refused on entry, before the (slow) encoding
    with dataset_output(args.output_root, args.name, splits, f"dataset_converters.lastfm from {args.raw_dir}",
                        args.force) as out:
        if not args.no_text:
            items = np.unique(np.concatenate([splits[s][1] for s in splits]))
            text = artist_tag_text(args.raw_dir).reindex(items)
            has_text = text.notna().to_numpy() & (text.fillna("").str.strip() != "").to_numpy()
            print(f"encoding tag text of {int(has_text.sum()):,} artists with {args.text_model} "
                  f"({int((~has_text).sum()):,} artists have no tags)")
            out.save_modality("text", encode_text(text[has_text].tolist(), args.text_model, args.batch_size,
                                                  args.device), items[has_text])
    report(args.name, splits, out.dir, out.modalities)
    return out.dir


def main(argv=None):
    convert(build_parser().parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(run_cli(main))
