"""Make a synthetic multimodal dataset of a given size (for time/memory benchmarks).

    python benchmarks/synthetic.py --users 192000 --items 63000 --inters 1700000 --dims 384 512 \
        --name elec_syn --out /tmp/syn [--seed 0]

Writes an MMRec folder (``<name>.inter`` with a per-user 8:1:1 x_label split, ``m<k>_feat.npy``)
and converts it with ``dataset_converters.mmrec`` to ``<out>/data/<name>/``; run the harness with
``--data_path <out>/data``. Item popularity follows a Zipf-like law, as real catalogues do;
features are Gaussian (accuracy on this data means nothing: it is for seconds and megabytes).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import pandas as pd

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from dataset_converters._common import random_user_split  # noqa: E402
from dataset_converters.mmrec import convert  # noqa: E402


def make(users: int, items: int, inters: int, dims, out: str, name: str, seed: int = 0) -> str:
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    popularity /= popularity.sum()
    # every user gets >= 5 interactions, the rest spread uniformly over users
    extra = max(inters - 5 * users, 0)
    counts = 5 + np.bincount(rng.integers(0, users, extra), minlength=users)
    u = np.repeat(np.arange(users), counts)
    i = rng.choice(items, size=len(u), p=popularity)
    pairs = pd.DataFrame({"u": u, "i": i}).drop_duplicates()
    splits = random_user_split(pairs["u"].to_numpy(), pairs["i"].to_numpy(), seed=seed)
    frames = [pd.DataFrame({"userID": splits[s][0], "itemID": splits[s][1], "x_label": k})
              for k, s in enumerate(("train", "valid", "test"))]
    raw = os.path.join(out, "raw", name)
    os.makedirs(raw, exist_ok=True)
    pd.concat(frames).to_csv(os.path.join(raw, f"{name}.inter"), sep="\t", index=False)
    for k, d in enumerate(dims):
        np.save(os.path.join(raw, f"m{k}_feat.npy"), rng.standard_normal((items, d), dtype=np.float32))
    return convert(raw, os.path.join(out, "data"), name=name, force=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description="synthetic multimodal dataset for benchmarks")
    parser.add_argument("--users", type=int, required=True)
    parser.add_argument("--items", type=int, required=True)
    parser.add_argument("--inters", type=int, required=True)
    parser.add_argument("--dims", type=int, nargs="+", default=[384])
    parser.add_argument("--name", default="synthetic")
    parser.add_argument("--out", required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    make(args.users, args.items, args.inters, args.dims, args.out, args.name, args.seed)


if __name__ == "__main__":
    main()
