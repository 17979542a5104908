"""IDFREE and its blocks: hand computations on a few numbers, the graphs it builds, determinism, no
ID tables."""

import math

import pytest
import torch
import torch.nn.functional as F

from recbole_mm.model.general_recommender.idfree import (
    EdgeScorer, batch_softmax_loss, clipped_sym_norm, edge_lightgcn, weighted_edge_sample)
from recbole_mm.model.layers import sinusoidal_encoding
from recbole_mm.model.loss import info_nce
from tests.test_models import _build


def test_clipped_sym_norm_hand():
    # node 0 -> 1 (w 1), 0 -> 2 (w 3); node 1 -> 0 (w 4); node 2 has no row entry (degree 0)
    rows, cols = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 0])
    values = torch.tensor([1.0, 3.0, 4.0], requires_grad=True)
    out = clipped_sym_norm(rows, cols, values, 3)
    # degrees 4, 4, 0 -> d^-1/2 = 0.5, 0.5, 10 (clipped)
    torch.testing.assert_close(out, torch.tensor([1 * 0.25, 3 * 0.5 * 10, 4 * 0.25]))
    out.sum().backward()
    assert torch.isfinite(values.grad).all()
    # a tiny positive degree is clipped too: 1e-4^-1/2 = 100 -> 10
    torch.testing.assert_close(clipped_sym_norm(torch.tensor([0]), torch.tensor([0]), torch.tensor([1e-4]), 1),
                               torch.tensor([1e-4 * 100.0]))


def test_weighted_edge_sample_count_support_and_seed():
    values = torch.tensor([0.0, 1.0, 2.0, 0.0, 5.0, 1.0, 0.0, 3.0, 2.0, 1.0])
    torch.manual_seed(0)
    assert len(weighted_edge_sample(values, 1.0 - 0.8)) == 1  # int(10 * 0.1999...), as the official code
    kept = weighted_edge_sample(values, 0.5)
    assert len(kept) == 5 and len(set(kept.tolist())) == 5 and (values[kept] > 0).all()  # zero weight never drawn
    torch.manual_seed(1)
    a = weighted_edge_sample(values, 0.5)
    torch.manual_seed(1)
    assert torch.equal(a, weighted_edge_sample(values, 0.5))
    assert torch.equal(weighted_edge_sample(values, 1.0), torch.arange(10))
    # p proportional to the value: the heaviest of two edges is drawn first about 5/6 of the time
    torch.manual_seed(2)
    first = torch.stack([weighted_edge_sample(torch.tensor([1.0, 5.0]), 0.5) for _ in range(3000)])
    assert (first == 1).float().mean().item() == pytest.approx(5 / 6, abs=0.03)


def test_batch_softmax_loss_matches_the_official_broadcast():
    torch.manual_seed(0)
    u, p, n = torch.randn(4, 3), torch.randn(4, 3), torch.randn(4, 3)
    tau = 0.2
    # the official form: cosine of (B,1,d) against (B,d) broadcasts to every user x every negative
    neg = F.cosine_similarity(u.unsqueeze(1), n, dim=2)
    pos = F.cosine_similarity(u, p)
    official = torch.logsumexp((neg - pos.unsqueeze(1)) / tau, dim=1).mean()
    torch.testing.assert_close(batch_softmax_loss(u, p, n, tau), official)
    # by hand for one user, 2 negatives
    u1, p1, n1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]), torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    c = 1 / math.sqrt(2)
    hand = math.log(math.exp((0 - c) / 0.5) + math.exp((-1 - c) / 0.5))
    assert batch_softmax_loss(u1.expand(2, 2), p1.expand(2, 2), n1, 0.5).item() == pytest.approx(hand, rel=1e-5)


def test_edge_scorer_hand():
    s = EdgeScorer(2)
    with torch.no_grad():
        for lin in (s.src, s.dst):
            lin.weight.copy_(torch.eye(2))
            lin.bias.zero_()
    a = torch.tensor([[1.0, -2.0], [2.0, 3.0]])
    b = torch.tensor([[3.0, 1.0], [-1.0, 4.0]])
    rows, cols, base = torch.tensor([0, 1]), torch.tensor([1, 0]), torch.tensor([0.5, 2.0])
    # relu(a_0) = [1, 0], relu(b_1) = [0, 4] -> 0; relu(a_1) = [2, 3], relu(b_0) = [3, 1] -> 9
    expected = base * torch.sigmoid(torch.tensor([0.0, 9.0]))
    torch.testing.assert_close(s(rows, cols, a, b, base), expected)


def test_edge_lightgcn_is_layer_mean_of_dense_products():
    rows, cols = torch.tensor([0, 1, 1, 2]), torch.tensor([1, 0, 2, 2])
    values = torch.tensor([0.5, 1.0, 2.0, -1.0], dtype=torch.double, requires_grad=True)
    x = torch.randn(3, 2, dtype=torch.double)
    dense = torch.zeros(3, 3, dtype=torch.double).index_put((rows, cols), values.detach())
    hand = (x + dense @ x + dense @ dense @ x) / 3
    torch.testing.assert_close(edge_lightgcn(rows, cols, values, x, 2), hand)
    assert torch.autograd.gradcheck(lambda v: edge_lightgcn(rows, cols, v, x, 2), (values,))


# -- the model -----------------------------------------------------------------------------------
def _model(tiny_dataset, **overrides):
    data_path, name = tiny_dataset
    return _build("IDFREE", data_path, name, **overrides)


def test_idfree_has_no_id_tables_and_content_buffers(tiny_dataset):
    _, m, _ = _model(tiny_dataset)
    assert not hasattr(m, "user_embedding") and not hasattr(m, "item_embedding")
    for name, p in m.named_parameters():
        assert p.shape[0] != m.n_users, name  # nothing indexed by user id is learned
        assert p.shape[0] != m.n_items or name.startswith("features."), name  # items: only their raw features
    assert m.anchor == "text" and m.others == ["image"]
    # a user's content = mean of its training items' raw features
    u = int(m.train_users[0])
    items = m.train_items[m.train_users == u]
    for mod in m.modalities:
        torch.testing.assert_close(getattr(m, f"user_feat_{mod}")[u], m.modality_feature(mod)[items].mean(0))
    # positional code: row r gets PE(r - 1) (the official 0-based index of the real rows)
    torch.testing.assert_close(m.pe_item[3], sinusoidal_encoding(torch.tensor([2]), m.pe_item.shape[1])[0])


def test_idfree_base_graphs_are_summed_modality_knn(tiny_dataset):
    _, m, _ = _model(tiny_dataset)
    k = m.knn_k
    dense = torch.zeros(m.n_items, m.n_items)
    for mod in m.modalities:
        f = F.normalize(m.modality_feature(mod)[1:], dim=1)
        sim = f @ f.T
        val, idx = sim.topk(k, dim=1)
        dense[1:, 1:] += torch.zeros_like(sim).scatter(1, idx, val)
    ii = torch.zeros(m.n_items, m.n_items).index_put(tuple(m.ii_idx), m.ii_val, accumulate=True)
    torch.testing.assert_close(ii, dense)
    assert (m.ii_idx[0] != 0).all() and (m.uu_idx[0] != 0).all()  # padding rows take no part
    # user-item part: both directions, items offset by n_users
    assert m.ui_idx.shape[1] == 2 * len(torch.unique(m.train_users * m.n_items + m.train_items))
    assert (m.ui_idx[1][m.ui_idx[0] < m.n_users] >= m.n_users).all()


def test_idfree_forward_by_hand(tiny_dataset):
    _, m, _ = _model(tiny_dataset, gcn_layers=2)
    users, items = m.modality_representations()
    enc = m.encoders["text"]
    hand = F.layer_norm(torch.tanh(enc[0](m.features["text"].weight)), (m.pe_item.shape[1],),
                        enc[2].weight, enc[2].bias) + m.pe_item
    torch.testing.assert_close(items["text"], hand)
    i0 = m._fuse(items)
    torch.testing.assert_close(i0, 0.5 * items["text"] + 0.5 * items["image"])
    # training graph without dropout: the re-weighted KNN edges and the user-item edges, normalised
    m.dropout = 0.0
    u_g, i_g, _, _ = m.forward(train=True)
    u0 = m._fuse(users)
    ii_w = m.item_scorer(*m.ii_idx, items["text"], items["image"], m.ii_val)
    uu_w = m.user_scorer(*m.uu_idx, users["text"], users["image"], m.uu_val)
    n = m.n_users + m.n_items
    A = torch.zeros(n, n).index_put(tuple(m.ui_idx), m.ui_val)
    A[: m.n_users, : m.n_users] += torch.zeros(m.n_users, m.n_users).index_put(tuple(m.uu_idx), uu_w)
    A[m.n_users:, m.n_users:] += torch.zeros(m.n_items, m.n_items).index_put(tuple(m.ii_idx), ii_w)
    d = A.sum(1).clamp_min(0.01).pow(-0.5)
    A = d[:, None] * A * d[None, :]
    e0 = torch.cat([u0, i0])
    h = (e0 + A @ e0 + A @ A @ e0) / 3
    torch.testing.assert_close(torch.cat([u_g, i_g]), h, rtol=1e-4, atol=1e-5)


def test_idfree_inference_graph_is_knn_of_fused_and_deterministic(tiny_dataset):
    _, m, _ = _model(tiny_dataset, gcn_layers=1)
    m.eval()
    users, items = m.modality_representations()
    u0, i0 = m._fuse(users), m._fuse(items)
    rows, cols, values = m._graph(users, items, u0, i0, train=False)
    knn = m._knn(i0.detach()).coalesce()
    in_items = (rows >= m.n_users) & (cols >= m.n_users)
    torch.testing.assert_close(values[in_items], knn.values())
    assert torch.equal(rows[in_items] - m.n_users, knn.indices()[0])
    a, b = m.inference_embeddings()
    m._eval_cache = None
    a2, b2 = m.inference_embeddings()
    assert torch.equal(a, a2) and torch.equal(b, b2)


def test_idfree_loss_composition_and_seed(tiny_dataset):
    _, m, train = _model(tiny_dataset)
    batch = next(iter(train))
    user, pos, neg = batch[m.USER_ID], batch[m.ITEM_ID], batch[m.NEG_ITEM_ID]
    m.train()
    torch.manual_seed(5)
    loss = m.calculate_loss(batch)
    torch.manual_seed(5)
    u_g, i_g, users, items = m.forward(train=True)
    hand = (batch_softmax_loss(u_g[user], i_g[pos], i_g[neg], m.tau)
            + info_nce(users["text"][user], users["image"][user], m.tau)
            + info_nce(items["text"][pos], items["image"][pos], m.tau))
    torch.testing.assert_close(loss, hand)
    torch.manual_seed(5)
    assert torch.equal(m.calculate_loss(batch), loss)  # same seed, same edge sample, same loss
    loss.backward()
    assert m.item_scorer.src.weight.grad.abs().sum() > 0 and m.features["image"].weight.grad.abs().sum() > 0
    # one modality: no alignment term, the anchor alone
    _, single, train1 = _model(tiny_dataset, use_modalities=["image"])
    assert single.anchor == "image" and single.others == [] and single.alpha == 1.0
    assert torch.isfinite(single.calculate_loss(next(iter(train1))))


def test_idfree_ablations_run(tiny_dataset):
    for flags in ({"asg": False}, {"auige": False}, {"pe": False}, {"dropout": 0.0}):
        _, m, train = _model(tiny_dataset, **flags)
        assert torch.isfinite(m.calculate_loss(next(iter(train))))
        m.eval()
        u, i = m.inference_embeddings()
        assert torch.isfinite(u).all() and torch.isfinite(i).all()
