"""LightGCN propagation, forward + backward: our SparseOperator against torch-geometric's.

    python benchmarks/propagation.py [--data_path ../shared/data] [--layers 2] [--dim 64] [--reps 30] [--threads 2]

Graphs: lfm2k's training interactions (MMRec folder ``<data_path>/lfm2k``) and a random bipartite
graph of Amazon Baby's size (19,445 users x 7,050 items, 128,634 training edges, Zipf-like item
popularity). Each variant computes ``mean(E, ÂE, ..., Â^L E)`` for a trainable ``E`` and
back-propagates a sum; the normalised adjacency is built once, as a model would:

* ``SparseOperator``: CSR ``Â`` with a stored CSR transpose (recbole_mm.model.layers);
* ``PyG LGConv (edge_index)``: ``LGConv(normalize=False)`` with precomputed ``gcn_norm`` edge
  weights, i.e. PyG's gather/scatter message passing;
* ``PyG LGConv (CSR adj_t)``: the same layer given ``Â`` as a torch CSR tensor, which PyG routes to
  its ``spmm`` (fused message-and-aggregate);
* ``torch.sparse.mm (COO)``: autograd through torch's COO product.

The variants alternate within each repetition, so machine drift hits all alike; the table gives
the median milliseconds and the ratio to SparseOperator.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import numpy as np
import pandas as pd
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from recbole_mm.data import graphs  # noqa: E402
from recbole_mm.model.layers import SparseOperator, lightgcn_propagate  # noqa: E402


def lfm2k_edges(data_path: str):
    frame = pd.read_csv(os.path.join(data_path, "lfm2k", "lfm2k.inter"), sep="\t")
    train = frame[frame["x_label"] == 0]
    return train["userID"].to_numpy(), train["itemID"].to_numpy(), frame["userID"].max() + 1, frame["itemID"].max() + 1


def baby_sized_edges(seed: int = 0, users: int = 19445, items: int = 7050, edges: int = 128634):
    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    u = rng.integers(users, size=edges * 2)
    i = rng.choice(items, size=edges * 2, p=popularity / popularity.sum())
    pairs = pd.DataFrame({"u": u, "i": i}).drop_duplicates().iloc[:edges]
    return pairs["u"].to_numpy(), pairs["i"].to_numpy(), users, items


def variants(users, items, n_users, n_items, n_layers):
    from torch_geometric.nn import LGConv

    adj = graphs.bipartite_norm_adj(users, items, n_users, n_items)
    op = SparseOperator(adj, symmetric=True)
    edge_index, edge_weight = adj.indices(), adj.values()
    adj_csr = adj.to_sparse_csr()
    conv = LGConv(normalize=False)

    def pyg_layers(ego, step):
        layers = [ego]
        for _ in range(n_layers):
            layers.append(step(layers[-1]))
        return torch.stack(layers).mean(0)

    return {
        "SparseOperator": lambda ego: lightgcn_propagate(op, ego, n_layers),
        "PyG LGConv (edge_index)": lambda ego: pyg_layers(ego, lambda x: conv(x, edge_index, edge_weight)),
        "PyG LGConv (CSR adj_t)": lambda ego: pyg_layers(ego, lambda x: conv(x, adj_csr)),
        "torch.sparse.mm (COO)": lambda ego: lightgcn_propagate(adj, ego, n_layers),
    }


def measure(name, graph, n_layers, dim, reps):
    users, items, n_users, n_items = graph
    funcs = variants(users, items, n_users, n_items, n_layers)
    ego = torch.nn.Parameter(torch.randn(n_users + n_items, dim) * 0.1)
    reference = None
    for label, fn in funcs.items():  # warm-up, and every variant gives the same numbers
        ego.grad = None
        out = fn(ego)
        out.square().sum().backward()
        if reference is None:
            reference = (out.detach(), ego.grad.clone())
        else:
            torch.testing.assert_close(out.detach(), reference[0], rtol=1e-4, atol=1e-5)
            torch.testing.assert_close(ego.grad, reference[1], rtol=1e-4, atol=1e-5)
    times = {label: [] for label in funcs}
    for _ in range(reps):
        for label, fn in funcs.items():
            ego.grad = None
            start = time.perf_counter()
            fn(ego).square().sum().backward()
            times[label].append(1000 * (time.perf_counter() - start))
    base = statistics.median(times["SparseOperator"])
    rows = [f"| {name} | {label} | {statistics.median(t):.2f} | {statistics.median(t) / base:.2f}x |"
            for label, t in times.items()]
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data_path", default=os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data"))
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--reps", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    import torch_geometric

    print(f"torch {torch.__version__}, torch-geometric {torch_geometric.__version__}, {args.threads} threads, "
          f"{args.layers} layers, d = {args.dim}, median of {args.reps} alternating repetitions (forward + backward)\n")
    print("| graph | propagation | ms | vs SparseOperator |\n|---|---|---|---|")
    graphs_ = {"lfm2k (1,858 x 1,425, 44,327 edges)": lfm2k_edges(args.data_path),
               "Baby-sized (19,445 x 7,050, 128,634 edges)": baby_sized_edges()}
    for name, graph in graphs_.items():
        for row in measure(name, graph, args.layers, args.dim, args.reps):
            print(row, flush=True)


if __name__ == "__main__":
    main()
