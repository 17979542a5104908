"""Training-epoch time of several models relative to the first, measured in one process.

    python benchmarks/epoch_ratio.py --dataset NAME --data_path DIR --models BASE M2 M3 ...
                                     [--rounds R] [--threads T] [--no-eval] [--key=value ...]

``bench.py`` times each model in its own process, one after the other, so a drift in the machine's
speed between two runs (on our shared 2-core machine the same FREEDOM epoch has measured 0.26 s
and 0.40 s within half an hour) lands in the ratio. Here every model is built once in one process
and their training epochs alternate, round after round (BASE, M2, M3, BASE, M2, M3 ...), each
followed by its validation epoch as in a real run (``--no-eval`` skips those). The per-model
median epoch and the median over rounds of each model's epoch divided by BASE's epoch of the same
round are then robust to both slow drift and single slow epochs. The first round (warm-up) is
run but not counted. Models take ``bench.py``'s specs (``"FREEDOM:modality_weights={'audio_vggish':0.1}"``);
``--key=value`` applies to all of them.

``--clock cpu`` counts the process's CPU seconds instead of elapsed ones: on a machine that other
work keeps busy, CPU time per epoch barely moves while wall time multiplies.

Prints one line per model: median and min seconds per training epoch, and the median paired
ratio to BASE with its spread (25th-75th percentile over rounds).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench import parse_model_spec, parse_with_overrides  # noqa: E402  (a script beside this one, not a package)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--models", nargs="+", required=True, help="the first is the baseline of the ratios")
    parser.add_argument("--rounds", type=int, default=15, help="counted rounds (one warm-up round is added)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--no-eval", dest="evaluate", action="store_false", help="no validation epoch between")
    parser.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                        help="wall: elapsed seconds; cpu: the process's CPU seconds (time.process_time), far "
                             "less disturbed by other load on a busy machine, but blind to idle waits")
    args, overrides = parse_with_overrides(parser, argv)
    if len(args.models) < 2 or args.rounds < 1:
        parser.error("give a baseline and at least one other model, and --rounds >= 1")
    return args, overrides


def build(spec: str, args, overrides: dict):
    """Model, trainer and dataloaders for one spec; overrides go through RecBole's command line
    parsing (as in ``bench.py``'s worker), so values are read exactly as ``--key=value`` would be."""
    from recbole_mm.config import Config
    from recbole_mm.quick_start import prepare

    name, extra = parse_model_spec(spec)
    argv, sys.argv = sys.argv, [sys.argv[0]] + [f"--{k}={v}" for k, v in {**overrides, **extra}.items()]
    try:
        config = Config(model=name, dataset=args.dataset,
                        config_dict={"data_path": args.data_path, "seed": args.seed, "show_progress": False})
    finally:
        sys.argv = argv
    _, (train_data, valid_data, _), model, trainer = prepare(config)
    return trainer, train_data, valid_data


def percentile(values, q):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def main(argv=None):
    args, overrides = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    runs = {spec: build(spec, args, overrides) for spec in args.models}
    times = {spec: [] for spec in args.models}
    for r in range(args.rounds + 1):
        for spec, (trainer, train_data, valid_data) in runs.items():
            start = clock()
            trainer._train_epoch(train_data, r)
            seconds = clock() - start
            if args.evaluate:
                trainer._valid_epoch(valid_data)
            if r:  # round 0 warms up allocators and caches
                times[spec].append(seconds)
        if r:
            print(f"round {r}: " + ", ".join(f"{t[-1]:.3f}" for t in times.values()), file=sys.stderr, flush=True)
    base = times[args.models[0]]
    print(f"{args.dataset}, {args.rounds} rounds, {args.threads} threads; {args.clock} seconds per training epoch and paired ratio "
          f"to {args.models[0]}")
    for spec, ts in times.items():
        ratios = [t / b for t, b in zip(ts, base)]
        print(f"{spec}: median {statistics.median(ts):.3f} s, min {min(ts):.3f} s; ratio median "
              f"{statistics.median(ratios):.2f} (25-75%: {percentile(ratios, 0.25):.2f}-{percentile(ratios, 0.75):.2f})")
    return times


if __name__ == "__main__":
    main()
