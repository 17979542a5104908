"""benchmarks/leaderboard.py: Holm and the paired tests against hand-computed numbers, resume and
budgets with a fake runner, per-user metrics against RecBole's, one real run on a tiny dataset."""

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from benchmarks import leaderboard as lb  # noqa: E402


def test_holm_against_a_hand_example():
    # sorted 0.01, 0.03, 0.04 -> 3 * 0.01 = 0.03, 2 * 0.03 = 0.06, max(0.06, 1 * 0.04) = 0.06
    np.testing.assert_allclose(lb.holm([0.01, 0.04, 0.03]), [0.03, 0.06, 0.06])
    np.testing.assert_allclose(lb.holm([0.5, 0.9]), [1.0, 1.0])  # capped at 1
    out = lb.holm([0.02, float("nan"), 0.01])  # NaN is not a hypothesis
    assert math.isnan(out[1]) and np.allclose(out[[0, 2]], [0.02, 0.02])


def test_paired_tests_against_hand_computed_values():
    b = np.array([0.1, 0.3, 0.2, 0.5])
    a = b + np.array([1.0, 2.0, 3.0, 4.0])
    # differences 1..4: mean 2.5, sd sqrt(5/3), t = 2.5 / (sd / 2) = 3.8730, df 3, whose two-sided
    # p-value has a closed form: 1 - (2 / pi) * (x / (1 + x^2) + atan(x)), x = t / sqrt(3)
    t = 2.5 / (math.sqrt(5 / 3) / 2)
    x = t / math.sqrt(3)
    p_t = 1 - (2 / math.pi) * (x / (1 + x * x) + math.atan(x))
    # Wilcoxon, exact: all four signed ranks positive; P(W- = 0) = 1/16 per side
    p = lb.paired_tests(a, b)
    assert p["t"] == pytest.approx(p_t, rel=1e-9) and p["t"] == pytest.approx(0.0305, abs=1e-4)
    assert p["wilcoxon"] == pytest.approx(2 / 16)
    assert lb.paired_tests(b, b) == {"t": 1.0, "wilcoxon": 1.0}


def test_significance_corrects_over_the_comparisons():
    users = [str(u) for u in range(30)]
    rng = np.random.default_rng(0)
    base = rng.random(30)
    frames = {}
    for name, shift in (("best", 0.3), ("close", 0.29), ("far", 0.0)):
        values = np.clip(base + shift + rng.normal(0, 0.01, 30), 0, 2)
        frames[name] = pd.DataFrame({"user": users, "recall@20": values, "ndcg@20": values / 2})
    result = lb.significance(frames, "best")
    assert set(result) == {"close", "far"}
    raw = [result[m]["recall@20"]["t"] for m in ("close", "far")]
    np.testing.assert_allclose([result[m]["recall@20"]["t_holm"] for m in ("close", "far")], lb.holm(raw))
    assert result["far"]["recall@20"]["t_holm"] < 0.05 and result["far"]["ndcg@20"]["wilcoxon_holm"] < 0.05


def test_journal_skips_a_torn_line_and_keeps_failures_out(tmp_path):
    path = tmp_path / "journal.jsonl"
    journal = lb.Journal(str(path))
    base = {"kind": "trial", "model": "BPR", "wall_s": 1.0}
    journal.append({**base, "key": "a", "status": "ok", "params": {}, "valid_recall@20": 0.1,
                    "test": {m: 0.1 for m in lb.METRICS}})
    journal.append({**base, "key": "b", "status": "failed", "error": "boom"})
    with open(path, "a") as fh:
        fh.write('{"key": "c", "sta')  # a killed writer
    again = lb.Journal(str(path))
    assert set(again.done) == {"a"} and len(again.records) == 2
    assert path.read_text().endswith("}\n")  # the torn line is cut off: the next record gets its own line


class FakeRunner:
    """Deterministic results from the point and seed; writes the per-user file a real run would."""

    def __init__(self):
        self.calls = []

    def __call__(self, job):
        self.calls.append((job["kind"], job["model"], json.dumps(job["params"], sort_keys=True), job["seed"]))
        lr = job["params"].get("learning_rate", 0.001)
        score = 0.3 + 10 * lr + 0.001 * (job["seed"] - 2020)
        users = [str(u) for u in range(12)]
        per_user = pd.DataFrame({"user": users, **{m: np.linspace(0, 2 * score, 12) for m in lb.METRICS}})
        os.makedirs(os.path.dirname(job["per_user_csv"]), exist_ok=True)
        per_user.to_csv(job["per_user_csv"], index=False)
        return {"valid_recall@20": score, "best_epoch": 1, **{m: score for m in lb.METRICS},
                "train_s_per_epoch": 0.1, "peak_rss_mb": 100.0, "per_user_csv": job["per_user_csv"]}


def _main(tmp_path, runner, *extra):
    argv = ["--dataset", "tiny", "--data_path", str(tmp_path), "--out", str(tmp_path / "out"), *extra]
    return lb._main(argv, runner)


def test_resume_runs_only_what_the_journal_lacks(tmp_path):
    runner = FakeRunner()
    rows = _main(tmp_path, runner, "--models", "BPR", "--budget", "2", "--seeds", "3")
    trials = [c for c in runner.calls if c[0] == "trial"]
    seeds = [c for c in runner.calls if c[0] == "seed"]
    assert len(trials) == 2 and [c[3] for c in seeds] == [2021, 2022]  # SEED0's run is the winning trial
    assert rows[0]["n_seeds"] == 3 and rows[0]["trials"] == 2
    journal = tmp_path / "out" / "journal.jsonl"
    lines = journal.read_text().splitlines()
    assert len(lines) == 5  # 2 trials, the reused SEED0 run, 2 seed runs
    runner.calls.clear()
    _main(tmp_path, runner, "--models", "BPR", "--budget", "2", "--seeds", "3")
    assert runner.calls == []  # everything journaled
    journal.write_text("\n".join(lines[:1]) + "\n")  # killed after the first trial
    _main(tmp_path, runner, "--models", "BPR", "--budget", "2", "--seeds", "3")
    assert len(runner.calls) == 3 and runner.calls[0][0] == "trial"  # the other trial, then seeds 2021, 2022
    assert json.loads(lines[0])["key"] not in {lb.run_key(*c[:2], json.loads(c[2]), c[3]) for c in runner.calls}
    runner.calls.clear()
    rows = _main(tmp_path, runner, "--models", "BPR", "--budget", "4", "--seeds", "3")  # a larger budget extends
    assert [c[0] for c in runner.calls].count("trial") == 2 and rows[0]["trials"] == 4
    for name in ("leaderboard.md", "leaderboard.csv", "per_user/BPR_2020.csv"):
        assert (tmp_path / "out" / name).is_file()


def test_time_budget_stops_new_trials(tmp_path):
    runner = FakeRunner()
    out = tmp_path / "out"
    _main(tmp_path, runner, "--models", "BPR", "--budget", "1", "--seeds", "1")
    journal = out / "journal.jsonl"
    record = json.loads(journal.read_text().splitlines()[0])
    journal.write_text(json.dumps({**record, "wall_s": 100.0}) + "\n")  # one trial that took 100 s
    runner.calls.clear()
    rows = _main(tmp_path, runner, "--models", "BPR", "--budget", "3", "--seeds", "2", "--time_budget", "50")
    assert [c[0] for c in runner.calls] == ["seed"]  # no new trial, the seeds still run
    assert rows[0]["trials"] == 1 and rows[0]["n_seeds"] == 2


def test_other_settings_in_the_same_out_need_force(tmp_path, capsys):
    runner = FakeRunner()
    _main(tmp_path, runner, "--models", "BPR", "--budget", "1", "--seeds", "1")
    argv = ["--dataset", "tiny", "--data_path", str(tmp_path), "--out", str(tmp_path / "out"), "--models", "BPR",
            "--budget", "1", "--seeds", "1", "--epochs", "3"]
    assert lb.main(argv, runner) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: ") and "other epochs" in line and "--force" in line
    runner.calls.clear()
    assert lb.main(argv + ["--force"], runner) == 0 and len(runner.calls) == 1
    assert lb.main(["--dataset", "tiny", "--data_path", ".", "--models", "NoSuchModel"], runner) == 2


def test_per_user_metrics_average_to_recbole_numbers(tiny_dataset, run_config):
    from recbole_mm.config import Config
    from recbole_mm.evaluation import per_user_metrics
    from recbole_mm.quick_start import prepare

    data_path, name = tiny_dataset
    config = Config(model="BPR", dataset=name, config_dict=dict(run_config, data_path=data_path, epochs=1))
    _, (train_data, valid_data, test_data), _, trainer = prepare(config)
    trainer.fit(train_data, valid_data, saved=True, verbose=False)
    frame, averaged = per_user_metrics(trainer, test_data, ("recall", "ndcg", "precision", "map"), (10, 20, 50))
    assert len(frame) == len(test_data.uid_list) and frame["user"].is_unique
    for column in frame.columns.drop("user"):
        assert frame[column].mean() == pytest.approx(averaged[column], abs=6e-5), column  # RecBole rounds to 4
    assert frame["recall@20"].between(0, 1).all() and (frame["recall@50"] >= frame["recall@20"]).all()
    with pytest.raises(ValueError, match="exceeds"):
        per_user_metrics(trainer, test_data, ("recall",), (100,))
    # the same from the saved checkpoint, through python -m recbole_mm.evaluation
    from recbole_mm.evaluation import main

    out = Path(run_config["checkpoint_dir"]).parent / "per_user.csv"
    assert main(["--model_file", trainer.saved_model_file, "--out", str(out), "--ks", "10", "20"]) == 0
    saved = pd.read_csv(out, dtype={"user": str})
    assert list(saved.columns) == ["user", "recall@10", "recall@20", "ndcg@10", "ndcg@20"]
    np.testing.assert_allclose(saved["ndcg@20"], frame["ndcg@20"])
    assert main(["--model_file", str(out.parent / "missing.pth"), "--out", str(out)]) == 2


def test_leaderboard_end_to_end_on_a_tiny_dataset(tiny_dataset, tmp_path):
    data_path, name = tiny_dataset
    out = tmp_path / "lb"
    cmd = [sys.executable, str(REPO / "benchmarks" / "leaderboard.py"), "--dataset", name, "--data_path", data_path,
           "--models", "BPR", "LightGCN", "--budget", "1", "--seeds", "2", "--epochs", "1", "--jobs", "2",
           "--out", str(out), "--embedding_size=8", "--train_batch_size=64", "--state=WARNING"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for path in ("leaderboard.md", "leaderboard.csv", "leaderboard.png", "journal.jsonl",
                 *(f"per_user/{m}_{s}.csv" for m in ("BPR", "LightGCN") for s in (2020, 2021))):
        assert (out / path).is_file(), path
    rows = list(csv.DictReader(open(out / "leaderboard.csv")))
    assert sorted(r["model"] for r in rows) == ["BPR", "LightGCN"] and [r["rank"] for r in rows] == ["1", "2"]
    assert float(rows[0]["recall@20_mean"]) >= float(rows[1]["recall@20_mean"])
    assert rows[0]["t_holm_p_recall@20"] == "nan" and 0 <= float(rows[1]["t_holm_p_recall@20"]) <= 1
    assert all(r["n_seeds"] == "2" and 0 <= float(r["ndcg@20_mean"]) <= 1 for r in rows)
    assert "| 1 | " in (out / "leaderboard.md").read_text()
    records = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    for record in (r for r in records if r["kind"] == "seed"):  # per-user files average to the run's numbers
        per_user = pd.read_csv(out / record["per_user_csv"])
        assert per_user["recall@20"].mean() == pytest.approx(record["test"]["recall@20"], abs=6e-5)
