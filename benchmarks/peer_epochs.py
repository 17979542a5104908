"""Training seconds per epoch of our models against MMRec's, runs alternating, one table.

    python benchmarks/peer_epochs.py --dataset lfm2k --data_path data/ --mmrec_src ../MMRec/src \
        --mmrec_dataset lfm2k --pairs MMGCN=MMGCN SelfCF=SELFCFED_LGN [--epochs 5] [--rounds 3] \
        [--threads 2] [--mmrec_overrides '{"MMGCN": {"reg_weight": [0.1]}}'] [--key=value ...]

Each round runs, for every pair, our model (``bench.py``'s worker, in its own process, ``--epochs``
epochs) and then MMRec's (its own ``quick_start`` in another process, the same number of epochs),
so slow drift of the machine lands on both sides of a pair alike. A side's time is the median of
its training epochs after the first (warm-up: caches, allocator); the ratio is ours / MMRec's per
round, and the table reports its median over rounds. Validation and test passes are left out of
both (each toolkit still runs them between epochs). Peak RSS is that process's own.

MMRec (``enoche/MMRec``) is not part of this project: point ``--mmrec_src`` at a checkout's ``src/``
folder (with whatever local CPU/NumPy fixes it needs, e.g. stubs on ``--mmrec_pythonpath``).
``--mmrec_overrides`` pins MMRec's grid lists to one value per pair so both sides train the same
configuration. Only meaningful on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import parse_model_spec, parse_with_overrides  # noqa: E402

# Runs inside MMRec's src/ folder: times its Trainer._train_epoch (an observer; the loop is MMRec's).
_MMREC_DRIVER = r"""
import json, resource, sys, time
spec = json.loads(sys.argv[1])
sys.path.insert(0, spec["src"])
import torch
torch.set_num_threads(spec["threads"])
import common.trainer as tr
from utils.quick_start import quick_start
times = []
_train = tr.Trainer._train_epoch
def timed(self, *a, **k):
    t = time.perf_counter(); out = _train(self, *a, **k); times.append(time.perf_counter() - t); return out
tr.Trainer._train_epoch = timed
quick_start(model=spec["model"], dataset=spec["dataset"], save_model=False,
            config_dict={"gpu_id": 0, "use_gpu": False, "seed": [spec["seed"]], "epochs": spec["epochs"],
                         **spec["overrides"]})
print("PEER_RESULT " + json.dumps({"train_s_epochs": times,
      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}), flush=True)
"""


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--mmrec_src", required=True, help="MMRec's src/ folder")
    parser.add_argument("--mmrec_dataset", required=True)
    parser.add_argument("--mmrec_pythonpath", default="", help="extra PYTHONPATH for MMRec (stand-in modules)")
    parser.add_argument("--pairs", nargs="+", required=True, help="OURS_SPEC=MMREC_MODEL")
    parser.add_argument("--mmrec_overrides", default="{}", help="JSON: {MMREC_MODEL: {key: value}}")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--timeout", type=int, default=3600)
    parser.add_argument("--out", default="peer_epochs")
    return parse_with_overrides(parser, argv)


def steady(times: list) -> float:
    """Median training epoch after the first (warm-up)."""
    return statistics.median(times[1:] if len(times) > 1 else times)


def run_ours(args, overrides, spec: str) -> dict:
    model, extra = parse_model_spec(spec)
    worker = {"model": model, "seed": args.seed, "dataset": args.dataset,
              "data_path": os.path.abspath(args.data_path), "epochs": args.epochs, "threads": args.threads,
              "overrides": {**overrides, **extra}, "checkpoint_dir": os.path.abspath(os.path.join(args.out, "saved"))}
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    bench = str(Path(__file__).resolve().parent / "bench.py")
    proc = subprocess.run([sys.executable, bench, "--_worker", json.dumps(worker)], capture_output=True, text=True,
                          timeout=args.timeout, cwd=args.out, env=env)
    return _result(proc, "BENCH_RESULT ", f"ours {spec}")


def run_mmrec(args, name: str, overrides: dict) -> dict:
    spec = {"src": os.path.abspath(args.mmrec_src), "model": name, "dataset": args.mmrec_dataset,
            "seed": args.seed, "epochs": args.epochs, "threads": args.threads, "overrides": overrides}
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    if args.mmrec_pythonpath:
        env["PYTHONPATH"] = args.mmrec_pythonpath + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run([sys.executable, "-c", _MMREC_DRIVER, json.dumps(spec)], capture_output=True, text=True,
                          timeout=args.timeout, cwd=spec["src"], env=env)
    return _result(proc, "PEER_RESULT ", f"MMRec {name}")


def _result(proc, prefix: str, label: str) -> dict:
    lines = [line for line in proc.stdout.splitlines() if line.startswith(prefix)]
    if proc.returncode != 0 or not lines:
        tail = "\n".join((proc.stderr or proc.stdout).splitlines()[-15:])
        raise RuntimeError(f"{label} failed with exit code {proc.returncode}:\n{tail}")
    return json.loads(lines[-1][len(prefix):])


def main(argv=None):
    args, overrides = parse_args(argv)
    pairs = [p.rsplit("=", 1) for p in args.pairs]
    if any(len(p) != 2 for p in pairs):
        raise SystemExit("--pairs: each item is OURS_SPEC=MMREC_MODEL")
    mmrec_overrides = json.loads(args.mmrec_overrides)
    os.makedirs(args.out, exist_ok=True)
    runs = {spec: {"ours": [], "mmrec": [], "ratio": [], "rss": [0.0, 0.0]} for spec, _ in pairs}
    for r in range(args.rounds):
        for spec, name in pairs:
            ours = run_ours(args, overrides, spec)
            peer = run_mmrec(args, name, mmrec_overrides.get(name, {}))
            o, p = steady(ours["train_s_epochs"]), steady(peer["train_s_epochs"])
            row = runs[spec]
            row["ours"].append(o), row["mmrec"].append(p), row["ratio"].append(o / p)
            row["rss"] = [max(row["rss"][0], ours["peak_rss_mb"]), max(row["rss"][1], peer["peak_rss_mb"])]
            print(f"round {r + 1}/{args.rounds} {spec}: ours {o:.3f} s/epoch, MMRec {name} {p:.3f} s/epoch, "
                  f"ratio {o / p:.3f}", file=sys.stderr, flush=True)
    lines = ["| model | MMRec model | ours s/epoch | MMRec s/epoch | ratio ours/MMRec (median, min-max) | "
             "peak RSS ours / MMRec (MB) |", "|---|---|---|---|---|---|"]
    for spec, name in pairs:
        row = runs[spec]
        lines.append(f"| {spec} | {name} | {statistics.median(row['ours']):.3f} | {statistics.median(row['mmrec']):.3f} | "
                     f"{statistics.median(row['ratio']):.3f} ({min(row['ratio']):.3f}-{max(row['ratio']):.3f}) | "
                     f"{row['rss'][0]:.0f} / {row['rss'][1]:.0f} |")
    table = "\n".join(lines) + "\n"
    with open(os.path.join(args.out, "peer_epochs.md"), "w") as fh:
        fh.write(table)
    with open(os.path.join(args.out, "peer_epochs.json"), "w") as fh:
        json.dump(runs, fh, indent=1)
    print(table)


if __name__ == "__main__":
    main()
