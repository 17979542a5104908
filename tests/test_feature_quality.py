"""Feature-quality protocols: metrics by hand, and a dataset where good features must win."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from recbole_mm.feature_quality import feature_sets, main, ranking_metrics, run


def test_ranking_metrics_by_hand():
    scores = torch.tensor([[0.9, 0.8, 0.1, 0.0] + [-1.0] * 16])
    positives = torch.zeros(1, 20, dtype=torch.bool)
    positives[0, 1] = positives[0, 3] = True
    m = ranking_metrics(scores, positives)
    assert m["recall@10"] == pytest.approx(1.0)
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    idcg = 1 + 1 / math.log2(3)
    assert m["ndcg@10"] == pytest.approx(dcg / idcg)


def test_feature_sets():
    feats = {"a": torch.randn(5, 3), "b": torch.randn(5, 2), "c": torch.randn(5, 4)}
    sets = feature_sets(feats)
    assert list(sets) == ["a", "b", "c", "concat(a+b+c)", "masked -a", "masked -b", "masked -c"]
    assert sets["masked -a"].shape == (5, 6)
    with pytest.raises(ValueError, match="audio"):
        feature_sets(feats, ["audio"])
    # an added set (stage-1 output) is scored alone, never mixed into the raw concat / masked sets,
    # whether or not the selection names it
    for selected in (None, ["a", "b", "c"], ["a", "b"]):
        sets = feature_sets(feats, selected, added=["c"])
        assert list(sets) == ["a", "b", "concat(a+b)", "c"]


def _clustered(tmp_path, valid_cluster_shift=0):
    """Users like one of 4 item clusters (train and test items); the valid item of user u comes from
    cluster ``u + valid_cluster_shift``. Features: ``good`` encodes the cluster, ``noise`` does not."""
    from dataset_converters.mmrec import convert

    rng = np.random.default_rng(0)
    n_items, n_users = 80, 60
    cluster = np.arange(n_items) % 4
    rows = []
    for u in range(n_users):
        liked = rng.choice(np.flatnonzero(cluster == u % 4), size=12, replace=False)
        if valid_cluster_shift:
            liked[9] = rng.choice(np.flatnonzero(cluster == (u + valid_cluster_shift) % 4))
        rows += [(u, int(i), lab) for i, lab in zip(liked, [0] * 9 + [1, 2, 2])]
    raw = tmp_path / "raw" / "clu"
    raw.mkdir(parents=True)
    pd.DataFrame(rows, columns=["userID", "itemID", "x_label"]).to_csv(raw / "clu.inter", sep="\t", index=False)
    good = np.eye(4, dtype=np.float32)[cluster] + 0.01 * rng.standard_normal((n_items, 4)).astype(np.float32)
    np.save(raw / "good_feat.npy", good)
    np.save(raw / "noise_feat.npy", rng.standard_normal((n_items, 8)).astype(np.float32))
    convert(str(raw), str(tmp_path / "data"))
    return good


def _rows(table):
    return {tuple(c.strip() for c in line.strip("|").split("|")[:2]): float(line.strip("|").split("|")[3])
            for line in table.splitlines() if line.startswith("| ") and "features" not in line}


def test_informative_features_beat_noise(tmp_path):
    """A feature that encodes the users' cluster must score far better than noise."""
    good = _clustered(tmp_path)
    np.save(tmp_path / "data" / "clu" / "extra.npy", good)
    table = run("clu", str(tmp_path / "data"), k=5, extra={"copy": "extra.npy"})
    assert table.startswith("Feature quality on clu (test split, train_valid masking")
    rows = _rows(table)
    assert rows[("good", "zero-shot")] > 2 * rows[("noise", "zero-shot")]
    assert rows[("good", "item-CF")] > 2 * rows[("noise", "item-CF")]
    assert ("concat(good+noise)", "zero-shot") in rows and not any(r[0].startswith("masked") for r in rows)
    assert rows[("copy", "zero-shot")] == rows[("good", "zero-shot")]  # an added file is scored like a modality


def test_valid_split_scores_the_validation_items(tmp_path):
    """Valid items come from another cluster than the user's history: the cluster feature must score
    high on test and only chance level on valid (Recall@20 ~ 9 of 60 other-cluster items), so
    ``--split valid`` really ranks the valid items."""
    _clustered(tmp_path, valid_cluster_shift=1)
    test = _rows(run("clu", str(tmp_path / "data"), k=5))
    valid_table = main(["--dataset", "clu", "--data_path", str(tmp_path / "data"), "--k", "5", "--split", "valid"])
    assert valid_table.startswith("Feature quality on clu (valid split, train masking")
    valid = _rows(valid_table)
    assert test[("good", "zero-shot")] > 0.7 and valid[("good", "zero-shot")] < 0.3
    assert test[("good", "item-CF")] > 0.7 and valid[("good", "item-CF")] < 0.3
    with pytest.raises(ValueError, match="split"):
        run("clu", str(tmp_path / "data"), split="train")
