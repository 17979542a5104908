"""Leaderboard: every model tuned on valid over its shipped search space, retrained with K seeds,
compared on test with paired significance tests.

    python benchmarks/leaderboard.py --dataset NAME --data_path DIR --models all|M1 M2 ... [--budget N]
                                     [--seeds K] [--seed0 S] [--out OUT] [--jobs J] [--threads T]
                                     [--time_budget SECONDS] [--epochs E] [--force] [--key=value ...]

For each model: the grid of its shipped space (:mod:`recbole_mm.search_space`; ``--budget N``: a
random subset of N points drawn with seed SEED0) is trained once per point with seed SEED0 and
ranked on **valid** Recall@20 (the best epoch's, as early stopping picks it); the best point is
retrained with seeds SEED0+1 .. SEED0+K-1 (its tuning trial is the SEED0 run: same seed, same
numbers) and scored on test. Writes

* ``OUT/leaderboard.md`` / ``.csv``: test Recall/NDCG@10/20 mean ± std over the seeds, best
  hyper-parameters, s/epoch and peak RSS, and paired tests against the best model (highest mean
  test Recall@20): over the test users' per-user metrics (each user's mean over the seeds),
  ``scipy.stats.ttest_rel`` and ``wilcoxon``, Holm-corrected over the comparisons;
* ``OUT/per_user/<model>_<seed>.csv``: user token, recall@10/20, ndcg@10/20 of every test user,
  for other tests;
* ``OUT/leaderboard.png``: mean test Recall@20 / NDCG@20 with ± std error bars;
* ``OUT/journal.jsonl``: one JSON line per finished trial or seed run, appended and fsynced.
  Re-running the same command skips what the journal holds, so a killed run continues where it
  stopped (a larger ``--budget``, more ``--seeds`` or more models extend it; other settings need
  another ``--out`` or ``--force``, which starts over).

``--time_budget`` stops starting new tuning trials of a model once its trials have used that many
seconds (summed over trials, earlier runs of the command included); the seed runs always run.
Every run is its own subprocess (so its peak RSS is its own) with ``--threads`` torch threads;
``--jobs`` runs that many at once (time columns are then indicative only).
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import csv
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from benchmarks.bench import BASE_SEED, parse_with_overrides  # noqa: E402

METRICS = ("recall@10", "recall@20", "ndcg@10", "ndcg@20")
TESTED = ("recall@20", "ndcg@20")  # metrics the paired tests compare
SELECT = "recall@20"  # valid metric the trials are ranked on (bench.py's curve)
ALPHA = 0.05
# settings that change the numbers: a journal made with other values cannot be reused
SETTINGS = ("dataset", "data_path", "epochs", "seed0", "overrides")


# ---------------------------------------------------------------- statistics


def holm(pvalues):
    """Holm's step-down adjustment (Holm 1979) of a family of p-values, in their order.

    Sorted ascending, p_(i) becomes max_{j<=i} (m - j + 1) p_(j), capped at 1; NaN stays NaN and
    does not count towards m. (SciPy 1.12 has no Holm; statsmodels' multipletests gives the same.)
    """
    import numpy as np

    p = np.asarray(pvalues, dtype=float)
    out = np.full_like(p, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    m = len(valid)
    if m:
        order = valid[np.argsort(p[valid], kind="stable")]
        adjusted = np.maximum.accumulate((m - np.arange(m)) * p[order])
        out[order] = np.minimum(adjusted, 1.0)
    return out


def paired_tests(a, b) -> dict:
    """Two-sided paired t-test and Wilcoxon signed-rank test of ``a`` against ``b`` (same users):
    ``{"t": p, "wilcoxon": p}``; identical samples give p = 1."""
    import numpy as np
    from scipy import stats

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if np.allclose(a, b):
        return {"t": 1.0, "wilcoxon": 1.0}
    t_p = float(stats.ttest_rel(a, b).pvalue)
    with warnings.catch_warnings():  # ties and zero differences: scipy's normal approximation, as documented
        warnings.simplefilter("ignore", UserWarning)
        try:
            w_p = float(stats.wilcoxon(a, b).pvalue)
        except ValueError:  # every difference zero after wilcoxon's zero handling
            w_p = 1.0
    return {"t": t_p if not math.isnan(t_p) else 1.0, "wilcoxon": w_p}


def significance(per_user: dict, reference: str) -> dict:
    """``{model: {metric: {"t": p, "t_holm": p, "wilcoxon": p, "wilcoxon_holm": p}}}`` of every
    model against ``reference``. ``per_user[model]`` is a DataFrame (user + metric columns, each
    user's mean over the seeds); the tests pair the users both evaluated."""
    others = [m for m in per_user if m != reference]
    result = {m: {} for m in others}
    for metric in TESTED:
        raw = {"t": [], "wilcoxon": []}
        for m in others:
            joined = per_user[reference].merge(per_user[m], on="user", suffixes=("_ref", "_other"))
            p = paired_tests(joined[f"{metric}_other"], joined[f"{metric}_ref"])
            for test in raw:
                raw[test].append(p[test])
        for test, values in raw.items():
            adjusted = holm(values)
            for m, p, q in zip(others, values, adjusted):
                result[m].setdefault(metric, {})[test] = p
                result[m][metric][f"{test}_holm"] = float(q)
    return result


# ---------------------------------------------------------------- journal


class Journal:
    """Append-only JSON-lines record of finished runs; each line is flushed and fsynced, so a
    killed leaderboard loses at most the runs in flight. A torn last line (no newline: the record a
    killed process left half-written) is cut off, so the next record starts on a line of its own;
    any other line that is not a journal record is an error naming the file and line."""

    FIELDS = ("key", "kind", "model", "status", "wall_s")  # every record
    OK_FIELDS = ("params", "valid_" + SELECT, "test")  # a finished run

    def __init__(self, path: str):
        self.path = path
        self.records = []
        self.line_of = {}  # key -> line number of its "ok" record, for errors about its files
        self.lines = 0
        if os.path.exists(path):
            with open(path, "rb") as fh:
                data = fh.read()
            if data and not data.endswith(b"\n"):
                cut = data.rfind(b"\n") + 1
                try:
                    json.loads(data[cut:])
                    torn = False
                except ValueError:
                    torn = True
                if torn:
                    with open(path, "r+b") as fh:
                        fh.truncate(cut)
                    data = data[:cut]
                else:  # a whole record without its newline: keep it, end its line
                    with open(path, "ab") as fh:
                        fh.write(b"\n")
            lines = data.decode("utf-8", errors="replace").splitlines()
            self.lines = len(lines)
            for n, line in enumerate(lines, 1):
                if line.strip():
                    self.records.append(self._parse(line, n))
                    if self.records[-1]["status"] == "ok":
                        self.line_of[self.records[-1]["key"]] = n
        self.done = {r["key"]: r for r in self.records if r["status"] == "ok"}

    def _parse(self, line: str, n: int) -> dict:
        from recbole_mm.io import json_record

        where = f"{self.path}: line {n}"
        fix = "remove the line (its run is redone) or start another --out"
        record = json_record(line, where, lambda r: self.FIELDS + (self.OK_FIELDS if r.get("status") == "ok" else ()),
                             kind="a journal record", source="a leaderboard journal record", hint=fix)
        for field in ("wall_s", "valid_" + SELECT):
            value = record.get(field, 0.0)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ValueError(f"{where}: field {field!r} is {value!r}, not a number; {fix}")
        if record["status"] == "ok":
            test = record["test"]
            bad = [m for m in METRICS if not isinstance(test, dict) or isinstance(test.get(m), bool)
                   or not isinstance(test.get(m), (int, float))]
            if bad:
                raise ValueError(f"{where}: field 'test' has no number for {bad[0]!r}; {fix}")
        return record

    def append(self, record: dict) -> None:
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(record, sort_keys=True) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        self.records.append(record)
        self.lines += 1
        if record.get("status") == "ok":
            self.done[record["key"]] = record
            self.line_of[record["key"]] = self.lines

    def per_user(self, out: str, record: dict):
        """The per-user metrics file of ``record`` (user + :data:`METRICS` columns), checked: a
        missing file, column or non-number is an error naming the file and the journal line."""
        import pandas as pd

        path = os.path.join(out, str(record.get("per_user_csv", "")))
        origin = f"(per-user file of {self.path} line {self.line_of.get(record['key'], '?')})"
        if not record.get("per_user_csv") or not os.path.isfile(path):
            raise FileNotFoundError(f"{path}: no such file {origin}; remove that journal line to redo the run")
        try:
            frame = pd.read_csv(path, dtype={"user": str})
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"{path}: not a CSV file ({' '.join(str(exc).split())[:120]}) {origin}") from None
        missing = [c for c in ("user", *METRICS) if c not in frame.columns]
        if missing:
            raise ValueError(f"{path}: missing column(s) {missing}; found {list(frame.columns)} {origin}")
        for column in METRICS:
            values = pd.to_numeric(frame[column], errors="coerce")
            bad = (values.isna() & frame[column].notna()).to_numpy().nonzero()[0]  # text, not an empty cell
            if len(bad):
                raise ValueError(f"{path}: field {column!r} row {bad[0] + 1} (line {bad[0] + 2}) "
                                 f"(user {frame['user'].iloc[bad[0]]}): "
                                 f"{frame[column].iloc[bad[0]]!r} is not a number {origin}")
            frame[column] = values
        return frame


def run_key(kind: str, model: str, params: dict, seed: int) -> str:
    return f"{kind}|{model}|{json.dumps(params, sort_keys=True)}|{seed}"


def model_spec(model: str, params: dict) -> str:
    """``M:k=v,...`` as :func:`benchmarks.bench.parse_model_spec` reads it."""
    from recbole_mm.search_space import format_value

    return model + ":" + ",".join(f"{k}={format_value(v)}" for k, v in params.items())


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_.=" else "_" for c in text)[:150]


# ---------------------------------------------------------------- running


def _worker(job: dict) -> dict:
    """One run in this process: bench.py's measured training, then (seed runs) the per-user
    test metrics of the best checkpoint, from RecBole's evaluation (recbole_mm.evaluation)."""
    from benchmarks.bench import _worker as bench_worker
    from recbole_mm.io import atomic_write_text

    result = bench_worker(job["spec"])
    curve = [c for c in result["curve"] if c is not None]
    result["valid_" + SELECT] = max(curve) if curve else float("nan")
    if job.get("per_user_csv"):
        from recbole_mm.evaluation import per_user_from_checkpoint

        saved = sorted(Path(job["spec"]["checkpoint_dir"]).glob("*.pth"), key=os.path.getmtime)
        if not saved:
            raise RuntimeError(f"no checkpoint in {job['spec']['checkpoint_dir']}")
        frame, _ = per_user_from_checkpoint(str(saved[-1]), "test", ("recall", "ndcg"), (10, 20))
        atomic_write_text(job["per_user_csv"], frame.to_csv(index=False))
        result["per_user_csv"] = job["per_user_csv"]
    return result


def subprocess_runner(args, overrides):
    """The default runner: each job in its own ``python leaderboard.py --_worker`` process (as
    bench.py runs its own), its log in the run folder, its checkpoint removed afterwards."""
    from benchmarks.bench import parse_model_spec

    def run(job: dict) -> dict:
        run_dir = job["run_dir"]
        os.makedirs(run_dir, exist_ok=True)
        model, extra = parse_model_spec(job["spec_text"])
        spec = {"model": model, "seed": job["seed"], "dataset": args.dataset,
                "data_path": os.path.abspath(args.data_path), "epochs": args.epochs, "threads": args.threads,
                "overrides": {**overrides, **extra}, "checkpoint_dir": os.path.join(run_dir, "saved")}
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads))
        env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
        payload = json.dumps({"spec": spec, "per_user_csv": job.get("per_user_csv")})
        log_path = os.path.join(run_dir, "run.log")
        try:
            with open(log_path, "w") as log:
                proc = subprocess.run([sys.executable, os.path.abspath(__file__), "--_worker", payload],
                                      stdout=subprocess.PIPE, stderr=log, text=True, timeout=args.timeout,
                                      cwd=run_dir, env=env)
        finally:
            shutil.rmtree(spec["checkpoint_dir"], ignore_errors=True)
        lines = [line for line in proc.stdout.splitlines() if line.startswith("LEADERBOARD_RESULT ")]
        if proc.returncode != 0 or not lines:
            raise RuntimeError(f"{job['spec_text']} (seed {job['seed']}) failed with exit code "
                               f"{proc.returncode}; see {log_path}")
        return json.loads(lines[-1][len("LEADERBOARD_RESULT "):])

    return run


def _record(job: dict, result: dict = None, error: str = None, wall: float = 0.0) -> dict:
    record = {"key": job["key"], "kind": job["kind"], "model": job["model"], "params": job["params"],
              "seed": job["seed"], "wall_s": wall, "status": "ok" if error is None else "failed"}
    if error is not None:
        record["error"] = error
        return record
    record.update({"valid_" + SELECT: result["valid_" + SELECT], "best_epoch": result.get("best_epoch"),
                   "test": {k: result[k] for k in METRICS}, "train_s_per_epoch": result["train_s_per_epoch"],
                   "peak_rss_mb": result["peak_rss_mb"]})
    if result.get("per_user_csv"):
        record["per_user_csv"] = os.path.relpath(result["per_user_csv"], job["out"])
    return record


def run_jobs(jobs, runner, journal, n_jobs, progress, time_budget=None, spent=0.0, on_done=None):
    """Run ``jobs`` (``n_jobs`` at a time) and journal each as it finishes. With ``time_budget``,
    no job starts once ``spent`` plus the finished jobs' seconds reach it. Returns the jobs
    not started."""
    pending = list(jobs)
    running = {}
    with cf.ThreadPoolExecutor(max_workers=max(n_jobs, 1)) as pool:
        while pending or running:
            while pending and len(running) < n_jobs and (time_budget is None or spent < time_budget):
                job = pending.pop(0)
                running[pool.submit(_timed, runner, job)] = job
            if not running:
                break
            finished, _ = cf.wait(running, return_when=cf.FIRST_COMPLETED)
            for future in finished:
                job = running.pop(future)
                result, error, wall = future.result()
                spent += wall
                record = _record(job, result, error, wall)
                journal.append(record)
                if error is not None:
                    print(f"  {job['model']} {job['kind']} seed {job['seed']} failed: {error}", file=sys.stderr)
                progress.update(1)
                if on_done is not None:
                    on_done(record)
    return pending


def _timed(runner, job):
    start = time.perf_counter()
    try:
        return runner(job), None, time.perf_counter() - start
    except Exception as exc:  # a failed run is journaled and reported, the others go on
        return None, " ".join(str(exc).split()) or type(exc).__name__, time.perf_counter() - start


def tune_and_retrain(model, points, args, journal, runner, out):
    """Tuning trials on valid, then the seed runs of the best point; returns ``(that point or None,
the number of finished trials)``."""
    from tqdm.auto import tqdm

    def job(kind, params, seed, index):
        name = f"trial-{index:03d}" if kind == "trial" else f"seed-{seed}"
        j = {"kind": kind, "model": model, "params": params, "seed": seed, "out": out,
             "key": run_key(kind, model, params, seed), "spec_text": model_spec(model, params),
             "run_dir": os.path.join(out, "runs", model, name)}
        j["per_user_csv"] = os.path.join(j["run_dir"], "per_user.csv") if kind == "trial" else \
            os.path.join(out, "per_user", f"{_slug(model)}_{seed}.csv")
        return j

    trials = [job("trial", p, args.seed0, i) for i, p in enumerate(points)]
    todo = [t for t in trials if t["key"] not in journal.done]
    done = [journal.done[t["key"]] for t in trials if t["key"] in journal.done]
    spent = sum(r["wall_s"] for r in journal.records if r["kind"] == "trial" and r["model"] == model)
    best = {"score": max((r["valid_" + SELECT] for r in done), default=float("nan"))}
    bar = tqdm(total=len(trials), initial=len(done), desc=f"{model} tuning", unit="trial", file=sys.stderr)

    def show(record):
        if record["status"] == "ok" and not record["valid_" + SELECT] <= best["score"]:
            best["score"] = record["valid_" + SELECT]
        bar.set_postfix_str(f"best valid {SELECT} {best['score']:.4f}")

    if done:
        show(done[0])
    skipped = run_jobs(todo, runner, journal, args.jobs, bar, args.time_budget, spent, show)
    bar.close()
    if skipped:
        print(f"  {model}: --time_budget {args.time_budget} s reached, {len(skipped)} trial(s) not run",
              file=sys.stderr)
    scored = []
    for i, t in enumerate(trials):
        record = journal.done.get(t["key"])
        if record is not None and not math.isnan(record["valid_" + SELECT]):
            scored.append((record["valid_" + SELECT], -i, record["params"]))
    if not scored:
        print(f"  {model}: no finished trial, left out of the table", file=sys.stderr)
        return None, 0
    params = max(scored, key=lambda s: (s[0], s[1]))[2]  # ties: the earlier grid point
    seeds = [job("seed", params, args.seed0 + k, 0) for k in range(args.seeds)]
    first = seeds[0]
    if first["key"] not in journal.done:  # the winning trial already is the SEED0 run (same numbers)
        trial = journal.done[run_key("trial", model, params, args.seed0)]
        journal.per_user(out, trial)  # a missing or malformed file is named before it is copied
        shutil.copyfile(os.path.join(out, trial["per_user_csv"]), first["per_user_csv"])
        journal.append({**trial, "kind": "seed", "key": first["key"], "from_trial": True,
                        "per_user_csv": os.path.relpath(first["per_user_csv"], out)})
    todo = [s for s in seeds if s["key"] not in journal.done]
    bar = tqdm(total=len(seeds), initial=len(seeds) - len(todo), desc=f"{model} seeds", unit="run", file=sys.stderr)
    run_jobs(todo, runner, journal, args.jobs, bar)
    bar.close()
    return params, len(scored)


# ---------------------------------------------------------------- tables


def summarize(models_params: dict, journal: Journal, args, out: str):
    """One row per model with finished seed runs (best first, by mean test Recall@20), with the
    paired tests against the first. ``models_params``: ``{model: (best point, finished trials)}``."""
    import pandas as pd

    rows, per_user = [], {}
    for model, (params, n_trials) in models_params.items():
        if params is None:
            continue
        runs = [journal.done.get(run_key("seed", model, params, args.seed0 + k)) for k in range(args.seeds)]
        runs = [r for r in runs if r is not None]
        if not runs:
            continue
        trial = journal.done.get(run_key("trial", model, params, args.seed0))
        row = {"model": model, "n_seeds": len(runs), "best_params": params, "trials": n_trials,
               "valid_" + SELECT: trial["valid_" + SELECT] if trial else float("nan"),
               "train_s_per_epoch": sum(r["train_s_per_epoch"] for r in runs) / len(runs),
               "peak_rss_mb": max(r["peak_rss_mb"] for r in runs)}
        for metric in METRICS:
            values = [r["test"][metric] for r in runs]
            row[f"{metric}_mean"] = sum(values) / len(values)
            row[f"{metric}_std"] = pd.Series(values).std(ddof=1) if len(values) > 1 else 0.0
        rows.append(row)
        frames = [journal.per_user(out, r) for r in runs]
        per_user[model] = pd.concat(frames).groupby("user", as_index=False)[list(METRICS)].mean()
    rows.sort(key=lambda r: -r["recall@20_mean"])
    tests = significance(per_user, rows[0]["model"]) if rows else {}
    for rank, row in enumerate(rows, 1):
        row["rank"] = rank
        for metric in TESTED:
            for test in ("t", "t_holm", "wilcoxon", "wilcoxon_holm"):
                row[f"{test}_p_{metric}"] = tests.get(row["model"], {}).get(metric, {}).get(test, float("nan"))
    return rows


CSV_COLUMNS = (["rank", "model", "n_seeds"] + [f"{m}_{s}" for m in METRICS for s in ("mean", "std")]
               + [f"{t}_p_{m}" for m in TESTED for t in ("t", "t_holm", "wilcoxon", "wilcoxon_holm")]
               + ["valid_" + SELECT, "best_params", "trials", "train_s_per_epoch", "peak_rss_mb"])


def to_csv(rows) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({**row, "best_params": json.dumps(row["best_params"], sort_keys=True)})
    return buffer.getvalue()


def _marks(row, metric) -> str:
    t, w = row[f"t_holm_p_{metric}"], row[f"wilcoxon_holm_p_{metric}"]
    return ("*" if t < ALPHA else "") + ("†" if w < ALPHA else "")


def to_markdown(rows, args, command: str) -> str:
    def cell(row, metric):
        text = f"{row[f'{metric}_mean']:.4f} ± {row[f'{metric}_std']:.4f}"
        return text + (_marks(row, metric) if metric in TESTED else "")

    def pvals(row):
        if row["rank"] == 1:
            return "reference"
        return " / ".join(f"{row[f'{t}_p_recall@20']:.2g}" for t in ("t_holm", "wilcoxon_holm"))

    head = ["rank", "model", "Recall@10", "Recall@20", "NDCG@10", "NDCG@20", "p R@20 t / Wilcoxon (Holm)",
            f"valid {SELECT}", "best hyper-parameters", "trials", "s/epoch", "peak RSS MB"]
    lines = [f"## {args.dataset}: leaderboard", "",
             f"Each model tuned on valid Recall@20 over its shipped search space (budget "
             f"{args.budget if args.budget else 'whole grid'} points, seed {args.seed0}), the best point retrained "
             f"with {args.seeds} seed(s) ({args.seed0}..{args.seed0 + args.seeds - 1}); test metrics mean ± std over "
             f"the seeds. `*` / `†`: differs from the best model (rank 1) at {ALPHA} after Holm correction, "
             f"paired t-test / Wilcoxon signed-rank test over the test users (each user's mean over the seeds).", "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in rows:
        params = ", ".join(f"{k}={v}" for k, v in row["best_params"].items())
        cells = [str(row["rank"]), row["model"]] + [cell(row, m) for m in METRICS] + [
            pvals(row), f"{row['valid_' + SELECT]:.4f}", params, str(row["trials"]),
            f"{row['train_s_per_epoch']:.2f}", f"{row['peak_rss_mb']:.0f}"]
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", f"Command: `{command}`", ""]
    return "\n".join(lines)


def plot(rows, path: str, title: str) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib not installed: no leaderboard.png (pip install matplotlib)", file=sys.stderr)
        return False
    import numpy as np

    x = np.arange(len(rows))
    fig, ax = plt.subplots(figsize=(max(5.0, 0.8 * len(rows) + 2), 4.5))
    for offset, metric in ((-0.2, "recall@20"), (0.2, "ndcg@20")):
        ax.bar(x + offset, [r[f"{metric}_mean"] for r in rows], 0.4, yerr=[r[f"{metric}_std"] for r in rows],
               capsize=3, label=f"test {metric}")
    ax.set_xticks(x, [r["model"] for r in rows], rotation=45, ha="right")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    os.replace(tmp, path)
    return True


# ---------------------------------------------------------------- command line


def _shell_word(arg: str) -> str:
    """``arg`` as a shell reads it back: bare when plain, else in double quotes (readable for
    ``"--use_modalities=['text','audio']"``, unlike shlex's nested single quotes)."""
    if re.fullmatch(r"[\w@%+=:,./-]+", arg):
        return arg
    return '"' + re.sub(r'(["\\$`])', r"\\\1", arg) + '"'


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--models", nargs="+", required=True, help="model names, or `all` (every shipped space)")
    parser.add_argument("--budget", type=int, default=None, help="grid points tried per model (default: all)")
    parser.add_argument("--seeds", type=int, default=3, help="K seeds for the best point: SEED0, SEED0 + 1, ...")
    parser.add_argument("--seed0", type=int, default=BASE_SEED,
                        help=f"seed of the tuning trials and of the grid subset (default {BASE_SEED})")
    parser.add_argument("--epochs", type=int, default=None, help="max epochs (default: the yaml's)")
    parser.add_argument("--out", default="leaderboard_out")
    parser.add_argument("--jobs", type=int, default=1, help="runs at once")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per run")
    parser.add_argument("--time_budget", type=float, default=None, help="tuning seconds per model")
    parser.add_argument("--timeout", type=int, default=7200, help="seconds per run")
    parser.add_argument("--force", action="store_true", help="start over in an OUT made with other settings")
    args, overrides = parse_with_overrides(parser, argv)
    for name in ("budget", "seeds", "jobs", "threads", "epochs", "timeout"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ValueError(f"--{name} must be at least 1, got {value}")
    if args.time_budget is not None and not args.time_budget > 0:
        raise ValueError(f"--time_budget must be a positive number of seconds, got {args.time_budget}")
    if "valid_metric" in overrides or "seed" in overrides:
        raise ValueError("--valid_metric / --seed: the leaderboard selects on valid Recall@20 and sets the seeds "
                         "itself (--seed0, --seeds)")
    return args, overrides


def resolve_models(names) -> dict:
    """``{model: space}``; ``all`` = every model whose shipped space loads (others are listed)."""
    from recbole_mm.search_space import load_space, models_with_space
    from recbole_mm.utils import canonical_model_name

    if [n.lower() for n in names] == ["all"]:
        spaces = {}
        for model in models_with_space():
            try:
                spaces[model] = load_space(model)
            except ValueError as exc:
                print(f"skipping {model}: {exc}", file=sys.stderr)
        return spaces
    return {canonical_model_name(n): load_space(canonical_model_name(n)) for n in names}


def check_settings(out: str, settings: dict, force: bool) -> None:
    """Refuse to mix runs of other settings into ``out``'s journal (``--force`` starts over)."""
    from recbole_mm.io import atomic_write_text

    path = os.path.join(out, "settings.json")
    if os.path.exists(path):
        try:
            with open(path, encoding="utf-8") as fh:
                old = json.load(fh)
            problem = None if isinstance(old, dict) else f"a JSON {type(old).__name__}, not a settings object"
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            old, problem = None, f"not JSON ({getattr(exc, 'msg', exc)})"
        if problem and not force:
            raise ValueError(f"{path}: {problem}; it records the settings of the runs in this --out: restore it, "
                             "use another --out, or --force to start over")
        if old != settings:
            if not force:  # (old is a dict here)
                changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
                raise FileExistsError(f"{out}: holds a leaderboard run with other {', '.join(changed)}; "
                                      "use another --out, or --force to start over")
            for name in ("per_user", "runs"):
                shutil.rmtree(os.path.join(out, name), ignore_errors=True)
            if os.path.exists(os.path.join(out, "journal.jsonl")):
                os.remove(os.path.join(out, "journal.jsonl"))
    atomic_write_text(path, json.dumps(settings, sort_keys=True, indent=1) + "\n")


def main(argv=None, runner=None):
    """Tune, retrain, test, write the tables. ``runner(job) -> result`` replaces the subprocess
    runner (tests)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_worker":
        print("LEADERBOARD_RESULT " + json.dumps(_worker(json.loads(argv[1]))), flush=True)
        return 0
    from recbole_mm.cli import run_main

    return run_main(lambda a: _main(a, runner), argv)


def _main(argv, runner=None):
    from recbole_mm.io import atomic_write_text
    from recbole_mm.search_space import grid_points

    args, overrides = parse_args(argv)
    spaces = resolve_models(args.models)  # a bad model or space fails before any training
    out = os.path.abspath(args.out)
    if os.path.exists(out) and not os.path.isdir(out):
        raise NotADirectoryError(f"--out {args.out}: is a file, not a folder")
    os.makedirs(out, exist_ok=True)
    settings = {"dataset": args.dataset, "data_path": os.path.abspath(args.data_path), "epochs": args.epochs,
                "seed0": args.seed0, "overrides": overrides}
    check_settings(out, settings, args.force)
    os.makedirs(os.path.join(out, "per_user"), exist_ok=True)
    journal = Journal(os.path.join(out, "journal.jsonl"))
    runner = runner or subprocess_runner(args, overrides)
    chosen = {}
    for index, (model, space) in enumerate(spaces.items(), 1):
        points = grid_points(space, args.budget, args.seed0)
        print(f"[{index}/{len(spaces)}] {model}: {len(points)} trial(s) of a {math.prod(map(len, space.values()))}"
              f"-point grid, then {args.seeds} seed(s)", file=sys.stderr, flush=True)
        chosen[model] = tune_and_retrain(model, points, args, journal, runner, out)
    rows = summarize(chosen, journal, args, out)
    command = "python benchmarks/leaderboard.py " + " ".join(map(_shell_word, argv))
    atomic_write_text(os.path.join(out, "leaderboard.csv"), to_csv(rows))
    table = to_markdown(rows, args, command)
    atomic_write_text(os.path.join(out, "leaderboard.md"), table)
    if rows:
        plot(rows, os.path.join(out, "leaderboard.png"), f"{args.dataset}: test metrics, mean ± std over seeds")
    print(table)
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
