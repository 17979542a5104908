"""Cold-start table: each model trained with ``cold_items`` and scored on cold and warm items apart.

    python benchmarks/cold_start.py --dataset NAME --data_path DIR --models M1 M2 ... [--cold_items 0.2]
                                    [--epochs N] [--seed S] [--out OUT] [--threads T] [--key=value ...]

Each model trains in its own subprocess (``run_recbole_mm`` with ``cold_items``, early stopping on
valid Recall@20, which only sees warm items); the table has the overall test Recall/NDCG@20 and the
COLD and WARM ones (recbole_mm/data/coldstart.py: each user's ground truth and ranking restricted to the
cold, resp. warm, items). ID-only models get "cannot" in the cold columns. Writes ``OUT/cold_start.md``
and ``OUT/cold_start.jsonl`` and prints the table. Each run is ``benchmarks/bench.py``'s (its
subprocess, log and measurements, which record COLD/WARM_TEST_RESULT when ``cold_items`` is set);
model specs and ``--key=value`` overrides are bench.py's.

    python benchmarks/cold_start.py --from_jsonl OUT1/cold_start.jsonl OUT2/cold_start.jsonl [--out OUT]

trains nothing: it writes the table of results already in those files (models run as several
processes side by side, one ``--out`` each), in the order given.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import parse_with_overrides, run_one  # noqa: E402

METRICS = ("recall@20", "ndcg@20")


def row(model: str, result: dict) -> str:
    cells = [str(result.get("best_epoch"))] + [f"{result['test_result'][m]:.4f}" for m in METRICS]
    cold = result["cold_test_result"]
    cells += [f"{cold[m]:.4f}" for m in METRICS] if cold else ["cannot", "cannot"]
    cells += [f"{result['warm_test_result'][m]:.4f}" for m in METRICS]
    return f"| {model} | " + " | ".join(cells) + " |"


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset")
    parser.add_argument("--data_path")
    parser.add_argument("--models", nargs="+")
    parser.add_argument("--from_jsonl", nargs="+", default=None, metavar="JSONL",
                        help="only write the table of these cold_start.jsonl files (no training)")
    parser.add_argument("--cold_items", type=float, default=0.2)
    parser.add_argument("--epochs", type=int, default=None, help="max epochs (default: the yaml's)")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--out", default="cold_out")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=None, help="seconds per run")
    args, overrides = parse_with_overrides(parser, argv)
    if args.from_jsonl is None and not (args.dataset and args.data_path and args.models):
        parser.error("--dataset, --data_path and --models are required (unless --from_jsonl)")
    os.makedirs(args.out, exist_ok=True)
    header = " | ".join(f"{part} {m}" for part in ("test", "cold", "warm") for m in ("Recall@20", "NDCG@20"))
    lines = [f"| model | best epoch | {header} |", "|" + " --- |" * 8]
    if args.from_jsonl is not None:
        for path in args.from_jsonl:
            with open(path) as fh:
                lines += [row(r["model"], r) for r in map(json.loads, filter(str.strip, fh))]
    overrides = {**overrides, "cold_items": args.cold_items}
    for spec_text in args.models if args.from_jsonl is None else []:
        print(f"running {spec_text} ...", file=sys.stderr, flush=True)
        result = run_one(args, overrides, spec_text, args.seed)
        with open(os.path.join(args.out, "cold_start.jsonl"), "a") as fh:
            fh.write(json.dumps({key: result[key] for key in ("model", "seed", "best_epoch", "test_result",
                                                             "cold_test_result", "warm_test_result")}) + "\n")
        lines.append(row(spec_text, result))
        print(lines[-1], file=sys.stderr, flush=True)
    table = "\n".join(lines) + f"\n\nCommand: `python benchmarks/cold_start.py {' '.join(argv)}`\n"
    with open(os.path.join(args.out, "cold_start.md"), "w") as fh:
        fh.write(table)
    print(table)


if __name__ == "__main__":
    main()
