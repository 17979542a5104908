"""MICRO and its blocks (learned_knn_edges, intra_inter_info_nce): hand computations on a few numbers,
the item graphs and forward pass against dense matrices, the loss, the graph's gradient on an epoch's
first batch only, determinism."""

import math

import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_mm.data.graphs import learned_knn_edges
from recbole_mm.model.general_recommender.micro import intra_inter_info_nce
from tests.test_models import _build


def _dense_knn(x, k):
    """Official build_sim + build_knn_normalized_graph (sym, dense form)."""
    f = F.normalize(x, dim=1)
    sim = f @ f.T
    val, idx = sim.topk(k, dim=1)
    raw = torch.zeros_like(sim).scatter_(1, idx, val)
    d = raw.sum(1).pow(-0.5)
    return d[:, None] * raw * d[None, :]


# -- generic blocks ------------------------------------------------------------------------------
def test_learned_knn_edges_by_hand():
    x = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])  # cos(0,1) = 0.8, cos(1,2) = 0.6, cos(0,2) = 0
    rows, cols, vals = learned_knn_edges(x, 2, "sym")  # each row: itself and its nearest other item
    dense = torch.zeros(3, 3).index_put_((rows, cols), vals, accumulate=True)
    d0 = d1 = 1.8  # weighted row degrees: 1 + 0.8, 1 + 0.8, 1 + 0.6
    d2 = 1.6
    expected = torch.tensor([[1 / d0, 0.8 / math.sqrt(d0 * d1), 0.0],
                             [0.8 / math.sqrt(d1 * d0), 1 / d1, 0.0],
                             [0.0, 0.6 / math.sqrt(d2 * d1), 1 / d2]])
    torch.testing.assert_close(dense, expected)
    assert len(rows) == 6


def test_learned_knn_edges_match_dense_and_are_differentiable():
    torch.manual_seed(0)
    x = torch.randn(7, 4, requires_grad=True)  # normalize_edges works in float32
    rows, cols, vals = learned_knn_edges(x, 3, "sym")
    dense = torch.zeros(7, 7).index_put((rows, cols), vals, accumulate=True)
    torch.testing.assert_close(dense, _dense_knn(x, 3))
    g1 = torch.autograd.grad((dense * torch.arange(49.0).view(7, 7)).sum(), x)[0]
    g2 = torch.autograd.grad((_dense_knn(x, 3) * torch.arange(49.0).view(7, 7)).sum(), x)[0]
    torch.testing.assert_close(g1, g2)  # the gradient of a dense topk(sim) on its kept entries


def _grace_dense(z1, z2, t):
    """Official batched_contrastive_loss in one block."""
    f = lambda a, b: torch.exp(F.normalize(a) @ F.normalize(b).T / t)
    refl, between = f(z1, z1), f(z1, z2)
    return -torch.log(between.diag() / (refl.sum(1) + between.sum(1) - refl.diag())).mean()


def test_intra_inter_info_nce_by_hand():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z2 = torch.tensor([[3.0, 0.0], [1.0, 1.0]])
    t, c = 0.5, 1 / math.sqrt(2)
    e = lambda s: math.exp(s / t)
    # anchor 0: positive cos(z1_0, z2_0) = 1; negatives z2_1 (c) and z1_1 (0)
    l0 = -math.log(e(1) / (e(1) + e(c) + e(0)))
    # anchor 1: positive cos(z1_1, z2_1) = c; negatives z2_0 (0) and z1_0 (0)
    l1 = -math.log(e(c) / (e(0) + e(c) + e(0)))
    torch.testing.assert_close(intra_inter_info_nce(z1, z2, t), torch.tensor((l0 + l1) / 2))


def test_intra_inter_info_nce_blocks_match_dense():
    torch.manual_seed(1)
    z1 = torch.randn(9, 4, dtype=torch.double, requires_grad=True)
    z2 = torch.randn(9, 4, dtype=torch.double, requires_grad=True)
    ref = _grace_dense(z1, z2, 0.5)
    g_ref = torch.autograd.grad(ref, (z1, z2))
    for block in (4, 9, 100):  # several blocks (recomputed in backward), exactly one, one larger
        out = intra_inter_info_nce(z1, z2, 0.5, block_size=block)
        torch.testing.assert_close(out, ref)
        for g, r in zip(torch.autograd.grad(out, (z1, z2)), g_ref):
            torch.testing.assert_close(g, r)
    torch.testing.assert_close(intra_inter_info_nce(z1, z2, 0.05, block_size=4), _grace_dense(z1, z2, 0.05))


# -- the model -----------------------------------------------------------------------------------
def _batch(m, n=6):
    g = torch.Generator().manual_seed(3)
    return Interaction({m.USER_ID: torch.randint(1, m.n_users, (n,), generator=g),
                        m.ITEM_ID: torch.randint(1, m.n_items, (n,), generator=g),
                        m.NEG_ITEM_ID: torch.randint(1, m.n_items, (n,), generator=g)})


def test_graphs_and_forward_against_dense(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("MICRO", data_path, name, knn_k=3, lambda_coeff=0.7, n_layers=2, n_ui_layers=2)
    edges = m.build_item_graphs()
    real = m.n_items - 1
    for mod, (r, c, v) in edges.items():
        assert len(r) == 2 * 3 * real and r.min() >= 1 and c.min() >= 1  # learned + initial, no padding
        dense = torch.zeros(m.n_items, m.n_items).index_put((r, c), v.detach(), accumulate=True)
        proj = m.projector.proj[mod](m.features[mod].weight)[1:].detach()
        expected = 0.3 * _dense_knn(proj, 3) + 0.7 * _dense_knn(m.modality_feature(mod)[1:], 3)
        torch.testing.assert_close(dense[1:, 1:], expected, rtol=1e-5, atol=1e-6)
        assert dense[0].abs().sum() == 0 and dense[:, 0].abs().sum() == 0
    m.eval()
    users, items = m.inference_embeddings()
    with torch.no_grad():
        e = m.item_embedding.weight
        modal = []
        for r, c, v in edges.values():
            a = torch.zeros(m.n_items, m.n_items).index_put((r, c), v.detach(), accumulate=True)
            modal.append(a @ (a @ e))
        stacked = torch.stack(modal, 1)
        att = torch.softmax(m.fusion.query(torch.tanh(m.fusion.key(stacked))), dim=1)
        fused = (att * stacked).sum(1)
        adj = m.adj.csr.to_dense()
        ego = m.id_embeddings()
        light = (ego + adj @ ego + adj @ (adj @ ego)) / 3
    torch.testing.assert_close(users, light[: m.n_users])
    torch.testing.assert_close(items, light[m.n_users:] + F.normalize(fused, dim=1), rtol=1e-5, atol=1e-6)
    deg = torch.zeros(adj.shape[0]).index_add_(0, torch.arange(adj.shape[0]), adj.sum(1))
    torch.testing.assert_close(deg, torch.ones_like(deg))  # D^-1 (A + I): rows sum to one


def test_loss_by_hand_and_graph_gradient_on_first_batch_only(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("MICRO", data_path, name, reg_weight=1e-3, cl_weight=0.5)
    m.train()
    batch = _batch(m)
    m.pre_epoch_processing()
    loss = m.calculate_loss(batch)
    m._rebuild = True
    users, items, modal, fused = m.forward()
    u, p, n = users[batch[m.USER_ID]], items[batch[m.ITEM_ID]], items[batch[m.NEG_ITEM_ID]]
    bpr = -F.logsigmoid((u * p).sum(1) - (u * n).sum(1)).mean()
    l2 = (u.pow(2).sum() + p.pow(2).sum() + n.pow(2).sum()) / (2 * len(u))
    cl = sum(_grace_dense(modal[k][1:], fused[1:], 0.5) for k in m.modalities)
    torch.testing.assert_close(loss, bpr + 1e-3 * l2 + 0.5 * cl)
    proj = next(iter(m.projector.parameters()))
    m.zero_grad()
    loss.backward()  # the batch that built the graphs: gradient reaches the projections
    assert proj.grad is not None and proj.grad.abs().sum() > 0
    m.zero_grad(set_to_none=True)
    m.calculate_loss(batch).backward()  # a later batch: fixed graphs
    assert proj.grad is None and m.item_embedding.weight.grad.abs().sum() > 0
    assert m.fusion.key.weight.grad.abs().sum() > 0  # the contrastive loss trains the fusion


def test_same_seed_same_numbers(tiny_dataset):
    data_path, name = tiny_dataset
    runs = []
    for _ in range(2):
        _, m, _ = _build("MICRO", data_path, name)
        opt = torch.optim.Adam(m.parameters(), lr=1e-2)
        for step in range(3):
            if step == 0:
                m.pre_epoch_processing()
            opt.zero_grad()
            loss = m.calculate_loss(_batch(m))
            loss.backward()
            opt.step()
        m.eval()
        runs.append((loss.detach(), m.inference_embeddings()[1]))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=0, atol=0)
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=0, atol=0)
