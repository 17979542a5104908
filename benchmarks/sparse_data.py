"""Sparse benchmark datasets shared with MMRec: MMRec folders, and the same data converted for us.

    python benchmarks/sparse_data.py --data ../shared/data --out sparse/ [--max-train 6] [--seed 2020]

Writes, each as an MMRec folder ``<out>/mmrec/<name>/`` (``<name>.inter`` with userID, itemID,
x_label; ``*_feat.npy`` with row r = itemID r) and converted by ``dataset_converters.mmrec`` to
``<out>/data/<name>/`` (use ``--data_path <out>/data``):

* ``lfm2k_sparse``: lfm2k with each user's *training* interactions subsampled (seeded, uniformly)
  to at most ``--max-train``; valid and test untouched; both real modalities, ``text_feat.npy``
  (MiniLM tags) and ``audio_vggish_feat.npy`` (point MMRec's image slot at the latter);
* ``baby_dense``: Amazon Baby (about 6 training interactions per user already) with MiniLM title
  features (``all-MiniLM-L6-v2``, offline) for the 3,416 items that have a title, filled to every
  item by the ``neighbour`` policy (co-interaction-weighted mean over training neighbours, the mean
  for items without one) and written as a dense file, once as ``text_feat.npy`` and once as
  ``text_copy_feat.npy`` -- MMRec's two modality slots, and our two modalities.

Inputs are only read; an existing output folder is refused unless ``--force``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from dataset_converters.mmrec import convert  # noqa: E402
from recbole_mm.data.features import neighbour_impute  # noqa: E402
from recbole_mm.io import atomic_save_npy, atomic_write_text, staged_output_dir  # noqa: E402


def subsample_training(frame: pd.DataFrame, max_train: int, seed: int) -> pd.DataFrame:
    """At most ``max_train`` training rows (x_label 0) per user, chosen uniformly at random (seeded)."""
    rng = np.random.default_rng(seed)
    train = frame[frame["x_label"] == 0].assign(key=rng.random(int((frame["x_label"] == 0).sum())))
    rank = train.sort_values(["userID", "key"], kind="mergesort").groupby("userID").cumcount()
    kept = train.loc[rank[rank < max_train].index].drop(columns="key")
    return pd.concat([kept, frame[frame["x_label"] != 0]]).sort_index()


def write_mmrec(folder: str, name: str, frame: pd.DataFrame, features: dict, note: dict, force: bool) -> None:
    with staged_output_dir(folder, force=force) as stage:
        frame[["userID", "itemID", "x_label"]].to_csv(os.path.join(stage, f"{name}.inter"), sep="\t", index=False)
        for file, matrix in features.items():
            atomic_save_npy(os.path.join(stage, file), np.ascontiguousarray(matrix, dtype=np.float32))
        atomic_write_text(os.path.join(stage, "README.json"), json.dumps(note, indent=2) + "\n")


def describe(frame: pd.DataFrame) -> str:
    train = frame[frame["x_label"] == 0]
    per_user = train.groupby("userID").size()
    return (f"{frame['userID'].nunique():,} users x {frame['itemID'].nunique():,} items; train {len(train):,} "
            f"({per_user.mean():.2f} per user) / valid {int((frame['x_label'] == 1).sum()):,} / "
            f"test {int((frame['x_label'] == 2).sum()):,}")


def lfm2k_sparse(data: str, out: str, max_train: int, seed: int, force: bool) -> str:
    source = os.path.join(data, "lfm2k")
    frame = pd.read_csv(os.path.join(source, "lfm2k.inter"), sep="\t")
    sparse = subsample_training(frame, max_train, seed)
    features = {f: np.load(os.path.join(source, f)) for f in ("text_feat.npy", "audio_vggish_feat.npy")}
    note = {"source": source, "max_train_per_user": max_train, "seed": seed, "summary": describe(sparse)}
    write_mmrec(os.path.join(out, "mmrec", "lfm2k_sparse"), "lfm2k_sparse", sparse, features, note, force)
    return note["summary"]


def baby_dense(data: str, out: str, force: bool, text_model: str = "all-MiniLM-L6-v2") -> str:
    from recbole_mm.encoders.text import encode_texts

    source = os.path.join(data, "amazon-baby")
    frame = pd.read_csv(os.path.join(source, "baby.inter"), sep="\t")
    titles = pd.read_json(os.path.join(source, "item_titles_partial.jsonl"), lines=True)
    n_items = int(frame["itemID"].max()) + 1
    encoded = encode_texts(titles["title"].astype(str).tolist(), model=text_model, batch_size=128)
    aligned = np.zeros((n_items, encoded.shape[1]), dtype=np.float32)
    present = np.zeros(n_items, dtype=bool)
    aligned[titles["itemID"].to_numpy()] = encoded
    present[titles["itemID"].to_numpy()] = True
    train = frame[frame["x_label"] == 0]
    dense, from_neighbours, from_mean = neighbour_impute(aligned, present, train["userID"].to_numpy(),
                                                         train["itemID"].to_numpy())
    note = {"source": source, "text_model": text_model, "titled_items": int(present.sum()),
            "imputed_from_neighbours": from_neighbours, "imputed_from_mean": from_mean, "summary": describe(frame)}
    features = {"text_feat.npy": dense, "text_copy_feat.npy": dense}
    write_mmrec(os.path.join(out, "mmrec", "baby_dense"), "baby_dense", frame, features, note, force)
    return note["summary"] + f"; titles for {int(present.sum()):,} items, {from_neighbours:,} imputed from " \
        f"neighbours, {from_mean:,} from the mean"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..",
                                                       "shared", "data"), help="folder with lfm2k/ and amazon-baby/")
    parser.add_argument("--out", required=True)
    parser.add_argument("--max-train", type=int, default=6, help="lfm2k_sparse: training interactions kept per user")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--only", choices=("lfm2k_sparse", "baby_dense"), default=None)
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    jobs = {"lfm2k_sparse": lambda: lfm2k_sparse(args.data, args.out, args.max_train, args.seed, args.force),
            "baby_dense": lambda: baby_dense(args.data, args.out, args.force)}
    for name, job in jobs.items():
        if args.only in (None, name):
            print(f"{name}: {job()}", flush=True)
            convert(os.path.join(args.out, "mmrec", name), os.path.join(args.out, "data"), force=args.force)


if __name__ == "__main__":
    from recbole_mm.cli import run_main

    raise SystemExit(run_main(main))
