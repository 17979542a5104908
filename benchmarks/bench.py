"""Benchmark harness: accuracy, time per epoch, evaluation time and peak memory, per model and seed.

    python benchmarks/bench.py --dataset NAME --data_path DIR --models M1 M2 ... [--epochs N]
                               [--seeds K] [--seed0 S] [--out OUT] [--threads T] [--key=value ...]

A model may carry its own overrides, for ablation tables:
``--models USERec USERec:prune=False USERec:user_pe=False,item_pe=True`` (the row is labelled
with the whole spec).

Each (model, seed) trains in its own subprocess (so peak RSS is that run's own) with the yaml
defaults plus the ``--key=value`` overrides, early-stopping on valid Recall@20. Writes
``OUT/results.csv`` (one row per model and seed: model, seed, best_epoch, recall@10, recall@20,
ndcg@10, ndcg@20, train_s_per_epoch, eval_s, peak_rss_mb, wall_s), ``OUT/results.md`` (the same
table plus mean ± std per model when K > 1), ``OUT/curves.png`` (valid Recall@20 per epoch) and
``OUT/runs.jsonl`` (full results, curves and each epoch's training seconds, ``train_s_epochs``:
their median is steadier than the mean when the first epochs warm up), and prints the markdown table.
``--reference CSV`` (another toolkit's runs on the same data, e.g. MMRec's: model, seed, recall@20,
ndcg@20) adds a parity table: mean ± std per side, the relative gap and the paired difference over
the seeds both ran.

Time numbers are only meaningful on an otherwise idle machine: two trainings sharing 2 cores
each run many times slower.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import re
import resource
import subprocess
import sys
import time
from pathlib import Path

COLUMNS = ["model", "seed", "best_epoch", "recall@10", "recall@20", "ndcg@10", "ndcg@20",
           "train_s_per_epoch", "eval_s", "peak_rss_mb", "wall_s"]
BASE_SEED = 2020


def parse_args(argv=None):
    parser = dataset_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=None, help="max epochs (default: the yaml's)")
    parser.add_argument("--seeds", type=int, default=1, help="K seeds: SEED0, SEED0 + 1, ...")
    parser.add_argument("--seed0", type=int, default=BASE_SEED, help=f"first seed (default {BASE_SEED})")
    parser.add_argument("--out", default="bench_out")
    parser.add_argument("--threads", type=int, default=2, help="torch threads per run")
    parser.add_argument("--timeout", type=int, default=7200, help="seconds per run")
    parser.add_argument("--reference", default=None, metavar="CSV",
                        help="another toolkit's runs on the same data (columns model, seed, recall@20, ndcg@20): "
                             "adds mean ± std per side, the relative gap and the paired difference on shared seeds")
    return parse_with_overrides(parser, argv)


def dataset_parser(doc: str) -> argparse.ArgumentParser:
    """A parser described by ``doc``'s first paragraph, with the ``--dataset``, ``--data_path`` and
    ``--models`` options the benchmark scripts share."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--models", nargs="+", required=True)
    return parser


def parse_with_overrides(parser: argparse.ArgumentParser, argv=None):
    """``(args, {key: value})``: the parser's own options, and every other ``--key=value`` as a
    config override for all models (anything else is an error)."""
    args, extra = parser.parse_known_args(argv)
    overrides = {}
    for item in extra:
        if not item.startswith("--") or "=" not in item:
            parser.error(f"unrecognised argument {item!r} (overrides are --key=value)")
        key, value = item[2:].split("=", 1)
        overrides[key] = value
    return args, overrides


def _worker(spec: dict) -> dict:
    """Run one training in this process and return its measurements."""
    import torch

    torch.set_num_threads(spec["threads"])
    from recbole_mm.quick_start import run_recbole_mm

    sys.argv = [sys.argv[0]] + [f"--{k}={v}" for k, v in spec["overrides"].items()]
    config = {"data_path": spec["data_path"], "seed": spec["seed"], "show_progress": False,
              "checkpoint_dir": spec["checkpoint_dir"]}
    if spec["epochs"]:
        config["epochs"] = spec["epochs"]
    start = time.perf_counter()
    result = run_recbole_mm(spec["model"], spec["dataset"], config_dict=config, print_result=False)
    wall = time.perf_counter() - start
    log = result["epoch_log"]
    curve = [e.get("valid_result", {}).get("recall@20") for e in log]
    scored = [(e["valid_score"], -e["epoch"]) for e in log if "valid_score" in e]
    best_epoch = -max(scored)[1] if scored else None
    test = result["test_result"]
    train_s = [e["train_s"] for e in log]
    eval_s = [e["valid_s"] for e in log if "valid_s" in e]
    return {
        "model": spec["model"], "seed": spec["seed"], "best_epoch": best_epoch,
        **{k: float(test[k]) for k in ("recall@10", "recall@20", "ndcg@10", "ndcg@20")},
        "train_s_per_epoch": sum(train_s) / max(len(train_s), 1),
        "eval_s": sum(eval_s) / max(len(eval_s), 1),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "wall_s": wall, "curve": curve, "test_result": {k: float(v) for k, v in test.items()},
        "train_s_epochs": train_s,
        # with `cold_items`: the test metrics on the cold and on the warm items (None otherwise)
        **{key: None if result.get(key) is None else {k: float(v) for k, v in result[key].items()}
           for key in ("cold_test_result", "warm_test_result")},
    }


def parse_model_spec(spec: str):
    """``"USERec:prune=False,n_samples=3"`` -> ``("USERec", {"prune": "False", "n_samples": "3"})``.

    A comma only starts a new override when ``key=`` follows it, so values may hold commas
    (``"AlignRec:use_modalities=['text','audio'],fusion=gate"``).
    """
    name, _, rest = spec.partition(":")
    extra = {}
    for item in re.split(r",(?=\s*\w+=)", rest) if rest else []:
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"model spec {spec!r}: {item!r} is not key=value")
        extra[key.strip()] = value
    return name, extra


def run_one(args, overrides, model_spec: str, seed: int) -> dict:
    model, extra = parse_model_spec(model_spec)
    overrides = {**overrides, **extra}
    spec = {"model": model, "seed": seed, "dataset": args.dataset, "data_path": os.path.abspath(args.data_path),
            "epochs": args.epochs, "threads": args.threads, "overrides": overrides,
            "checkpoint_dir": os.path.abspath(os.path.join(args.out, "saved"))}
    log_path = os.path.join(args.out, f"{model_spec.replace(':', '_').replace(',', '_')}-{seed}.log")
    result = launch_worker(__file__, spec, args.threads, args.timeout, args.out, log_path, "BENCH_RESULT",
                           f"{model_spec} (seed {seed})")
    result["model"] = model_spec
    return result


def launch_worker(script: str, spec: dict, threads: int, timeout: int, cwd: str, log_path: str, marker: str,
                  label: str) -> dict:
    """Run ``script --_worker SPEC`` in a fresh process (its own peak RSS, ``threads`` BLAS threads,
    the repository on its path, stderr to ``log_path``) and return the JSON it prints after ``marker``."""
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    with open(log_path, "w") as log:
        proc = subprocess.run([sys.executable, script, "--_worker", json.dumps(spec)], stdout=subprocess.PIPE,
                              stderr=log, text=True, timeout=timeout, cwd=cwd, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith(marker + " ")]
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{label} failed with exit code {proc.returncode}; see {log_path}")
    return json.loads(lines[-1][len(marker) + 1:])


def _fmt(value, column):
    if isinstance(value, float):
        return f"{value:.4f}" if column.startswith(("recall", "ndcg")) else f"{value:.2f}"
    return str(value)


def markdown(rows, title: str) -> str:
    lines = [f"## {title}", "", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(_fmt(r[c], c) for c in COLUMNS) + " |" for r in rows]
    models = sorted({r["model"] for r in rows}, key=[r["model"] for r in rows].index)
    if any(sum(r["model"] == m for r in rows) > 1 for m in models):
        import statistics

        lines += ["", "Mean ± std over seeds:", "", "| model | recall@20 | ndcg@20 | train_s_per_epoch |",
                  "|---|---|---|---|"]
        for m in models:
            sub = [r for r in rows if r["model"] == m]
            cells = []
            for c in ("recall@20", "ndcg@20", "train_s_per_epoch"):
                vals = [r[c] for r in sub]
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cells.append(f"{statistics.mean(vals):.4f} ± {sd:.4f}")
            lines.append(f"| {m} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def read_reference(path: str) -> list:
    """Rows ``{model, seed, recall@20, ndcg@20}`` of a reference CSV (e.g. MMRec's runs)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    missing = [c for c in ("model", "seed", "recall@20") if rows and c not in rows[0]]
    if not rows or missing:
        raise ValueError(f"{path}: expected columns model, seed, recall@20 [, ndcg@20]; "
                         f"{'missing ' + str(missing) if rows else 'no rows'}")
    return [{"model": r["model"], "seed": int(r["seed"]), "recall@20": float(r["recall@20"]),
             "ndcg@20": float(r["ndcg@20"]) if r.get("ndcg@20") not in (None, "") else float("nan")} for r in rows]


def reference_table(rows, reference, metric: str = "recall@20") -> str:
    """Ours against the reference per model (a row ``M:key=value`` is compared with reference ``M``):
    mean ± std of each side, the relative gap of the means, and the paired difference over the
    seeds both ran (the same seed numbers)."""
    import statistics

    def mean_sd(vals):
        return statistics.mean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)

    lines = ["", f"Against the reference (test {metric}):", "",
             "| model | ours mean ± std (n) | reference mean ± std (n) | relative | paired Δ mean ± std (seeds) |",
             "|---|---|---|---|---|"]
    for m in sorted({r["model"] for r in rows}, key=[r["model"] for r in rows].index):
        # a reference CSV may leave ndcg@20 blank (read as NaN): those runs count for no metric mean
        ours = {r["seed"]: r[metric] for r in rows if r["model"] == m and not math.isnan(r[metric])}
        ref = {r["seed"]: r[metric] for r in reference
               if r["model"] == parse_model_spec(m)[0] and not math.isnan(r[metric])}
        if not ref or not ours:
            continue
        (om, osd), (rm, rsd) = mean_sd(list(ours.values())), mean_sd(list(ref.values()))
        shared = sorted(set(ours) & set(ref))
        paired = "–"
        if shared:
            dm, dsd = mean_sd([ours[s] - ref[s] for s in shared])
            paired = f"{dm:+.4f} ± {dsd:.4f} ({', '.join(map(str, shared))})"
        relative = round(100 * (om - rm) / rm, 1) + 0.0  # + 0.0: no "-0.0%"
        lines.append(f"| {m} | {om:.4f} ± {osd:.4f} ({len(ours)}) | {rm:.4f} ± {rsd:.4f} ({len(ref)}) | "
                     f"{relative:+.1f}% | {paired} |")
    return "\n".join(lines) + "\n"


def plot(rows, path: str, title: str) -> bool:
    """``curves.png``: recbole_mm.plot's curve drawing; skipped (with a note) without matplotlib."""
    from recbole_mm.plot import draw_curves

    try:
        draw_curves(rows, path, title)
    except ValueError as exc:  # matplotlib missing
        print(f"{exc}: no curves.png", file=sys.stderr)
        return False
    return True


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_worker":
        print("BENCH_RESULT " + json.dumps(_worker(json.loads(argv[1]))), flush=True)
        return None
    args, overrides = parse_args(argv)
    reference = read_reference(args.reference) if args.reference else None  # a bad file fails before training
    os.makedirs(args.out, exist_ok=True)
    rows = []
    csv_path, jsonl_path = os.path.join(args.out, "results.csv"), os.path.join(args.out, "runs.jsonl")
    with open(csv_path, "w", newline="") as fh:
        csv.DictWriter(fh, fieldnames=COLUMNS).writeheader()
    open(jsonl_path, "w").close()
    for model in args.models:
        for k in range(args.seeds):
            seed = args.seed0 + k
            print(f"running {model} seed {seed} ...", file=sys.stderr, flush=True)
            row = run_one(args, overrides, model, seed)
            rows.append(row)
            # rows are appended as runs finish: a long benchmark that dies keeps what it measured
            with open(csv_path, "a", newline="") as fh:
                csv.DictWriter(fh, fieldnames=COLUMNS, extrasaction="ignore").writerow(row)
            with open(jsonl_path, "a") as fh:
                fh.write(json.dumps(row) + "\n")
            print(f"  test recall@20 {row['recall@20']:.4f}, {row['train_s_per_epoch']:.2f} s/epoch, "
                  f"best epoch {row['best_epoch']}", file=sys.stderr, flush=True)
    extra = " ".join(f"--{k}={v}" for k, v in overrides.items())
    title = f"{args.dataset}: test metrics (best valid Recall@20 epoch)"
    command = "python benchmarks/bench.py " + " ".join(argv)
    table = markdown(rows, title) + (reference_table(rows, reference) if reference else "")
    table += f"\nCommand: `{command}`" + (f" (overrides: `{extra}`)" if extra else "") + "\n"
    with open(os.path.join(args.out, "results.md"), "w") as fh:
        fh.write(table)
    plot(rows, os.path.join(args.out, "curves.png"), f"{args.dataset}: valid Recall@20")
    print(table)
    return rows


if __name__ == "__main__":
    main()
