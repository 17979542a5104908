"""Items most similar to given items, by a trained model's item embeddings or by raw features.

    python -m recbole_mm.similar --checkpoint saved/M.pth --items ID [ID ...] --topk 10
        [--features MODALITY] [--out similar.csv|similar.parquet] [--force]

Similarity is the cosine of the item vectors the model scores with (:func:`recbole_mm.recommend.
scoring_embeddings`), or with ``--features`` of one modality's feature rows; the neighbours come
from the shared KNN block (:func:`recbole_mm.data.graphs.knn_indices`, the run's ``knn_backend``), the
item itself left out. Without ``--out`` the table is printed.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import pandas as pd
import torch

from recbole_mm.recommend import check_k, check_output, load, scoring_embeddings, token_ids, write_table


def item_vectors(loaded, features: str | None = None) -> torch.Tensor:
    """``(n_items - 1, d)``: the model's item embeddings, or modality ``features``' rows (no padding)."""
    dataset = loaded.dataset
    if features is None:
        return scoring_embeddings(loaded)[1][1:]
    available = list(getattr(dataset, "item_features", {}) or {})
    if features not in available:
        raise ValueError(f"--features: modality {features!r} is not loaded in dataset "
                         f"'{dataset.dataset_name}' (its modalities: {available})")
    return dataset.item_features[features][1:].float()


def similar_items(checkpoint_or_model, items, topk: int = 10, features: str | None = None) -> pd.DataFrame:
    """DataFrame ``item, rank, similar, score`` (tokens; cosine similarity), ``topk`` rows per item."""
    from recbole_mm.data.graphs import knn_indices

    topk = check_k(topk, "topk")
    loaded = load(checkpoint_or_model)
    dataset = loaded.dataset
    ids = token_ids(dataset, dataset.iid_field, items, "--items")
    tokens = dataset.field2id_token[dataset.iid_field][ids.numpy()]
    vectors = item_vectors(loaded, features)
    neighbours, sims = knn_indices(vectors, topk, include_self=False,
                                   backend=loaded.config["knn_backend"] or "torch")
    rows = ids - 1  # vectors have no padding row
    nb, sim = neighbours[rows].cpu(), sims[rows].cpu()
    k = nb.shape[1]
    id2token = dataset.field2id_token[dataset.iid_field]
    return pd.DataFrame({
        "item": np.repeat(np.asarray(tokens, dtype=object), k),
        "rank": np.tile(np.arange(1, k + 1), len(tokens)),
        "similar": id2token[(nb + 1).reshape(-1).numpy()],
        "score": sim.reshape(-1).numpy(),
    })


def _main(argv):
    parser = argparse.ArgumentParser(prog="python -m recbole_mm.similar", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--items", nargs="+", required=True, help="item tokens")
    parser.add_argument("--topk", type=int, default=10)
    parser.add_argument("--features", default=None, metavar="MODALITY",
                        help="raw features of this modality instead of the learned item embeddings")
    parser.add_argument("--out", default=None, help="similar.csv or similar.parquet (default: print)")
    parser.add_argument("--force", action="store_true")
    args = parser.parse_args(argv)
    check_k(args.topk, "--topk")  # before the (slow) load
    if args.out:
        check_output(args.out, args.force)
    frame = similar_items(args.checkpoint, args.items, args.topk, args.features)
    if args.out:
        write_table(frame, args.out, force=args.force)
        print(f"wrote {len(frame)} rows to {args.out}")
    else:
        print(frame.to_string(index=False))
    return 0


def main(argv=None) -> int:
    from recbole_mm.cli import run_main

    return run_main(_main, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
