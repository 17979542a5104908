"""MMGCL: its blocks against hand computations, the encoder against dense matrices, the two views
(modality edge dropout, modality masking) and the hard negatives, the loss, determinism."""

import math

import pytest
import torch
import torch.nn.functional as F

from recbole_mm.model import augment
from recbole_mm.model.general_recommender.mmgcl import info_nce_hard, swap_block
from recbole_mm.model.loss import bpr_loss, info_nce
from tests.test_models import _build


# -- generic blocks ------------------------------------------------------------------------------
def test_info_nce_hard_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    b = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    h = torch.tensor([[-1.0, 0.0], [1.0, 1.0]])
    t = 0.5
    r = 1 / math.sqrt(2)
    # cosines: a0.b0 = r, a0.b1 = 0, a0.h0 = -1; a1.b0 = r, a1.b1 = 1, a1.h1 = r
    l0 = -math.log(math.exp(r / t) / (math.exp(r / t) + math.exp(0) + math.exp(-1 / t)))
    l1 = -math.log(math.exp(1 / t) / (math.exp(r / t) + math.exp(1 / t) + math.exp(r / t)))
    assert info_nce_hard(a, b, h, t).item() == pytest.approx((l0 + l1) / 2, rel=1e-6)
    # without the hard negative: the plain in-batch InfoNCE
    torch.testing.assert_close(info_nce_hard(a, b, None, t), info_nce(a, b, t))


def test_info_nce_hard_gradients_match_autograd():
    """The written-out backward of the row log-sum-exp equals autograd's through the naive form."""
    torch.manual_seed(0)

    def naive(a, b, h, t):
        a, b = F.normalize(a, dim=-1), F.normalize(b, dim=-1)
        logits = a @ b.T / t
        if h is not None:
            logits = torch.cat([logits, (a * F.normalize(h, dim=-1)).sum(-1, keepdim=True) / t], 1)
        return (torch.logsumexp(logits, 1) - logits.diagonal()).mean()

    for with_hard in (True, False):
        x = [torch.randn(7, 4, dtype=torch.float64, requires_grad=True) for _ in range(3)]
        h = x[2] if with_hard else None
        ours = torch.autograd.grad(info_nce_hard(x[0], x[1], h, 0.3), x[:3] if with_hard else x[:2])
        ref = torch.autograd.grad(naive(x[0], x[1], h, 0.3), x[:3] if with_hard else x[:2])
        for g, r in zip(ours, ref):
            torch.testing.assert_close(g, r)


def test_swap_block_by_hand():
    x = torch.arange(6.0).view(1, 6)  # three blocks of width 2
    out = swap_block(x, torch.tensor([[9.0, 8.0]]), 1)
    torch.testing.assert_close(out, torch.tensor([[0.0, 1.0, 9.0, 8.0, 4.0, 5.0]]))
    torch.testing.assert_close(swap_block(x, torch.tensor([[7.0, 7.0]]), 2), torch.tensor([[0.0, 1, 2, 3, 7, 7]]))


# -- the model -------------------------------------------------------------------------------------
def _dense_lightgcn(adj, ego, layers):
    out, h = [ego], ego
    for _ in range(layers):
        h = adj @ h
        out.append(h)
    return torch.stack(out).mean(0)


def test_encoder_against_dense_matrices(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("MMGCL", data_path, name, n_layers=2)
    m.eval()
    adj = m.adj.csr.to_dense()
    feats = {x: F.normalize(m.modality_feature(x), dim=1) for x in m.modalities}
    users = m.user_embedding.weight
    blocks = [_dense_lightgcn(adj, torch.cat([users, m.item_embedding.weight]), 2)]
    for x in m.modalities:
        lin = m.projector.proj[x]
        blocks.append(_dense_lightgcn(adj, torch.cat([users, feats[x] @ lin.weight.T + lin.bias]), 2))
    h = torch.cat(blocks, 1)
    u_exp = h[:m.n_users] @ m.read_user.weight.T + m.read_user.bias
    i_exp = h[m.n_users:] @ m.read_item.weight.T + m.read_item.bias
    u, i = m.inference_embeddings()
    torch.testing.assert_close(u, u_exp, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(i, i_exp, rtol=1e-4, atol=1e-5)


def test_views_edge_dropout_per_branch_and_masking_one_modality(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("MMGCL", data_path, name, n_layers=2, edge_dropout=0.3, mask_mode="zero",
                     mask_p={"image": 0.0, "text": 1.0})  # always mask text
    m.train()
    inputs = m.item_inputs()
    ego = m.ego(inputs)
    full = m.propagate(ego)
    torch.manual_seed(5)
    view1, view2 = m.views(ego, full, inputs)
    # view 1 by hand: the same draws -- one independently dropped graph per branch
    torch.manual_seed(5)
    d = m.embedding_size
    graphs = augment.modality_edge_dropout(m.adj, range(m.n_branches), 0.3)
    masks = [graphs[k].csr.values() > 0 for k in range(m.n_branches)]
    assert any((masks[0] != mk).any() for mk in masks[1:])  # independent draws
    assert all(0.5 < mk.float().mean() < 0.9 for mk in masks)  # about 70 % of the edges kept
    for k in range(m.n_branches):
        expected = _dense_lightgcn(graphs[k].csr.to_dense(), ego[:, k * d:(k + 1) * d], 2)
        torch.testing.assert_close(view1[:, k * d:(k + 1) * d], expected, rtol=1e-4, atol=1e-5)
    # view 2: the text branch propagates zero item inputs (only user IDs), the others are the full view
    k = 1 + m.modalities.index("text")
    zero_ego = torch.cat([m.user_embedding.weight, torch.zeros(m.n_items, d)])
    torch.testing.assert_close(view2[:, k * d:(k + 1) * d], _dense_lightgcn(m.adj.csr.to_dense(), zero_ego, 2),
                               rtol=1e-4, atol=1e-5)
    others = [j for j in range(m.n_branches) if j != k]
    for j in others:
        torch.testing.assert_close(view2[:, j * d:(j + 1) * d], full[:, j * d:(j + 1) * d])


def test_loss_is_bpr_plus_weighted_contrast(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, train = _build("MMGCL", data_path, name)
    m.train()
    batch = next(iter(train))
    user, pos, neg = batch["user_id"], batch["item_id"], batch["neg_item_id"]
    m.ssl_alpha = 0.0  # BPR alone, on the fused full-graph representations
    with torch.no_grad():
        u, i = m.inference_embeddings()
        expected = bpr_loss((u[user] * i[pos]).sum(1), (u[user] * i[neg]).sum(1))
    torch.testing.assert_close(m.calculate_loss(batch), expected)
    m.ssl_alpha = 0.5
    torch.manual_seed(3)
    loss = m.calculate_loss(batch)
    torch.manual_seed(3)  # the same draws, by the model's own pieces
    inputs = m.item_inputs()
    ego = m.ego(inputs)
    full = m.propagate(ego)
    ssl = m.ssl_loss(*m.views(ego, full, inputs), user, pos, neg)
    torch.testing.assert_close(loss, expected + 0.5 * ssl)
    assert ssl > 0
    # the hard negatives only add to the denominators: dropping them lowers the contrastive loss
    m.hard_negative = False
    torch.manual_seed(3)
    inputs = m.item_inputs()
    ego = m.ego(inputs)
    full = m.propagate(ego)
    assert m.ssl_loss(*m.views(ego, full, inputs), user, pos, neg) < ssl


def test_same_seed_same_numbers_and_deterministic_inference(tiny_dataset):
    data_path, name = tiny_dataset
    losses, batch = [], None
    for _ in range(2):
        _, m, train = _build("MMGCL", data_path, name)  # seeds the initialisation
        m.train()
        batch = next(iter(train)) if batch is None else batch
        torch.manual_seed(11)  # the views' draws
        loss = m.calculate_loss(batch)
        loss.backward()
        losses.append((loss.item(), m.read_item.weight.grad.clone()))
    assert losses[0][0] == losses[1][0]
    torch.testing.assert_close(losses[0][1], losses[1][1])
    m.eval()
    a, b = m.inference_embeddings(), m.inference_embeddings()
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a[1], b[1])


def test_bad_options_are_refused(tiny_dataset):
    data_path, name = tiny_dataset
    with pytest.raises(ValueError, match="mask_mode"):
        _build("MMGCL", data_path, name, mask_mode="blur")
    with pytest.raises(ValueError, match="modality weights"):
        _build("MMGCL", data_path, name, mask_p={"audio": 1.0})


def test_contrast_pairs_users_and_items_across_views(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, train = _build("MMGCL", data_path, name)
    m.train()
    batch = next(iter(train))
    user, pos, neg = batch["user_id"], batch["item_id"], batch["neg_item_id"]
    torch.manual_seed(0)
    view1, view2 = torch.randn(2, m.n_users + m.n_items, m.embedding_size * m.n_branches)
    u1, i1, u2, i2 = view1[:m.n_users], view1[m.n_users:], view2[:m.n_users], view2[m.n_users:]
    t, d = m.ssl_temp, m.embedding_size
    m.hard_negative = False
    plain = (info_nce(m.read_user(u1[user]), m.read_item(i2[pos]), t)
             + info_nce(m.read_item(i1[pos]), m.read_user(u2[user]), t))
    torch.testing.assert_close(m.ssl_loss(view1, view2, user, pos, neg), plain)
    m.hard_negative = True
    torch.manual_seed(4)
    k = 1 + int(torch.randint(len(m.modalities), ()))  # the branch ssl_loss will swap
    hard_i = i2[pos].clone()
    hard_i[:, k * d:(k + 1) * d] = i2[neg][:, k * d:(k + 1) * d]  # the positive with the negative's branch k
    hard_u = u2[user].clone()
    hard_u[:, k * d:(k + 1) * d] = u2[user.roll(1)][:, k * d:(k + 1) * d]  # the user with the previous user's
    expected = (info_nce_hard(m.read_user(u1[user]), m.read_item(i2[pos]), m.read_item(hard_i), t)
                + info_nce_hard(m.read_item(i1[pos]), m.read_user(u2[user]), m.read_user(hard_u), t))
    torch.manual_seed(4)
    torch.testing.assert_close(m.ssl_loss(view1, view2, user, pos, neg), expected)
