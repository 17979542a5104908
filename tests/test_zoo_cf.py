"""ItemKNNCBF, LayerGCN and SelfCF: their blocks against hand computations on tiny data."""

import math

import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_mm.data import graphs
from recbole_mm.model.general_recommender import itemknncbf
from recbole_mm.model.general_recommender.itemknncbf import csr_dense_rows, shrunk_cosine_knn
from recbole_mm.model.layers import refined_propagate
from recbole_mm.model.layers import SparseOperator
from recbole_mm.quick_start import run_recbole_mm
from tests.test_models import _build


def _dense(rows, cols, vals, n):
    out = torch.zeros(n, n)
    out[rows, cols] = vals
    return out


# -- ItemKNNCBF --------------------------------------------------------------------------------
def test_shrunk_cosine_knn_by_hand():
    f = torch.tensor([[1.0, 0.0], [2.0, 0.0], [0.0, 3.0], [1.0, 1.0]])
    rows, cols, sims = shrunk_cosine_knn(f, k=2, shrink=1.0)
    # row 0: dot with [1,2,3] = 1, 2, 0, 1; norms 1, 2, 3, sqrt2 -> 1/2, 2/3, 0, 1/(sqrt2 + 1)
    assert rows.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert cols[:2].tolist() == [1, 0]
    torch.testing.assert_close(sims[:2], torch.tensor([2 / 3, 1 / 2]))
    # row 3 (|f| = sqrt2): itself 2/3 (kept, as MMRec), then item 2 (3/(3 sqrt2 + 1)) before item 1
    # (2/(2 sqrt2 + 1)): the shrink term favours large norms where the plain cosine would tie
    assert cols[6:].tolist() == [3, 2]
    torch.testing.assert_close(sims[6:], torch.tensor([2 / 3, 3 / (3 * math.sqrt(2) + 1)]))
    again = shrunk_cosine_knn(f, k=2, shrink=1.0, block_size=1)  # block-wise = all at once
    for a, b in zip((rows, cols, sims), again):
        torch.testing.assert_close(a, b)
    zero = shrunk_cosine_knn(torch.zeros(3, 2), k=1, shrink=0.0)[2]  # 0/0 -> 0, not NaN
    assert torch.equal(zero, torch.zeros(3))


def test_csr_dense_rows():
    dense = torch.tensor([[0.0, 2.0, 0.0], [0.0, 0.0, 0.0], [1.0, 0.0, 3.0]])
    csr = dense.to_sparse_csr()
    torch.testing.assert_close(csr_dense_rows(csr, torch.tensor([2, 1, 0, 2])), dense[[2, 1, 0, 2]])


def test_itemknncbf_scores_are_history_times_knn_similarity(tiny_dataset, monkeypatch):
    data_path, name = tiny_dataset
    config, m, _ = _build("ItemKNNCBF", data_path, name, knn_k=3, shrink=2.0)
    assert list(m.state_dict()) == ["fake_loss"]  # the similarity graph is rebuilt, not saved
    f = m.concat_features()[1:]  # raw concatenation of the modalities, padding row left out
    n = f.shape[0]
    norms = f.norm(dim=1)
    full = (f @ f.T) / (norms[:, None] * norms[None, :] + 2.0)
    val, idx = full.topk(3, dim=1)
    sim = torch.zeros(n + 1, n + 1)
    sim[1:, 1:] = torch.zeros(n, n).scatter_(1, idx, val)
    history = torch.zeros(m.n_users, m.n_items)
    history[m.train_users, m.train_items] = 1.0
    users = torch.tensor([1, 2, 5, 7])
    m.eval()
    got = m.full_sort_predict(Interaction({"user_id": users})).view(len(users), -1)
    torch.testing.assert_close(got, history[users] @ sim)
    monkeypatch.setattr(itemknncbf, "SCORES_PER_CHUNK", 2 * m.n_items)  # predict in chunks of 2 users
    pair_users = users.repeat_interleave(m.n_items).flip(0)  # users out of order: chunks of distinct users
    pair_items = torch.arange(m.n_items).repeat(len(users))
    row = (pair_users.unsqueeze(1) == users.unsqueeze(0)).float().argmax(1)  # pair -> row of got
    got_pairs = m.predict(Interaction({"user_id": pair_users, "item_id": pair_items}))
    torch.testing.assert_close(got_pairs, got[row, pair_items])  # the same computation, chunked
    assert m.calculate_loss(None).item() == 0.0


def test_itemknncbf_trains_once_and_needs_modalities(tiny_dataset, run_config):
    data_path, name = tiny_dataset
    cfg = dict(run_config, data_path=data_path)
    result = run_recbole_mm("ItemKNNCBF", name, config_dict=cfg, print_result=False)
    assert len(result["epoch_log"]) == 1 and 0 < result["test_result"]["recall@20"] <= 1
    with pytest.raises(ValueError, match="ItemKNNCBF needs item modalities"):
        run_recbole_mm("ItemKNNCBF", name, config_dict=dict(cfg, modalities=None), print_result=False)


# -- LayerGCN ----------------------------------------------------------------------------------
def test_refined_propagate_by_hand():
    adj = torch.tensor([[0.0, 0.5, 0.0], [0.5, 0.0, 1.0], [0.0, 1.0, 0.0]])
    ego = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    h1 = adj @ ego  # [[0, 1], [1.5, 1], [0, 2]]
    w1 = torch.tensor([0.0, 1 / math.sqrt(3.25), 1 / math.sqrt(2)])  # cos with the ego rows
    e1 = w1[:, None] * h1
    h2 = adj @ e1
    e2 = F.cosine_similarity(h2, ego, dim=-1)[:, None] * h2
    op = SparseOperator(adj.to_sparse(), symmetric=True)
    torch.testing.assert_close(refined_propagate(op, ego, 2), e1 + e2)
    torch.testing.assert_close(refined_propagate(op, ego, 1), e1)


def test_layergcn_loss_sums_over_the_batch(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, train = _build("LayerGCN", data_path, name, reg_weight=0.01)
    batch = next(iter(train))
    u, p, n = batch["user_id"], batch["item_id"], batch["neg_item_id"]
    users, items = m.forward(m.train_adj)
    x = (users[u] * (items[p] - items[n])).sum(1)
    ego = m.user_embedding.weight[u].pow(2).sum() + m.item_embedding.weight[p].pow(2).sum() \
        + m.item_embedding.weight[n].pow(2).sum()
    expected = -F.logsigmoid(x).sum() + 0.01 * 0.5 * ego
    torch.testing.assert_close(m.calculate_loss(batch), expected)


def _edges(op):
    rows, cols, _ = op.edges()
    return set(zip(rows.tolist(), cols.tolist()))


def test_layergcn_edge_dropout_alternates_and_spares_inference(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("LayerGCN", data_path, name, dropout=0.3)
    n_edges = len(m.train_users)
    keep = math.ceil(0.7 * n_edges)
    m.eval()
    users = Interaction({"user_id": torch.tensor([1, 2, 3])})
    before = m.full_sort_predict(users)
    m.train()
    torch.manual_seed(5)
    m.pre_epoch_processing()  # epoch 1: degree-sensitive
    torch.manual_seed(5)
    du, di = graphs.degree_sensitive_prune(m.train_users, m.train_items, m.n_users, m.n_items, 0.7)
    assert m.train_adj.csr.values().numel() == 2 * keep
    assert _edges(m.train_adj) == {(int(a), int(b) + m.n_users) for a, b in zip(du, di)} | \
        {(int(b) + m.n_users, int(a)) for a, b in zip(du, di)}
    torch.manual_seed(5)
    m.pre_epoch_processing()  # epoch 2: uniform
    torch.manual_seed(5)
    kept = torch.randperm(n_edges)[:keep]
    uu, ui = m.train_users[kept], m.train_items[kept]
    assert {(a, b) for a, b in _edges(m.train_adj) if a < m.n_users} == \
        {(int(a), int(b) + m.n_users) for a, b in zip(uu, ui)}
    deg_u = torch.bincount(uu, minlength=m.n_users).float()
    deg_i = torch.bincount(ui, minlength=m.n_items).float()
    r, c, v = m.train_adj.edges()
    first = r < m.n_users
    torch.testing.assert_close(v[first], (deg_u[r[first]] * deg_i[c[first] - m.n_users]).rsqrt())  # re-normalised
    m.eval()
    torch.testing.assert_close(m.full_sort_predict(users), before)  # inference: the full graph
    _, off, _ = _build("LayerGCN", data_path, name, dropout=0.0)
    off.pre_epoch_processing()
    assert off.train_adj is off.full_adj


# -- SelfCF ------------------------------------------------------------------------------------
def test_selfcf_loss_and_scores_by_hand(tiny_dataset):
    data_path, name = tiny_dataset
    config, m, train = _build("SelfCF", data_path, name, graph_dropout=0.0, reg_weight=0.01, dropout=0.2)
    assert config["train_neg_sample_args"]["distribution"] == "none"
    batch = next(iter(train))
    assert m.NEG_ITEM_ID not in batch.interaction
    u, i = batch["user_id"], batch["item_id"]
    torch.manual_seed(3)
    loss = m.calculate_loss(batch)
    users, items = m.forward(m.adj)
    eu, ei = users[u], items[i]
    torch.manual_seed(3)
    ku, ki = torch.rand(eu.shape) >= 0.2, torch.rand(ei.shape) >= 0.2  # inverted dropout, users' mask first
    tu, ti = eu.detach() * ku / 0.8, ei.detach() * ki / 0.8
    mmrec = (-F.cosine_similarity(m.predictor(eu), ti).mean() / 2 - F.cosine_similarity(m.predictor(ei), tu).mean() / 2
             + 0.01 * 0.5 * (eu.pow(2).sum() + ei.pow(2).sum()))
    torch.testing.assert_close(loss, mmrec + 1.0)  # 1 - cos instead of -cos: a constant apart
    m.eval()
    ids = torch.tensor([1, 4])
    with torch.no_grad():
        scores = m.predictor(users[ids]) @ items.T + users[ids] @ m.predictor(items).T
    torch.testing.assert_close(m.full_sort_predict(Interaction({"user_id": ids})).view(2, -1), scores)


def test_selfcf_graph_dropout(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("SelfCF", data_path, name, graph_dropout=0.5)
    rows, cols, values = m.adj.edges()
    full = {(a, b): v for a, b, v in zip(rows.tolist(), cols.tolist(), values.tolist())}
    torch.manual_seed(11)
    g = m.dropped_graph()
    torch.manual_seed(11)
    rate = torch.rand(()).item() * 0.5
    keep = torch.rand(values.shape) >= rate
    kept = g.csr.values() != 0  # dropped entries stay in the pattern as zeros
    assert 0 < rate < 0.5 and torch.equal(kept, keep) and g.csr.values().numel() == values.numel()
    for (a, b), v in zip(zip(*[t[kept].tolist() for t in g.edges()[:2]]), g.edges()[2][kept].tolist()):
        assert v == pytest.approx(full[(a, b)] / (1 - rate))
    assert not g.symmetric


# -- both collaborative models: ID-only data, seeds ------------------------------------------------
@pytest.mark.parametrize("model", ["LayerGCN", "SelfCF"])
def test_collaborative_models_run_without_modalities_reproducibly(tiny_dataset, run_config, model):
    data_path, name = tiny_dataset
    cfg = dict(run_config, data_path=data_path, epochs=1, modalities=None)
    first = run_recbole_mm(model, name, config_dict=cfg, print_result=False)
    second = run_recbole_mm(model, name, config_dict=cfg, print_result=False)
    assert first["test_result"] == second["test_result"]
    assert 0 <= first["test_result"]["recall@20"] <= 1
