"""DA-MRS: its graphs, weights and loss terms against hand / dense computations on tiny data."""

import math

import pytest
import torch
import torch.nn.functional as F

from recbole_mm.model.general_recommender.damrs import (behaviour_graph, consistent_knn_graphs,
                                                         feedback_weights, graded_neighbour_loss,
                                                         graded_positives, symmetric_bernoulli_kl)
from tests.test_models import _build


def _dense(graph):
    return graph.to_dense() if graph.is_sparse else graph


# -- graphs -------------------------------------------------------------------------------------
def test_consistent_knn_graphs_by_hand():
    a = torch.tensor([[1.0, 0.0], [1.0, 0.1], [0.0, 1.0], [1.0, 0.9]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.2], [1.0, 0.0]])
    ga, gb = consistent_knn_graphs([a, b], k=2)
    na, nb = F.normalize(a, dim=1), F.normalize(b, dim=1)
    ca, cb = na @ na.T, nb @ nb.T
    eligible = (ca >= ca.mean()) & (cb >= cb.mean())  # the mean over all 16 pairs, diagonal included
    for g, c in ((ga, ca), (gb, cb)):
        expect = torch.zeros(4, 4)
        for i in range(4):
            cand = [j for j in range(4) if eligible[i, j]]
            for j in sorted(cand, key=lambda j: -c[i, j].item())[:2]:
                expect[i, j] = 1.0
        deg = expect.sum(1)
        expect = expect / deg.sqrt()[:, None] / deg.sqrt()[None, :].clamp(min=1e-12) * (expect > 0)
        torch.testing.assert_close(_dense(g), expect)
    # row 0: item 1 is close in a (0.995) but far in b (0): not eligible; only itself and item 3 remain
    assert ga.to_dense()[0].nonzero().view(-1).tolist() == [0, 3]
    for g, h in zip((ga, gb), consistent_knn_graphs([a, b], k=2, block_size=1)):  # block-wise = at once
        torch.testing.assert_close(_dense(g), _dense(h))


def test_behaviour_graph_by_hand():
    # items 1..4 (0 = padding); common users: (1,2): 3, (1,3): 2, (2,3): 2, (3,4): 2, (1,4): 1
    pairs = [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (3, 1), (3, 2), (3, 3), (4, 1), (4, 4), (5, 3), (5, 4),
             (6, 3), (6, 4)]
    users, items = torch.tensor(pairs).T
    g = behaviour_graph(users.numpy(), items.numpy(), 7, 5, k=2, min_count=2).to_dense()
    adj = torch.zeros(5, 5)
    adj[1, [1, 2, 3]] = 1  # top-2 of item 1: 2 (3 users), 3 (2 users); 4 (1 user) is below min_count
    adj[2, [2, 1, 3]] = 1
    adj[3, [3, 1, 2]] = 1  # 1, 2 and 4 tie at 2 common users: the two smaller ids
    adj[4, [4, 3]] = 1  # item 1 shares one user only
    deg = adj.sum(1)
    inv = torch.where(deg > 0, deg.pow(-0.5), torch.zeros(5))
    torch.testing.assert_close(g, inv[:, None] * adj * inv[None, :])


# -- loss blocks ---------------------------------------------------------------------------------
def test_symmetric_bernoulli_kl_matches_the_two_kls():
    a, b = torch.tensor([0.3, -2.0, 4.0]), torch.tensor([1.0, 0.5, -1.0])
    p, q = torch.sigmoid(a), torch.sigmoid(b)

    def kl(x, y):
        return x * torch.log(x / y) + (1 - x) * torch.log((1 - x) / (1 - y))

    torch.testing.assert_close(symmetric_bernoulli_kl(a, b), kl(p, q) + kl(q, p))
    assert torch.isfinite(symmetric_bernoulli_kl(torch.tensor([60.0]), torch.tensor([-60.0]))).all()


def test_graded_positives_and_loss_by_hand():
    p1 = torch.tensor([[0.4, 0.3, 0.2, 0.1]])
    p2 = torch.tensor([[0.1, 0.2, 0.3, 0.4]])
    (s1, w1), (s2, w2) = graded_positives([p1, p2], 1)
    # branch 1 ranks 2 p1 + p2 = [.9, .8, .7, .6] -> strong 0; weak: best of p1 among the rest -> 1
    assert (s1.tolist(), w1.tolist()) == ([[0]], [[1]])
    assert (s2.tolist(), w2.tolist()) == ([[3]], [[2]])
    # three branches, one at a time: branch b ranks sum(p) + p_b, its weak ones p_b among the rest
    p3 = torch.tensor([[0.25, 0.05, 0.3, 0.4]])
    out = graded_positives([p1, p2, p3], 1)
    total = p1 + p2 + p3
    for p, (strong, weak) in zip([p1, p2, p3], out):
        assert strong.item() == int((total + p).argmax())
        assert weak.item() == int(p.scatter(1, strong, -1.0).argmax())
    assert [s.item() for s, _ in out] == [0, 3, 3] and [w.item() for _, w in out] == [1, 2, 2]
    cos = torch.tensor([[1.0, 0.5, -0.5, 0.0]])
    e = torch.exp(cos / 0.2)[0]
    expect = -math.log(e[0] / e.sum() + 1e-9) - math.log(e[1] / (e.sum() - e[0]) + 1e-9)
    got = graded_neighbour_loss(cos, torch.tensor([[0]]), torch.tensor([[1]]), 0.2)
    torch.testing.assert_close(got, torch.tensor(expect, dtype=torch.float32))


def test_graded_neighbour_loss_gradient():
    """The one-pass backward equals autograd through the formula (double precision, gradcheck)."""
    torch.manual_seed(0)
    cos = (torch.rand(5, 9, dtype=torch.double) * 2 - 1).requires_grad_(True)
    probs = [torch.softmax(torch.randn(5, 9, dtype=torch.double), 1) for _ in range(2)]
    (strong, weak), _ = graded_positives(probs, 3)
    assert torch.autograd.gradcheck(lambda c: graded_neighbour_loss(c, strong, weak, 0.2), (cos,))

    def formula(c):
        e = torch.exp(c / 0.2)
        total, s_s, s_w = e.sum(1), e.gather(1, strong).sum(1), e.gather(1, weak).sum(1)
        return (-torch.log(s_s / total + 1e-9) - torch.log(s_w / (total - s_s) + 1e-9)).mean()

    ours, ref = graded_neighbour_loss(cos, strong, weak, 0.2), formula(cos)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad(3.0 * ours, cos)[0], torch.autograd.grad(3.0 * ref, cos)[0])
    with torch.no_grad():  # the plain formula when no gradient is needed
        torch.testing.assert_close(graded_neighbour_loss(cos, strong, weak, 0.2), ref.detach())


def test_feedback_weights_by_hand():
    pos = torch.tensor([[0.0, 2.0, -3.0], [1.0, 2.0, 3.0]])  # (branches, batch)
    neg = torch.tensor([[0.0, 0.5, 1.0], [-1.0, 0.0, 2.0]])
    w_pos, w_neg = feedback_weights(pos, neg)
    s = torch.sigmoid(pos)
    n_bar = torch.sigmoid(neg).mean()
    for j in range(3):
        mean, var = s[:, j].mean(), (s[0, j] - s[1, j]) ** 2 / 2  # unbiased variance of two values
        torch.testing.assert_close(w_pos[j], (mean * math.exp(-2 * var)).clamp(0, 1))
        torch.testing.assert_close(w_neg[j], (s[:, j].max() - n_bar).clamp(0, 1) if mean < n_bar else torch.tensor(0.0))
    assert w_neg[0] == 0 and w_neg[2] > 0  # a flip needs a mean under n_bar and a branch above it


# -- the model -----------------------------------------------------------------------------------
def _reference_loss(m, inter):
    """The official code's loss, written densely (two modalities: t, v, and the behaviour branch s)."""
    user, pos, neg = inter["user_id"], inter["item_id"], inter["neg_item_id"]
    adj = m.adj.csr.to_dense()
    ego = m.id_embeddings()
    layers = [ego, adj @ ego, adj @ adj @ ego]
    all_e = torch.stack(layers).mean(0)
    U, I = all_e[: m.n_users], all_e[m.n_users:]
    hs = [g.csr.to_dense() @ m.item_embedding.weight for g in (*m.modal_graphs.values(), m.behaviour)]
    uid, iid = torch.unique(user), torch.unique(torch.cat([pos, neg]))
    probs = [torch.softmax(F.normalize(h[iid], dim=1) @ F.normalize(h[1:], dim=1).T, 1) for h in hs]

    def labels(p1, p2, p3):
        mm = torch.topk(p1 + p2 + p3 + p3, 10, dim=-1)[1]
        return mm, torch.topk(p3.clone().scatter_(1, mm, 0), 10, dim=-1)[1]

    def nd(mm, s, emb, aug):
        ne, na = F.normalize(emb, dim=1), F.normalize(aug, dim=1)
        e = torch.exp(ne @ na.T / 0.2)
        ttl, mms = e.sum(1), e.gather(1, mm).sum(1)
        return torch.mean(-torch.log(mms / ttl + 1e-9) - torch.log(e.gather(1, s).sum(1) / (ttl - mms) + 1e-9))

    t, v, s = hs
    pt, pv, ps = probs
    ai = (nd(*labels(pt, pv, ps), s[iid], s[1:]) + nd(*labels(pt, ps, pv), v[iid], v[1:])
          + nd(*labels(pv, ps, pt), t[iid], t[1:])) / 3
    content = (t + v + s) / 3
    pg = torch.sigmoid(U[uid] @ F.normalize(I[iid], dim=-1).T)
    pc = torch.sigmoid(U[uid] @ F.normalize(content[iid], dim=-1).T)

    def kl(p1, p2):
        return p1 * torch.log(p1) - p1 * torch.log(p2) + (1 - p1) * torch.log(1 - p1) - (1 - p1) * torch.log(1 - p2)

    au = torch.mean(kl(pg, pc) + kl(pc, pg))
    u = U[user]
    pt_ = torch.sigmoid(torch.stack([(u * F.normalize(h[pos], dim=-1)).sum(1) for h in hs]))
    nt_ = torch.sigmoid(torch.stack([(u * F.normalize(h[neg], dim=-1)).sum(1) for h in hs]))
    pw = torch.clamp(pt_.mean(0) * torch.exp(-pt_.var(0)) ** 2, 0, 1)
    nw = torch.clamp((pt_.max(0)[0] - nt_.mean()) * (pt_.mean(0) < nt_.mean()).float(), 0, 1)
    fused = I + content
    ps_, ns_ = (u * fused[pos]).sum(1), (u * fused[neg]).sum(1)
    bpr = -torch.mean(torch.log(torch.sigmoid(ps_ - ns_)) * pw + torch.log(torch.sigmoid(ns_ - ps_)) * nw)
    return bpr + m.neighbor_weight * ai + m.kl_weight * au


def test_loss_matches_the_official_formulation(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, train = _build("DAMRS", data_path, name, kl_weight=0.7, neighbor_weight=0.3)
    m.train()
    inter = next(iter(train))
    loss = m.calculate_loss(inter)
    torch.testing.assert_close(loss, _reference_loss(m, inter), rtol=1e-4, atol=1e-5)
    loss.backward()
    assert m.item_embedding.weight.grad.abs().sum() > 0
    _, again, _ = _build("DAMRS", data_path, name, kl_weight=0.7, neighbor_weight=0.3)
    assert again.calculate_loss(inter).item() == loss.item()  # same seed, same number


def test_chunked_item_relation_loss_equals_the_whole(tiny_dataset):
    """``ai_chunk_rows`` (rows of L_AI at a time, recomputed in backward): the same loss and gradients
    as all rows at once, up to float summation order; a chunk smaller than the batch's items."""
    data_path, name = tiny_dataset
    results, inter = [], None
    for chunk in (0, 3):
        _, m, train = _build("DAMRS", data_path, name, neighbor_weight=0.5, ai_chunk_rows=chunk)
        m.train()
        inter = inter or next(iter(train))  # the same batch (and negatives) for both
        n_rows = len(torch.unique(torch.cat([inter[m.ITEM_ID], inter[m.NEG_ITEM_ID]])))
        assert n_rows > 3 * 2  # at least three chunks
        loss = m.calculate_loss(inter)
        loss.backward()
        results.append((loss.detach(), m.item_embedding.weight.grad.clone()))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="ai_chunk_rows"):
        _build("DAMRS", data_path, name, ai_chunk_rows=-1)


def test_graphs_and_inference(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("DAMRS", data_path, name, knn_k=4)
    n = m.n_items
    feats = [m.modality_feature(x)[1:] for x in m.modalities]
    inner = [_dense(g) for g in consistent_knn_graphs(feats, 4)]
    for g, ref in zip(m.modal_graphs.values(), inner):
        dense = g.csr.to_dense()
        assert dense[0].abs().sum() == 0 and dense[:, 0].abs().sum() == 0  # padding takes no part
        torch.testing.assert_close(dense[1:, 1:], ref)
        assert ((dense[1:] > 0).sum(1) <= 4).all()
    b = m.behaviour.csr.to_dense()
    assert b[0].abs().sum() == 0 and (b.diagonal()[1:] > 0).all()  # self-loops on real items
    m.eval()
    users, items = m.inference_embeddings()
    ego = m.id_embeddings()
    adj = m.adj.csr.to_dense()
    all_e = (ego + adj @ ego + adj @ adj @ ego) / 3
    hs = [g.csr.to_dense() @ m.item_embedding.weight for g in (*m.modal_graphs.values(), m.behaviour)]
    torch.testing.assert_close(users, all_e[: m.n_users])
    torch.testing.assert_close(items, all_e[m.n_users:] + torch.stack(hs).mean(0))
    assert items.shape == (n, m.embedding_size)
    # a second build reads the cached graphs: the same operators
    _, m2, _ = _build("DAMRS", data_path, name, knn_k=4)
    for g, h in zip((*m.modal_graphs.values(), m.behaviour), (*m2.modal_graphs.values(), m2.behaviour)):
        torch.testing.assert_close(g.csr.to_dense(), h.csr.to_dense())
