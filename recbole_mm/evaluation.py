"""Per-user metrics from RecBole's own evaluation: the paired significance tests of a leaderboard
need each test user's Recall/NDCG, which ``trainer.evaluate`` averages away.

:func:`per_user_metrics` runs the trainer's ``evaluate`` unchanged, keeps the ``rec.topk``
struct its Collector built (hits of the top-k list plus each user's number of positives), and
applies the metric classes' ``metric_info`` to it: the same numbers RecBole averages, one row a
user. ``python -m recbole_mm.evaluation --model_file saved/M.pth --out per_user.csv`` does it for
a saved checkpoint (``--force`` to overwrite the CSV).
"""

from __future__ import annotations

import argparse
import inspect
import sys

_TOPK_METRICS = ("recall", "ndcg", "precision", "map", "hit", "mrr")


class _CapturingEvaluator:
    """Delegates to the trainer's Evaluator and keeps the last struct it was given."""

    def __init__(self, inner):
        self.inner, self.struct = inner, None

    def evaluate(self, struct):
        self.struct = struct
        return self.inner.evaluate(struct)


def check_request(config, metrics, ks) -> list:
    """``metrics`` lower-cased, after checking them and ``ks`` against the run's ``config``: top-k
    metrics only, each k a positive integer no larger than the largest configured ``topk``."""
    metrics = [str(m).lower() for m in metrics]
    bad = [m for m in metrics if m not in _TOPK_METRICS]
    if bad:
        raise ValueError(f"per-user metrics: {bad} are not top-k metrics ({list(_TOPK_METRICS)})")
    if not len(ks):
        raise ValueError("per-user metrics: --ks is empty; give the cut-offs, e.g. --ks 10 20")
    low = [k for k in ks if isinstance(k, bool) or not isinstance(k, int) or k < 1]
    if low:
        raise ValueError(f"per-user metrics: --ks must be positive integers, got {low[0]!r}")
    if max(ks) > max(config["topk"]):
        raise ValueError(f"per-user metrics: k={max(ks)} exceeds the configured topk {config['topk']}")
    return metrics


def per_user_metrics(trainer, eval_data, metrics=("recall", "ndcg"), ks=(10, 20), load_best_model=False):
    """``(DataFrame, averaged)``: one row per evaluated user (``user`` token, then ``<metric>@<k>``),
    and the dict RecBole's ``trainer.evaluate`` returned for the same pass (its means, rounded)."""
    import pandas as pd
    from recbole.evaluator.register import metrics_dict

    config = trainer.config
    metrics = check_request(config, metrics, ks)
    capture = _CapturingEvaluator(trainer.evaluator)
    trainer.evaluator = capture
    try:
        averaged = trainer.evaluate(eval_data, load_best_model=load_best_model, show_progress=False)
    finally:
        trainer.evaluator = capture.inner
    struct = capture.struct
    dataset = eval_data._dataset
    uid_field = dataset.uid_field
    users = dataset.id2token(uid_field, eval_data.uid_list)
    columns = {"user": users}
    for name in metrics:
        metric = metrics_dict[name](config)
        pos_index, pos_len = metric.used_info(struct)
        # (users, max topk), column k-1 = metric@k; Precision/Hit/MRR take the hits only
        takes_len = len(inspect.signature(metric.metric_info).parameters) > 1
        values = metric.metric_info(pos_index, pos_len) if takes_len else metric.metric_info(pos_index)
        if values.shape[0] != len(users):
            raise RuntimeError(f"per-user metrics: {values.shape[0]} ranked rows for {len(users)} users")
        for k in ks:
            columns[f"{name}@{k}"] = values[:, k - 1]
    return pd.DataFrame(columns), dict(averaged or {})


def per_user_from_checkpoint(model_file: str, split: str = "test", metrics=("recall", "ndcg"), ks=(10, 20)):
    """:func:`per_user_metrics` of a checkpoint written by ``fit`` on its ``split`` (test or valid)."""
    from recbole_mm.quick_start import load_data_and_model
    from recbole_mm.recommend import check_checkpoint
    from recbole_mm.utils import get_trainer

    check_request(check_checkpoint(model_file, "--model_file"), metrics, ks)  # before the (slow) load
    config, model, _, _, valid_data, test_data = load_data_and_model(model_file)
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    return per_user_metrics(trainer, test_data if split == "test" else valid_data, metrics, ks)


def main(argv=None) -> int:
    """``python -m recbole_mm.evaluation``: per-user metrics of a checkpoint to a CSV."""
    from recbole_mm.cli import run_main
    from recbole_mm.io import atomic_write_text
    from recbole_mm.recommend import check_target

    def run(argv):
        parser = argparse.ArgumentParser(description="per-user Recall/NDCG of a saved model, one CSV row a user")
        parser.add_argument("--model_file", required=True)
        parser.add_argument("--out", required=True, help="CSV to write")
        parser.add_argument("--split", default="test", choices=["test", "valid"])
        parser.add_argument("--metrics", nargs="+", default=["recall", "ndcg"])
        parser.add_argument("--ks", nargs="+", type=int, default=[10, 20])
        parser.add_argument("--threads", type=int, default=None)
        parser.add_argument("--force", action="store_true", help="overwrite --out")
        args = parser.parse_args(argv)
        if args.threads is not None and args.threads < 1:
            raise ValueError(f"--threads must be a positive integer, got {args.threads}")
        check_target(args.out, args.force)
        if args.threads:
            import torch

            torch.set_num_threads(args.threads)
        frame, averaged = per_user_from_checkpoint(args.model_file, args.split, args.metrics, args.ks)
        check_target(args.out, args.force)  # again: it may have appeared meanwhile
        atomic_write_text(args.out, frame.to_csv(index=False))
        print("PER_USER " + " ".join(f"{c}={frame[c].mean():.4f}" for c in frame.columns if c != "user"))
        return frame

    return run_main(run, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
