"""cold_items: the split keeps cold items out of train and valid; cold/warm metrics on a hand example."""

from __future__ import annotations

import glob
import math

import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_mm.data.coldstart import cold_ratio, pick_cold_items, restricted_metrics


def test_pick_cold_items_is_seeded_and_sized():
    a, b = pick_cold_items(101, 0.2, seed=7), pick_cold_items(101, 0.2, seed=7)
    assert torch.equal(a, b) and len(a) == 20 and a.min() >= 1 and len(set(a.tolist())) == 20
    assert not torch.equal(a, pick_cold_items(101, 0.2, seed=8))


@pytest.mark.parametrize("bad", [1.0, -0.1, "lots"])
def test_cold_ratio_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="cold_items"):
        cold_ratio({"cold_items": bad})


def test_split_has_no_cold_item_in_train_or_valid(tiny_dataset, run_config):
    from recbole_mm.config import Config
    from recbole_mm.data import create_dataset, data_preparation

    data_path, name = tiny_dataset
    sizes = {}
    for ratio in (None, 0.25):
        config = Config("VBPR", name, config_dict=dict(run_config, data_path=data_path, cold_items=ratio))
        dataset = create_dataset(config)
        train, valid, test = data_preparation(config, dataset)
        sizes[ratio] = [len(d._dataset) for d in (train, valid, test)]
        if ratio:
            cold = dataset.cold_items
            assert len(cold) == round(0.25 * (dataset.item_num - 1))
            for part in (train, valid):
                assert not torch.isin(part._dataset.inter_feat[dataset.iid_field], cold).any()
            test_items = test._dataset.inter_feat[dataset.iid_field]
            assert torch.isin(cold, test_items).all()  # every cold item is in the tiny data, so in test
    assert sum(sizes[None]) == sum(sizes[0.25])  # nothing lost, only moved
    assert sizes[0.25][0] < sizes[None][0] and sizes[0.25][2] > sizes[None][2]


class _FixedScores(torch.nn.Module):
    """Scores from a table (users x items); ``scores_cold_items`` like a content model."""

    scores_cold_items = True

    def __init__(self, table):
        super().__init__()
        self.table = table
        self.device = torch.device("cpu")

    def full_sort_predict(self, interaction):
        return self.table[interaction["user_id"]].reshape(-1)


class _Loader(list):
    class _Data:
        item_num = 6

    _dataset = _Data()


def test_restricted_metrics_hand_example():
    # items 1..5 (0 = padding), cold = {4, 5}; user 1: history {1}, test {2, 4}; user 2: test {3}
    table = torch.tensor([[0, 0, 0, 0, 0, 0],
                          [0, 4, 3, 1, 2, 5],    # user 1 ranks 5 > 1 > 2 > 4 > 3
                          [0, 5, 4, 3, 2, 1.]])  # user 2 ranks 1 > 2 > 3 > 4 > 5
    batch = (Interaction({"user_id": torch.tensor([1, 2])}),
             (torch.tensor([0]), torch.tensor([1])),          # history: (row in batch, item)
             torch.tensor([0, 0, 1]), torch.tensor([2, 4, 3]))  # test positives
    config = {"topk": [1, 2], "metric_decimal_place": 4, "device": "cpu"}
    model = _FixedScores(table)
    cold = restricted_metrics(model, _Loader([batch]), torch.tensor([4, 5]), config)
    # only user 1 has a cold test item (4); among cold items she ranks 5 > 4
    assert cold == {"users": 1, "recall@1": 0.0, "recall@2": 1.0, "ndcg@1": 0.0,
                    "ndcg@2": round(1 / math.log2(3), 4)}
    warm = restricted_metrics(model, _Loader([batch]), torch.tensor([1, 2, 3]), config)
    # user 1: warm ranking without history item 1 is 2 > 3, truth {2}: hit at 1;
    # user 2: 1 > 2 > 3, truth {3}: no hit in the top 2
    assert warm == {"users": 2, "recall@1": 0.5, "recall@2": 0.5, "ndcg@1": 0.5, "ndcg@2": 0.5}


def test_run_reports_cold_and_warm_lines(tiny_dataset, run_config, capsys):
    from recbole_mm.quick_start import run_recbole_mm

    data_path, name = tiny_dataset
    cfg = dict(run_config, data_path=data_path, epochs=1, cold_items=0.2)
    result = run_recbole_mm("VBPR", name, config_dict=cfg)
    out = capsys.readouterr().out
    lines = [line.split(" ")[0] for line in out.splitlines() if "_RESULT " in line]
    assert lines == ["VALID_RESULT", "TEST_RESULT", "COLD_TEST_RESULT", "WARM_TEST_RESULT"]
    assert result["cold_test_result"]["users"] > 0 and "recall@20" in result["warm_test_result"]

    result = run_recbole_mm("BPR", name, config_dict=cfg)  # ID-only: warm metrics only
    out = capsys.readouterr().out
    assert "COLD_TEST_RESULT" not in out and "WARM_TEST_RESULT" in out
    assert result["cold_test_result"] is None


def _cold_scores(model_name, data_path, name, swap: bool):
    """Scores of 8 users for the cold items of a fresh (seeded, untrained) model; with ``swap`` the cold
    items' feature rows are replaced by other rows first."""
    from recbole.utils import init_seed

    from recbole_mm.config import Config
    from recbole_mm.data import data_preparation
    from recbole_mm.quick_start import load_dataset
    from recbole_mm.utils import get_model
    from tests.conftest import FAST

    config = Config(model_name, name, config_dict=dict(FAST, data_path=data_path, cold_items=0.2, graph_cache=False,
                                                           ica_epochs=1))  # AlignRec's stage 1: one epoch
    dataset = load_dataset(config)
    train, _, _ = data_preparation(config, dataset)
    cold = dataset.cold_items
    if swap:
        for feat in dataset.item_features.values():
            feat[cold] = feat[torch.roll(cold, 1)] * 0.5 + 1.0
    init_seed(config["seed"], True)
    model = get_model(model_name)(config, train._dataset).eval()
    with torch.no_grad():
        scores = model.full_sort_predict(Interaction({dataset.uid_field: torch.arange(1, 9)})).view(8, -1)
    return scores[:, cold]


def _declared():
    from recbole_mm.utils import get_model, plugin_models

    return sorted(m for m in plugin_models() if getattr(get_model(m), "scores_cold_items", False))


@pytest.mark.parametrize("model", _declared())
def test_declared_models_score_cold_items_from_content(model, tiny_dataset):
    """``scores_cold_items`` is truthful (a necessary condition): a cold item's scores move with its
    own features. BM3 (scored from ID embeddings only) and the ID-only baselines do not declare it."""
    data_path, name = tiny_dataset
    before, after = (_cold_scores(model, data_path, name, swap) for swap in (False, True))
    assert (before - after).abs().max() > 1e-4


@pytest.mark.parametrize("model", ["BM3", "LayerGCN"])
def test_undeclared_models_ignore_cold_content(model, tiny_dataset):
    data_path, name = tiny_dataset
    before, after = (_cold_scores(model, data_path, name, swap) for swap in (False, True))
    assert torch.equal(before, after) and model not in _declared()


def test_restricted_to_all_items_is_recboles_test_result(tiny_dataset, run_config):
    """Restricted to every item, the metric is RecBole's own TEST_RESULT (same users, masks, formulas)."""
    from recbole_mm.quick_start import load_data_and_model, run_recbole_mm

    data_path, name = tiny_dataset
    result = run_recbole_mm("LightGCN", name, config_dict=dict(run_config, data_path=data_path, epochs=1),
                            print_result=False)
    (path,) = glob.glob(run_config["checkpoint_dir"] + "/LightGCN-*.pth")
    config, model, dataset, _, _, test_data = load_data_and_model(path)
    mine = restricted_metrics(model, test_data, torch.arange(1, dataset.item_num), config)
    for key in ("recall@10", "recall@20", "ndcg@10", "ndcg@20"):
        assert mine[key] == pytest.approx(result["test_result"][key], abs=1e-4)


def test_cold_items_are_never_negatives_nor_ranked_in_valid(tiny_dataset, run_config):
    """A cold item does not exist before test time: the train sampler never draws it (uniform or
    popularity), the validation ranking masks it for every user, the test ranking keeps it."""
    from recbole_mm.config import Config
    from recbole_mm.data import create_dataset, data_preparation
    from recbole_mm.data.coldstart import ExcludingSampler

    data_path, name = tiny_dataset
    config = Config("VBPR", name, config_dict=dict(run_config, data_path=data_path, cold_items=0.25))
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    cold = dataset.cold_items
    sampler = train._sampler
    assert isinstance(sampler, ExcludingSampler)
    users = train._dataset.inter_feat[dataset.uid_field].numpy()
    negatives = sampler.sample_by_user_ids(users, None, 50)
    assert not torch.isin(negatives, cold).any()
    warm = set(range(1, dataset.item_num)) - set(cold.tolist())
    assert set(negatives.tolist()) == warm  # every other item is still drawn
    sampler.set_distribution("popularity")
    assert not torch.isin(torch.as_tensor(sampler.sampling(2000)), cold).any()

    def masked(loader):
        _, (hist_u, hist_i), _, _ = next(iter(loader))
        return {(int(u), int(i)) for u, i in zip(hist_u, hist_i)}, int(hist_u.max()) + 1

    history, n_users = masked(valid)
    assert all((u, int(c)) in history for u in range(n_users) for c in cold)
    history, n_users = masked(test)
    assert not any((u, int(c)) in history for u in range(n_users) for c in cold)
