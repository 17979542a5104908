"""Does a dataset's user-id order encode its interactions?

    python benchmarks/id_order.py PATH.inter [--pairs 20000] [--seed 0]

Reads an MMRec ``.inter`` file (tab-separated userID, itemID, x_label) and prints, per split
(x_label 0 / 1 / 2), how often two users with adjacent ids share an item against two users drawn
at random (seeded). Adjacent pairs far above random mean the ids were assigned in interaction
order: a model that encodes raw ids (USERec's sinusoidal user code with ``pe_order: index``) then
sees information about the split the order was built from, the test split included.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd
import scipy.sparse as sp

SPLITS = {0: "train", 1: "valid", 2: "test"}


def share_rates(users: np.ndarray, items: np.ndarray, n_pairs: int, seed: int) -> tuple[float, float]:
    """``(adjacent, random)``: the share of user pairs ``(u, u + 1)`` (both with interactions) and of
    ``n_pairs`` random pairs of distinct users that have at least one item in common."""
    ids, rows = np.unique(users, return_inverse=True)
    R = sp.csr_matrix((np.ones(len(rows)), (rows, items)), shape=(len(ids), int(items.max()) + 1))
    R.data[:] = 1.0  # repeated (user, item) rows count once

    def shared(a: np.ndarray, b: np.ndarray) -> float:
        return float((np.asarray(R[a].multiply(R[b]).sum(axis=1)).ravel() > 0).mean()) if len(a) else float("nan")

    adjacent = np.flatnonzero(ids[1:] == ids[:-1] + 1)  # row r and r + 1 hold users u and u + 1
    rng = np.random.default_rng(seed)
    a, b = rng.integers(0, len(ids), n_pairs), rng.integers(0, len(ids), n_pairs)
    keep = a != b
    return shared(adjacent, adjacent + 1), shared(a[keep], b[keep])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("inter")
    parser.add_argument("--pairs", type=int, default=20000, help="random user pairs per split")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    try:
        frame = pd.read_csv(args.inter, sep="\t")
    except (OSError, pd.errors.ParserError, UnicodeDecodeError) as e:
        print(f"error: {args.inter}: {e}", file=sys.stderr)
        return 2
    missing = [c for c in ("userID", "itemID", "x_label") if c not in frame.columns]
    if missing:
        print(f"error: {args.inter}: missing column(s) {', '.join(missing)}", file=sys.stderr)
        return 2
    for label, part in frame.groupby("x_label"):
        adjacent, random = share_rates(part["userID"].to_numpy(), part["itemID"].to_numpy(), args.pairs, args.seed)
        print(f"{SPLITS.get(label, label)}: adjacent ids share an item {adjacent:.4f}, random pairs {random:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
