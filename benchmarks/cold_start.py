"""Cold-start table: each model trained with ``cold_items`` and scored on cold and warm items apart.

    python benchmarks/cold_start.py --dataset NAME --data_path DIR --models M1 M2 ... [--cold_items 0.2]
                                    [--epochs N] [--seed S] [--out OUT] [--threads T] [--key=value ...]

Each model trains in its own subprocess (``run_recbole_mm`` with ``cold_items``, early stopping on
valid Recall@20, which only sees warm items); the table has the overall test Recall/NDCG@20 and the
COLD and WARM ones (recbole_mm/data/coldstart.py: each user's ground truth and ranking restricted to the
cold, resp. warm, items). ID-only models get "cannot" in the cold columns. Writes ``OUT/cold_start.md``
and ``OUT/cold_start.jsonl`` and prints the table. ``benchmarks/bench.py`` records only TEST_RESULT,
hence this script; model specs and ``--key=value`` overrides are bench.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import parse_model_spec, parse_with_overrides  # noqa: E402

METRICS = ("recall@20", "ndcg@20")


def _worker(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from recbole_mm.quick_start import run_recbole_mm

    sys.argv = [sys.argv[0]] + [f"--{k}={v}" for k, v in spec["overrides"].items()]
    config = {"data_path": spec["data_path"], "seed": spec["seed"], "show_progress": False,
              "cold_items": spec["cold_items"], "checkpoint_dir": spec["checkpoint_dir"]}
    if spec["epochs"]:
        config["epochs"] = spec["epochs"]
    result = run_recbole_mm(spec["model"], spec["dataset"], config_dict=config, print_result=False)

    def floats(r):
        return None if r is None else {k: float(v) for k, v in r.items()}

    return {"test": floats(result["test_result"]), "cold": floats(result["cold_test_result"]),
            "warm": floats(result["warm_test_result"])}


def row(model: str, result: dict) -> str:
    cells = [f"{result['test'][m]:.4f}" for m in METRICS]
    cold = result["cold"]
    cells += [f"{cold[m]:.4f}" for m in METRICS] if cold else ["cannot", "cannot"]
    cells += [f"{result['warm'][m]:.4f}" for m in METRICS]
    return f"| {model} | " + " | ".join(cells) + " |"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_worker":
        print("COLD_BENCH " + json.dumps(_worker(json.loads(argv[1]))), flush=True)
        return None
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--models", nargs="+", required=True)
    parser.add_argument("--cold_items", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=None, help="max epochs (default: the yaml's)")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--out", default="cold_out")
    parser.add_argument("--threads", type=int, default=1)
    args, overrides = parse_with_overrides(parser, argv)
    os.makedirs(args.out, exist_ok=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    header = " | ".join(f"{part} {m}" for part in ("test", "cold", "warm") for m in ("Recall@20", "NDCG@20"))
    lines = [f"| model | {header} |", "|" + " --- |" * 7]
    for spec_text in args.models:
        model, extra = parse_model_spec(spec_text)
        spec = {"model": model, "seed": args.seed, "dataset": args.dataset,
                "data_path": os.path.abspath(args.data_path), "epochs": args.epochs, "threads": args.threads,
                "overrides": {**overrides, **extra}, "cold_items": args.cold_items,
                "checkpoint_dir": os.path.abspath(os.path.join(args.out, "saved"))}
        log_path = os.path.join(args.out, f"{spec_text.replace(':', '_').replace(',', '_')}.log")
        print(f"running {spec_text} ...", file=sys.stderr, flush=True)
        with open(log_path, "w") as log:
            proc = subprocess.run([sys.executable, __file__, "--_worker", json.dumps(spec)], stdout=subprocess.PIPE,
                                  stderr=log, text=True, cwd=args.out, env=env)
        found = [line for line in proc.stdout.splitlines() if line.startswith("COLD_BENCH ")]
        if proc.returncode != 0 or not found:
            raise RuntimeError(f"{spec_text} failed with exit code {proc.returncode}; see {log_path}")
        result = json.loads(found[-1][len("COLD_BENCH "):])
        with open(os.path.join(args.out, "cold_start.jsonl"), "a") as fh:
            fh.write(json.dumps({"model": spec_text, **result}) + "\n")
        lines.append(row(spec_text, result))
        print(lines[-1], file=sys.stderr, flush=True)
    table = "\n".join(lines) + f"\n\nCommand: `python benchmarks/cold_start.py {' '.join(argv)}`\n"
    with open(os.path.join(args.out, "cold_start.md"), "w") as fh:
        fh.write(table)
    print(table)


if __name__ == "__main__":
    main()
