"""Hyper-parameter search: RecBole's HyperTuning (hyperopt) driving recbole_mm's objective.

    python run_hyper.py --model=FREEDOM --dataset=lfm2k --data_path=DIR [--params_file=hyper.test]
                        [--budget=N] [--max_evals=N] [--algo=exhaustive|random|bayes] [--early_stop=N]
                        [--output_file=hyper_result.md] [--config_files="a.yaml b.yaml"] [--key=value ...]

Without ``--params_file`` the search runs over the space that ships with the model (its yaml's
``search_space:`` block, or ``properties/baselines/<Model>.yaml`` for a RecBole built-in; see
:mod:`recbole_mm.search_space`). The params file is RecBole's format, one parameter a line:
``learning_rate choice [0.01,0.001]``, ``reg_weight loguniform -9,-3``, ``dropout uniform 0,0.5`` ...
``--budget N`` caps the trials: for a grid (exhaustive) a seeded random subset of N grid points
(seed: ``--seed``, else the configuration's ``seed``), for random/bayes N evaluations. Trials are
ranked on the valid metric (``valid_metric``, Recall@20 by default): test numbers are reported,
never used to select.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from functools import partial

from recbole_mm.compat import grid_search, hyper_tuning_class
from recbole_mm.io import atomic_write_text
from recbole_mm.quick_start import objective_function
from recbole_mm.utils import canonical_model_name


def build_parser():
    parser = argparse.ArgumentParser(description="hyperopt search over a recbole_mm or RecBole model")
    parser.add_argument("--model", required=True)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--params_file", default=None,
                        help="search space, RecBole's params file format (default: the model's shipped space)")
    parser.add_argument("--budget", type=int, default=None,
                        help="at most N trials: a seeded random subset of a grid (exhaustive), else N evaluations")
    parser.add_argument("--config_files", default=None, help="space-separated fixed yaml files")
    parser.add_argument("--algo", default="exhaustive", choices=["exhaustive", "random", "bayes"])
    parser.add_argument("--max_evals", type=int, default=100, help="trials for random/bayes (exhaustive: all)")
    parser.add_argument("--early_stop", type=int, default=10, help="stop after N trials without improvement")
    parser.add_argument("--output_file", default="hyper_result.md", help="result table (markdown)")
    return parser


def result_table(tuner, metric_keys=("recall@20", "ndcg@20")) -> str:
    """Markdown table: one row per trial, best (by valid score) first."""
    rows = []
    for params, result in tuner.params2result.items():
        valid = result["best_valid_result"] or {}
        test = result["test_result"] or {}
        rows.append((result["best_valid_score"], params, valid, test))
    bigger = next(iter(tuner.params2result.values()))["valid_score_bigger"] if rows else True
    rows.sort(key=lambda r: r[0], reverse=bigger)
    head = "| params | valid score | " + " | ".join(f"valid {k}" for k in metric_keys) + " | " + \
        " | ".join(f"test {k}" for k in metric_keys) + " |"
    sep = "|" + "---|" * (2 + 2 * len(metric_keys))
    lines = [head, sep]
    for score, params, valid, test in rows:
        cells = [params, f"{score:.4f}"] + [f"{valid.get(k, float('nan')):.4f}" for k in metric_keys] + \
            [f"{test.get(k, float('nan')):.4f}" for k in metric_keys]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def search_seed(extra_argv, config_files=None) -> int:
    """The seed that draws a budgeted grid subset: ``--seed=N`` among the overrides, else the
    fixed config files' ``seed``, else recbole_mm's default (``properties/overall.yaml``)."""
    import yaml

    from recbole_mm.config import properties_dir

    for item in reversed(extra_argv):
        if item.startswith("--seed="):
            return int(item.split("=", 1)[1])
    for path in reversed(config_files or []):
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        if "seed" in data:
            return int(data["seed"])
    with open(properties_dir() / "overall.yaml", encoding="utf-8") as fh:
        return int(yaml.safe_load(fh)["seed"])


def build_tuner(args, objective, files, extra_argv):
    """RecBole's HyperTuning over the params file or the shipped space, capped by ``--budget``;
    returns ``(tuner, description of the space)``."""
    from recbole.trainer.hyper_tuning import _spacesize

    from recbole_mm import search_space

    if args.params_file:
        source, space_kwargs = args.params_file, {"params_file": args.params_file}
    else:
        space, decode = search_space.hyperopt_choices(search_space.load_space(args.model))
        source = f"shipped space ({search_space.space_file(args.model).name})"
        space_kwargs = {"params_dict": {"choice": space}}
        inner = objective

        def objective(config_dict, config_file_list):
            return inner(decode(config_dict), config_file_list)
    if args.budget is not None and args.budget < 1:
        raise ValueError(f"--budget must be at least 1, got {args.budget}")
    max_evals = args.budget if args.budget is not None and args.algo != "exhaustive" else args.max_evals
    tuner = hyper_tuning_class()(objective, algo=args.algo, early_stop=args.early_stop, max_evals=max_evals,
                                 fixed_config_file_list=files, **space_kwargs)
    if args.algo == "exhaustive" and args.budget is not None:
        order = list(tuner.space)  # the file's / yaml's order, as the leaderboard samples it
        sizes = [_spacesize({n: tuner.space[n]}) for n in order]
        seed = search_seed(extra_argv, files)
        chosen = search_space.sample_indices(sizes, args.budget, seed)
        names = sorted(order)  # hyperopt's (and grid_search's) order
        points = [tuple(p[order.index(n)] for n in names) for p in chosen]
        tuner.algo = partial(grid_search, names=names, points=points)
        tuner.max_evals = len(points)
        source += f", {len(points)} of {math.prod(sizes)} grid points (seed {seed})"
    return tuner, source


def main(argv=None) -> int:
    """``run_hyper.py``: exit status 0, or 2 after one line ``error: ...`` on stderr for bad input."""
    import logging

    from recbole_mm.cli import run_main

    # hyperopt logs a failing trial's exception ("job exception: ...") before re-raising it; the
    # re-raised error is reported once, by run_main (with its traceback if it is a bug)
    logging.getLogger("hyperopt.fmin").setLevel(logging.CRITICAL)

    def search(argv):
        args, extra = build_parser().parse_known_args(argv)
        files = args.config_files.strip().split(" ") if args.config_files else None
        args.model = canonical_model_name(args.model)
        fixed = {"model": args.model, "dataset": args.dataset}

        def objective(config_dict, config_file_list):
            return objective_function({**fixed, **(config_dict or {})}, config_file_list)

        tuner, source = build_tuner(args, objective, files, extra)
        tuner.run()
        table = result_table(tuner)
        best = {k: (v.item() if hasattr(v, "item") else v) for k, v in (tuner.best_params or {}).items()}
        best_result = tuner.params2result[tuner.params2str(tuner.best_params)]
        report = (
            f"# Hyper-parameter search: {args.model} on {args.dataset}\n\n"
            f"Selected on the validation set ({args.algo}, {len(tuner.params2result)} trials; "
            f"search space: {source}).\n\n"
            f"Best params: `{json.dumps(best)}`\n\n{table}"
        )
        atomic_write_text(args.output_file, report)
        print(table)
        print("BEST_PARAMS " + json.dumps(best))
        print("BEST_VALID " + json.dumps({k: float(v) for k, v in best_result["best_valid_result"].items()}))
        print("BEST_TEST " + json.dumps({k: float(v) for k, v in best_result["test_result"].items()}))
        return tuner

    return run_main(search, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    raise SystemExit(main())
