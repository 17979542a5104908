"""Item-item KNN graph build: seconds and peak memory at 10k / 50k / 200k items.

    python benchmarks/knn_scaling.py [--sizes 10000 50000 200000] [--dim 384] [--k 10] [--threads 2]
        [--backend torch|faiss]

Each size runs in a fresh subprocess (synthetic Gaussian features), so the peak RSS printed is
that build's own: features + one similarity block + the n*k result.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time


def _worker(n: int, dim: int, k: int, threads: int, block_mb: int, backend: str = "torch") -> dict:
    import torch

    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    from recbole_mm.data import graphs

    torch.set_num_threads(threads)
    if backend == "faiss":
        import faiss

        faiss.omp_set_num_threads(threads)
    features = torch.randn(n, dim, generator=torch.Generator().manual_seed(0))
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    start = time.perf_counter()
    graph = graphs.knn_graph(features, k, block_size=graphs.auto_block_size(n, block_mb), backend=backend)
    seconds = time.perf_counter() - start
    return {"backend": backend, "items": n, "dim": dim, "k": k, "seconds": round(seconds, 2), "nnz": int(graph._nnz()),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
            "rss_before_build_mb": round(base, 1)}


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_worker":
        print(json.dumps(_worker(*map(int, argv[1:6]), *argv[6:])))
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10000, 50000, 200000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--block_mb", type=int, default=256, help="memory budget of one similarity block")
    parser.add_argument("--backend", choices=["torch", "faiss"], default="torch")
    args = parser.parse_args(argv)
    print("| backend | items | dim | k | seconds | peak RSS (MB) | RSS before build (MB) |")
    print("|---|---|---|---|---|---|---|")
    for n in args.sizes:
        out = subprocess.run([sys.executable, __file__, "--_worker", str(n), str(args.dim), str(args.k),
                              str(args.threads), str(args.block_mb), args.backend], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"| {r['backend']} | {r['items']} | {r['dim']} | {r['k']} | {r['seconds']} | {r['peak_rss_mb']} | "
              f"{r['rss_before_build_mb']} |", flush=True)


if __name__ == "__main__":
    main()
