"""Peak memory of training and full-ranking evaluation, stage by stage, per model.

    python benchmarks/memory.py --dataset elec_syn --data_path /tmp/syn/data --models GRCN DualGNN \
        [--epochs 2] [--batches N] [--threads 1] [--out OUT] [--skip_eval] [--rounds R] [--key=value ...]

Each model runs in its own subprocess (so its peak RSS is its own): the dataset and dataloaders,
the model (its graphs and KNN), ``--epochs`` training epochs through the model's trainer (the same
``_train_epoch`` as ``run_recbole_mm``, ``pre_epoch_processing`` included), then one full-ranking
evaluation of the validation split. ``--batches N`` stops each epoch after N batches: on an
Elec-sized catalogue one epoch is hundreds of batches, each of them propagating the whole graph
at one thread, and a batch allocates the same tensors as the one before it, so the peak is
reached in the first batches; the script records the resident set after every batch so that
claim is checked on each run (``rss_first_batch_mb`` against ``rss_last_batch_mb``), and it
extrapolates the full epoch's seconds from the median batch. ``--batches 0`` runs whole epochs.

Peaks are the kernel's high-water mark (``VmHWM``), reset between stages through
``/proc/self/clear_refs``, so each stage's peak is its own. Writes ``OUT/memory.jsonl`` (one
line per model) and prints a markdown table. ``--rounds R`` runs the model list R times in turn, so
that the s/batch of two settings (``MMGCN MMGCN:cpu_allocator_tuning=False``) are measured
alternating and slow drift of the machine lands on both; ``--skip_eval`` leaves out the evaluation.
"""

from __future__ import annotations

import itertools
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import dataset_parser, launch_worker, parse_model_spec, parse_with_overrides  # noqa: E402

def _status_mb(field: str) -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"/proc/self/status has no {field}")


def _reset_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0); False where the kernel refuses."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


class LimitedBatches:
    """A dataloader that yields at most ``limit`` batches (all when 0) and records the resident set
    after each batch has been trained on (read when the trainer asks for the next one)."""

    def __init__(self, loader, limit: int):
        self.loader, self.limit = loader, limit
        self.rss, self.batch_s = [], []

    def __len__(self):
        return len(self.loader) if not self.limit else min(self.limit, len(self.loader))

    def __getattr__(self, name):  # sampler, shuffle, _dataset... are the wrapped loader's
        return getattr(self.loader, name)

    def __iter__(self):
        batches = iter(self.loader) if not self.limit else itertools.islice(iter(self.loader), self.limit)
        start = None
        for batch in batches:
            if start is not None:
                self.batch_s.append(time.perf_counter() - start)
                self.rss.append(_status_mb("VmRSS"))
            start = time.perf_counter()
            yield batch
        if start is not None:
            self.batch_s.append(time.perf_counter() - start)
            self.rss.append(_status_mb("VmRSS"))


def _worker(spec: dict) -> dict:
    import torch

    torch.set_num_threads(spec["threads"])
    from recbole.utils import init_logger, init_seed

    from recbole_mm.config import Config
    from recbole_mm.quick_start import build_model, prepare_data

    sys.argv = [sys.argv[0]] + [f"--{k}={v}" for k, v in spec["overrides"].items()]
    config = Config(model=spec["model"], dataset=spec["dataset"],
                    config_dict={"data_path": spec["data_path"], "seed": spec["seed"], "show_progress": False,
                                 "checkpoint_dir": spec["checkpoint_dir"]})
    init_seed(config["seed"], config["reproducibility"])
    init_logger(config)
    out = {"model": spec["model"], "resettable": _reset_peak(), "rss_start_mb": _status_mb("VmRSS")}
    peaks, seconds = {}, {}

    def stage(name, start):
        peaks[name], seconds[name] = _status_mb("VmHWM"), time.perf_counter() - start
        print(f"  {name}: {seconds[name]:.1f} s, peak {peaks[name]:.0f} MB", file=sys.stderr, flush=True)
        _reset_peak()

    start = time.perf_counter()
    _, (train_data, valid_data, _) = prepare_data(config)
    stage("data", start)
    start = time.perf_counter()
    _, trainer = build_model(config, train_data)
    stage("model", start)
    start = time.perf_counter()
    limited = LimitedBatches(train_data, spec["batches"])
    trainer.eval_collector.data_collect(train_data)
    for epoch in range(spec["epochs"]):
        first = len(limited.rss)
        trainer._train_epoch(limited, epoch)
        print(f"  epoch {epoch}: {len(limited.rss) - first} batches, RSS {limited.rss[-1]:.0f} MB",
              file=sys.stderr, flush=True)
    stage("train", start)
    start = time.perf_counter()
    result = {"recall@20": float("nan")} if spec.get("skip_eval") else trainer.evaluate(valid_data, load_best_model=False)
    stage("eval", start)
    median_batch = statistics.median(limited.batch_s)
    out.update({
        "peak_mb": {k: round(v, 1) for k, v in peaks.items()}, "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "peak_rss_mb": round(max(peaks.values()), 1), "batches_per_epoch": len(train_data),
        "epochs": spec["epochs"], "batches_run": len(limited.rss), "median_batch_s": median_batch,
        "full_epoch_s_estimate": median_batch * len(train_data),
        "rss_first_batch_mb": round(limited.rss[0], 1), "rss_last_batch_mb": round(limited.rss[-1], 1),
        "rss_batches_mb": [round(x) for x in limited.rss], "valid_recall@20": float(result["recall@20"]),
    })
    return out


def run_one(args, overrides, model_spec: str) -> dict:
    model, extra = parse_model_spec(model_spec)
    spec = {"model": model, "seed": args.seed, "dataset": args.dataset, "data_path": os.path.abspath(args.data_path),
            "epochs": args.epochs, "batches": args.batches, "threads": args.threads, "skip_eval": args.skip_eval,
            "overrides": {**overrides, **extra}, "checkpoint_dir": os.path.abspath(os.path.join(args.out, "saved"))}
    log_path = os.path.join(args.out, f"{model_spec.replace(':', '_').replace(',', '_')}.log")
    result = launch_worker(__file__, spec, args.threads, args.timeout, args.out, log_path, "MEMORY_RESULT", model_spec)
    result["model"] = model_spec
    return result


def table_row(r: dict) -> str:
    p = r["peak_mb"]
    return (f"| {r['model']} | {p['data']:.0f} | {p['model']:.0f} | {p['train']:.0f} | {p['eval']:.0f} | "
            f"**{r['peak_rss_mb']:.0f}** | {r['rss_first_batch_mb']:.0f} → {r['rss_last_batch_mb']:.0f} | "
            f"{r['batches_run'] // r['epochs']} of {r['batches_per_epoch']} | {r['median_batch_s']:.2f} | "
            f"{r['full_epoch_s_estimate'] / 60:.1f} | {r['seconds']['eval']:.0f} |")


HEADER = ("| model | peak MB: data | model (graphs) | training | evaluation | overall | RSS first → last batch | "
          "batches per epoch run | s/batch | full epoch (min, est.) | evaluation s |\n|---|---|---|---|---|---|---|---|---|---|---|")


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_worker":
        print("MEMORY_RESULT " + json.dumps(_worker(json.loads(argv[1]))), flush=True)
        return None
    parser = dataset_parser(__doc__)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batches", type=int, default=0, help="batches per epoch (0: the whole epoch)")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--timeout", type=int, default=7200, help="seconds per model")
    parser.add_argument("--out", default="memory_out")
    parser.add_argument("--skip_eval", action="store_true",
                        help="no evaluation stage (its column then shows what training left resident)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run the model list this many times, alternating (for s/batch ratios that drift cancels)")
    args, overrides = parse_with_overrides(parser, argv)
    os.makedirs(args.out, exist_ok=True)
    rows = []
    with open(os.path.join(args.out, "memory.jsonl"), "a") as fh:
        for model in [m for _ in range(args.rounds) for m in args.models]:
            print(f"running {model} ...", file=sys.stderr, flush=True)
            try:
                row = run_one(args, overrides, model)
            except (RuntimeError, subprocess.TimeoutExpired) as exc:  # the other models still run
                print(f"  {exc}", file=sys.stderr, flush=True)
                continue
            rows.append(row)
            fh.write(json.dumps(row) + "\n")
            fh.flush()
            print("  " + table_row(row), file=sys.stderr, flush=True)
    print(HEADER)
    for row in rows:
        print(table_row(row))
    return rows


if __name__ == "__main__":
    main()
