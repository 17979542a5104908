"""The benchmark harness's interface (fixed: other scripts read it)."""

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def test_bench_writes_csv_markdown_and_curves(tiny_dataset, tmp_path):
    data_path, name = tiny_dataset
    out = tmp_path / "bench"
    cmd = [sys.executable, str(REPO / "benchmarks" / "bench.py"), "--dataset", name, "--data_path", data_path,
           "--models", "VBPR", "BPR", "VBPR:use_bias=False", "--epochs", "2", "--seeds", "2", "--out", str(out), "--threads", "1",
           "--embedding_size=8", "--feature_embedding_size=8", "--train_batch_size=64"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(out / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["model", "seed", "best_epoch", "recall@10", "recall@20", "ndcg@10", "ndcg@20",
                             "train_s_per_epoch", "eval_s", "peak_rss_mb", "wall_s"]
    assert [(r["model"], r["seed"]) for r in rows] == [("VBPR", "2020"), ("VBPR", "2021"), ("BPR", "2020"),
                                                        ("BPR", "2021"), ("VBPR:use_bias=False", "2020"),
                                                        ("VBPR:use_bias=False", "2021")]
    for r in rows:
        assert 0 <= float(r["recall@20"]) <= 1 and float(r["peak_rss_mb"]) > 50 and int(r["best_epoch"]) in (0, 1)
    md = (out / "results.md").read_text()
    assert "| VBPR | 2020 |" in md and "Mean ± std" in md and "| VBPR | 2020 |" in proc.stdout
    assert (out / "curves.png").stat().st_size > 1000
    runs = [json.loads(line) for line in (out / "runs.jsonl").read_text().splitlines()]
    assert [len(r["train_s_epochs"]) for r in runs] == [2] * 6 and all(t > 0 for r in runs for t in r["train_s_epochs"])


def _bench_module():
    """benchmarks/bench.py imported as a module (it is a script, not a package)."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import bench
    finally:
        sys.path.pop(0)
    return bench


def test_first_seed_and_overrides_parse():
    bench = _bench_module()
    args, overrides = bench.parse_args(["--dataset", "d", "--data_path", "p", "--models", "M", "--seeds", "3",
                                        "--seed0", "2023", "--knn_k=5"])
    assert (args.seed0, args.seeds, overrides) == (2023, 3, {"knn_k": "5"})
    args, _ = bench.parse_args(["--dataset", "d", "--data_path", "p", "--models", "M"])
    assert args.seed0 == bench.BASE_SEED == 2020


def test_model_spec_values_may_hold_commas():
    bench = _bench_module()
    assert bench.parse_model_spec("USERec:prune=False,n_samples=3") == ("USERec", {"prune": "False", "n_samples": "3"})
    assert bench.parse_model_spec("AlignRec:use_modalities=['a','b'],fusion=gate,modality_weights={'a':0.1,'b':0.9}") \
        == ("AlignRec", {"use_modalities": "['a','b']", "fusion": "gate", "modality_weights": "{'a':0.1,'b':0.9}"})
    assert bench.parse_model_spec("BPR") == ("BPR", {})
    import pytest

    with pytest.raises(ValueError, match="not key=value"):
        bench.parse_model_spec("BPR:oops")


def test_epoch_ratio_alternates_models_in_one_process(tiny_dataset, tmp_path):
    data_path, name = tiny_dataset
    cmd = [sys.executable, str(REPO / "benchmarks" / "epoch_ratio.py"), "--dataset", name, "--data_path", data_path,
           "--models", "BPR", "VBPR:use_bias=False", "--rounds", "2", "--threads", "1",
           "--embedding_size=8", "--feature_embedding_size=8", "--train_batch_size=64"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith(f"{name}, 2 rounds, 1 threads") and len(lines) == 3
    assert lines[1].startswith("BPR: median ") and "ratio median 1.00 (25-75%: 1.00-1.00)" in lines[1]
    assert lines[2].startswith("VBPR:use_bias=False: median ")
    assert "round 2: " in proc.stderr  # progress per round; round 0 is the uncounted warm-up


def test_propagation_benchmark_variants_agree():
    """benchmarks/propagation.py: every propagation variant gives LightGCN's numbers (checked inside
    measure(), which would raise) and a row per variant."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import propagation
    finally:
        sys.path.pop(0)
    graph = propagation.baby_sized_edges(seed=1, users=50, items=30, edges=200)
    rows = propagation.measure("tiny", graph, n_layers=2, dim=8, reps=1)
    assert len(rows) == 4 and rows[0].startswith("| tiny | SparseOperator |") and "1.00x" in rows[0]


def test_sparse_data_subsamples_training_only():
    """benchmarks/sparse_data.py: at most N training rows per user, seeded; valid/test untouched."""
    import pandas as pd

    sys.path.insert(0, str(REPO / "benchmarks"))
    try:
        import sparse_data
    finally:
        sys.path.pop(0)
    frame = pd.DataFrame({"userID": [0] * 10 + [1] * 3, "itemID": list(range(10)) + [0, 1, 2],
                          "x_label": [0] * 8 + [1, 2] + [0, 0, 2]})
    sparse = sparse_data.subsample_training(frame, 3, seed=1)
    train = sparse[sparse["x_label"] == 0]
    assert train.groupby("userID").size().to_dict() == {0: 3, 1: 2}
    assert sparse[sparse["x_label"] != 0].equals(frame[frame["x_label"] != 0])
    assert sparse.equals(sparse_data.subsample_training(frame, 3, seed=1))  # same seed, same rows
    assert not train.equals(sparse_data.subsample_training(frame, 3, seed=2).query("x_label == 0"))


def test_reference_table_means_gap_and_paired_difference(tmp_path):
    bench = _bench_module()
    ref_csv = tmp_path / "mmrec.csv"
    ref_csv.write_text("model,seed,recall@20,ndcg@20\nLGMRec,2020,0.0500,0.03\nLGMRec,999,0.0700,0.04\n")
    reference = bench.read_reference(str(ref_csv))
    rows = [{"model": "LGMRec", "seed": 2020, "recall@20": 0.0550}, {"model": "LGMRec", "seed": 2021, "recall@20": 0.0650},
            {"model": "LGMRec:eval_memberships=sampled", "seed": 2020, "recall@20": 0.0450},
            {"model": "VBPR", "seed": 2020, "recall@20": 0.1}]
    table = bench.reference_table(rows, reference)
    assert "| LGMRec | 0.0600 ± 0.0071 (2) | 0.0600 ± 0.0141 (2) | +0.0% | +0.0050 ± 0.0000 (2020) |" in table
    assert "| LGMRec:eval_memberships=sampled | 0.0450 ± 0.0000 (1) | 0.0600 ± 0.0141 (2) | -25.0% | -0.0050" in table
    assert "VBPR" not in table  # no reference runs: no row
    # a blank ndcg@20 in the reference (NaN) leaves that run out of the NDCG means only
    (tmp_path / "blank.csv").write_text("model,seed,recall@20,ndcg@20\nLGMRec,2020,0.05,\nLGMRec,999,0.07,0.04\n")
    blank = bench.read_reference(str(tmp_path / "blank.csv"))
    ndcg_rows = [dict(r, **{"ndcg@20": 0.05}) for r in rows[:2]]
    assert "| LGMRec | 0.0500 ± 0.0000 (2) | 0.0400 ± 0.0000 (1) | +25.0% | – |" in \
        bench.reference_table(ndcg_rows, blank, "ndcg@20")
    (tmp_path / "bad.csv").write_text("name,score\nx,1\n")
    with pytest.raises(ValueError, match="expected columns model, seed, recall@20"):
        bench.read_reference(str(tmp_path / "bad.csv"))


def test_peer_epochs_alternates_and_tables(tiny_dataset, tmp_path):
    """peer_epochs.py against a stand-in peer whose epochs take a known time (no MMRec needed)."""
    data_path, name = tiny_dataset
    src = tmp_path / "peer_src"
    (src / "common").mkdir(parents=True)
    (src / "utils").mkdir()
    (src / "common" / "trainer.py").write_text(
        "import time\nclass Trainer:\n    def _train_epoch(self):\n        time.sleep(0.05)\n")
    (src / "utils" / "quick_start.py").write_text(
        "import common.trainer as tr\n"
        "def quick_start(model, dataset, config_dict, save_model):\n"
        "    assert config_dict['reg'] == [0.5] and config_dict['seed'] == [2020]\n"
        "    t = tr.Trainer()\n"
        "    for _ in range(config_dict['epochs']):\n        t._train_epoch()\n")
    out = tmp_path / "pe"
    cmd = [sys.executable, str(REPO / "benchmarks" / "peer_epochs.py"), "--dataset", name, "--data_path", data_path,
           "--mmrec_src", str(src), "--mmrec_dataset", name, "--pairs", "BPR=PeerBPR", "--epochs", "2",
           "--rounds", "2", "--threads", "1", "--out", str(out), "--mmrec_overrides", '{"PeerBPR": {"reg": [0.5]}}',
           "--embedding_size=8", "--train_batch_size=64"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = json.loads((out / "peer_epochs.json").read_text())["BPR"]
    assert len(runs["ours"]) == len(runs["mmrec"]) == 2 and all(0.045 < t < 1.0 for t in runs["mmrec"])
    assert runs["ratio"] == pytest.approx([o / p for o, p in zip(runs["ours"], runs["mmrec"])])
    assert "| BPR | PeerBPR |" in (out / "peer_epochs.md").read_text()


def test_cold_start_table_from_bench_runs(tiny_dataset, tmp_path):
    """cold_start.py runs bench.py's worker with `cold_items`: a content model gets COLD/WARM columns,
    an ID-only one "cannot"; the jsonl keeps bench's result fields."""
    data_path, name = tiny_dataset
    out = tmp_path / "cold"
    cmd = [sys.executable, str(REPO / "benchmarks" / "cold_start.py"), "--dataset", name, "--data_path", data_path,
           "--models", "VBPR", "BPR", "--epochs", "1", "--cold_items", "0.2", "--out", str(out),
           "--embedding_size=8", "--feature_embedding_size=8", "--train_batch_size=64"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "cold_start.jsonl").read_text().splitlines()]
    assert [r["model"] for r in rows] == ["VBPR", "BPR"]
    assert 0 <= rows[0]["cold_test_result"]["recall@20"] <= 1 and rows[1]["cold_test_result"] is None
    assert set(rows[1]["warm_test_result"]) >= {"recall@20", "ndcg@20"}
    md = (out / "cold_start.md").read_text()
    assert "| BPR | " in md and "cannot" in md.split("| BPR |")[1] and "cannot" not in md.split("| VBPR |")[1].split("\n")[0]
    # --from_jsonl trains nothing and rebuilds the same rows (how parallel queues are merged)
    merged = subprocess.run([sys.executable, str(REPO / "benchmarks" / "cold_start.py"), "--from_jsonl",
                             str(out / "cold_start.jsonl"), str(out / "cold_start.jsonl"), "--out", str(tmp_path / "m")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert merged.returncode == 0, merged.stderr[-3000:]
    rows_md = [line for line in md.splitlines() if line.startswith("| VBPR |") or line.startswith("| BPR |")]
    merged_md = (tmp_path / "m" / "cold_start.md").read_text()
    assert [line for line in merged_md.splitlines() if line.startswith("| ")][2:] == rows_md * 2
    assert f"| VBPR | {rows[0]['best_epoch']} | " in merged_md


def test_memory_script_reports_stage_peaks_and_limits_batches(tiny_dataset, tmp_path):
    data_path, name = tiny_dataset
    out = tmp_path / "mem"
    cmd = [sys.executable, str(REPO / "benchmarks" / "memory.py"), "--dataset", name, "--data_path", data_path,
           "--models", "VBPR", "VBPR:use_bias=False", "--batches", "2", "--out", str(out),
           "--embedding_size=8", "--feature_embedding_size=8", "--train_batch_size=16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "memory.jsonl").read_text().splitlines()]
    assert [r["model"] for r in rows] == ["VBPR", "VBPR:use_bias=False"]
    for r in rows:
        assert set(r["peak_mb"]) == {"data", "model", "train", "eval"}
        assert r["peak_rss_mb"] == max(r["peak_mb"].values()) > 50
        # two epochs of at most two batches each, out of more than two per epoch
        assert r["batches_per_epoch"] > 2 and r["batches_run"] == 4 and r["epochs"] == 2
        assert r["full_epoch_s_estimate"] >= r["median_batch_s"] > 0 and 0 <= r["valid_recall@20"] <= 1
    assert "| VBPR | " in proc.stdout and "| VBPR:use_bias=False | " in proc.stdout


def test_memory_script_rounds_alternate_and_eval_can_be_skipped(tiny_dataset, tmp_path):
    data_path, name = tiny_dataset
    out = tmp_path / "mem"
    cmd = [sys.executable, str(REPO / "benchmarks" / "memory.py"), "--dataset", name, "--data_path", data_path,
           "--models", "VBPR", "BPR", "--rounds", "2", "--skip_eval", "--epochs", "1", "--batches", "1",
           "--out", str(out), "--embedding_size=8", "--feature_embedding_size=8", "--train_batch_size=16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "memory.jsonl").read_text().splitlines()]
    assert [r["model"] for r in rows] == ["VBPR", "BPR", "VBPR", "BPR"]  # alternating rounds
    assert all(math.isnan(r["valid_recall@20"]) and r["seconds"]["eval"] < 1.0 for r in rows)


def test_saved_activations_counts_what_backward_keeps(tiny_dataset, tmp_path):
    """One line with the MB MMGCN keeps for backward (positive), then the largest node types."""
    data_path, name = tiny_dataset
    cmd = [sys.executable, str(REPO / "benchmarks" / "saved_activations.py"), "--dataset", name,
           "--data_path", data_path, "--models", "MMGCN", "--top", "3", "--train_batch_size=16"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    first, *nodes = [line for line in proc.stdout.splitlines() if line.strip()]
    assert first.startswith("MMGCN: ") and float(first.split()[1]) > 0
    assert len(nodes) == 3 and all(line.strip().endswith("MB") for line in nodes)


def test_id_order_share_rates_hand_example(tmp_path):
    """Users 0-1 and 2-3 share an item, 1-2 do not: adjacent share 2/3; random pairs are only distinct users."""
    sys.path.insert(0, str(REPO / "benchmarks"))
    import id_order

    users = [0, 0, 1, 1, 2, 3, 3]  # user 1 repeats item 5: counted once
    items = [4, 5, 5, 5, 6, 6, 7]
    adjacent, random = id_order.share_rates(np.array(users), np.array(items), n_pairs=2000, seed=0)
    assert adjacent == pytest.approx(2 / 3)
    # of the 6 distinct unordered pairs, (0,1) and (2,3) share an item: about 1/3 of random pairs
    assert random == pytest.approx(1 / 3, abs=0.05)
    inter = tmp_path / "x.inter"
    inter.write_text("userID\titemID\n0\t1\n")
    proc = subprocess.run([sys.executable, str(REPO / "benchmarks" / "id_order.py"), str(inter)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {inter}: missing column(s) x_label"
