"""MGAT: the gated attention, one layer, the branches, pooling and loss against hand computations on a
few numbers; gradients, determinism."""

import math

import pytest
import torch
import torch.nn.functional as F

from recbole_mm.model.general_recommender.mgat import GatedGraphLayer, gated_attention
from recbole_mm.model.layers import EdgeGraph
from tests.test_models import _build

# a symmetric 4-node graph: 0 - 1, 0 - 2, 0 - 3, 1 - 2 (degrees 3, 2, 2, 1)
UND = [(0, 1), (0, 2), (0, 3), (1, 2)]
ROWS = torch.tensor([a for a, b in UND] + [b for a, b in UND])
COLS = torch.tensor([b for a, b in UND] + [a for a, b in UND])
DEG = torch.tensor([3.0, 2.0, 2.0, 1.0])
Z = torch.tensor([[1.0, 0.0], [0.5, -1.0], [-2.0, 1.0], [0.0, 2.0]])


def _lrelu(v):
    return v if v > 0 else 0.01 * v


def _hand_attention(z):
    """Per edge (h, t): s = <z_h, lrelu(z_t)>, g = sigmoid(s / sqrt(deg_t)), softmax over t of g s."""
    logits = {}
    for h in range(4):
        for t in range(4):
            if (h, t) in UND or (t, h) in UND:
                s = sum(float(z[h, k]) * _lrelu(float(z[t, k])) for k in range(2))
                g = 1 / (1 + math.exp(-s / math.sqrt(float(DEG[t]))))
                logits[(h, t)] = g * s
    att = {}
    for (h, t), v in logits.items():
        denom = sum(math.exp(w) for (h2, _), w in logits.items() if h2 == h)
        att[(h, t)] = math.exp(v) / denom
    return att


def test_gated_attention_by_hand():
    g = EdgeGraph(ROWS, COLS, 4)
    a = gated_attention(g, Z, DEG.pow(-0.5))
    expected = _hand_attention(Z)
    for k, (h, t) in enumerate(zip(g.rows.tolist(), g.cols.tolist())):
        assert a[k].item() == pytest.approx(expected[(h, t)], rel=1e-5)
    # edge (3 <- 0): node 3's only neighbour gets weight 1
    assert a[(g.rows == 3)].item() == pytest.approx(1.0)
    # one spot value written out: edge 1 <- 0: s = <[.5,-1], [1,0]> = 0.5, g = sigmoid(.5/sqrt 3);
    # edge 1 <- 2: s = <[.5,-1], lrelu([-2,1])> = -0.01 - 1 = -1.01, g = sigmoid(-1.01/sqrt 2)
    s10, s12 = 0.5, -1.01
    l10, l12 = s10 / (1 + math.exp(-s10 / math.sqrt(3))), s12 / (1 + math.exp(-s12 / math.sqrt(2)))
    k = int(((g.rows == 1) & (g.cols == 0)).nonzero())
    assert a[k].item() == pytest.approx(math.exp(l10) / (math.exp(l10) + math.exp(l12)), rel=1e-5)


def test_edge_dot_gradients_match_gather_form():
    """The written-out backward of the edge-wise dot equals autograd's through gather-multiply-sum."""
    torch.manual_seed(0)
    g = EdgeGraph(ROWS, COLS, 4)
    w = torch.randn(g.n_edges, dtype=torch.float64)
    x, y = (torch.randn(4, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    ours = torch.autograd.grad((w * g.edge_dot(x, y)).sum(), (x, y))
    ref = torch.autograd.grad((w * (x[g.rows] * y[g.cols]).sum(1)).sum(), (x, y))
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a, b)


def test_gated_layer_by_hand():
    torch.manual_seed(0)
    g = EdgeGraph(ROWS, COLS, 4)
    layer = GatedGraphLayer(2, 2)
    with torch.no_grad():
        layer.conv.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        layer.conv_bias.copy_(torch.tensor([0.1, -0.2]))
        layer.self_proj.weight.copy_(torch.eye(2)), layer.self_proj.bias.zero_()
        layer.gate_proj.weight.copy_(torch.ones(2, 2)), layer.gate_proj.bias.fill_(0.5)
    x = Z.clone()
    ids = torch.full((4, 2), 0.25)
    out = layer(g, x, ids, DEG.pow(-0.5))
    z = x @ layer.conv.detach()
    att = _hand_attention(z)
    # node 0 <- 1, 2, 3: e_N = normalize(sum_t a_0t z_t + b)
    agg = sum(att[(0, t)] * z[t] for t in (1, 2, 3)) + torch.tensor([0.1, -0.2])
    h = F.leaky_relu(agg / agg.norm())
    x_hat = F.leaky_relu(x[0]) + 0.25
    expected = F.leaky_relu(h.sum() + 0.5 + x_hat)  # W_g = ones: both outputs add sum(h)
    torch.testing.assert_close(out[0].detach(), expected)


def test_gated_layer_gradients():
    torch.manual_seed(1)
    g = EdgeGraph(ROWS, COLS, 4).double()
    layer = GatedGraphLayer(3, 2).double()
    x = torch.randn(4, 3, dtype=torch.double, requires_grad=True)
    ids = torch.randn(4, 2, dtype=torch.double)
    inv = DEG.double().pow(-0.5)
    assert torch.autograd.gradcheck(lambda v: layer(g, v, ids, inv), (x,))
    assert torch.autograd.gradcheck(lambda w: F.normalize(g(gated_attention(g, x.detach() @ w, inv), x.detach() @ w)),
                                    (layer.conv.detach().clone().requires_grad_(),))


def test_mgat_branches_pooling_and_layers(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("MGAT", data_path, name, dim_latent=12, n_layers=2)
    nu = m.n_users
    assert m.graph.n_edges == 2 * len(m.train_users)
    # degrees from the training edges (users and items), as |N|^-1/2
    user_deg = torch.bincount(m.train_users, minlength=nu).float()
    item_deg = torch.bincount(m.train_items, minlength=m.n_items).float()
    torch.testing.assert_close(m.inv_sqrt_deg[1:nu], user_deg[1:].pow(-0.5))  # id 0: padding, no edges
    torch.testing.assert_close(m.inv_sqrt_deg[nu + 1:], item_deg[1:].pow(-0.5))
    with torch.no_grad():
        b = m.branches["image"]
        assert b.preference.shape == (nu, 12) and b.layers[0].conv.shape == (12, 12)
        assert b.layers[1].conv.shape == (16, 16)
        x0 = F.normalize(torch.cat([b.preference, torch.tanh(b.mlp(m.modality_feature("image")))]), dim=1)
        x1 = b.layers[0](m.graph, x0, m.id_embedding, m.inv_sqrt_deg)
        x2 = b.layers[1](m.graph, x1, m.id_embedding, m.inv_sqrt_deg)
        rep_image = torch.cat([x1, x2], dim=1)
        torch.testing.assert_close(b(m.graph, m.modality_feature("image"), m.id_embedding, m.inv_sqrt_deg), rep_image)
        reps = [br(m.graph, m.modality_feature(k), m.id_embedding, m.inv_sqrt_deg) for k, br in m.branches.items()]
        table = m.forward()
        assert table.shape == (nu + m.n_items, 32)
        torch.testing.assert_close(table, (reps[0] + reps[1]) / 2)  # mean over modalities
        users, items = m.inference_embeddings()
        torch.testing.assert_close(users, table[:nu])
        torch.testing.assert_close(items, table[nu:])


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_mgat_loss_by_hand(tiny_dataset, reduction):
    data_path, name = tiny_dataset
    _, m, train = _build("MGAT", data_path, name, loss_reduction=reduction)
    batch = next(iter(train))
    user, pos, neg = batch[m.USER_ID], batch[m.ITEM_ID], batch[m.NEG_ITEM_ID]
    with torch.no_grad():
        t = m.forward()
        nu = m.n_users
        terms = [-math.log2(1 / (1 + math.exp(-(float(t[u] @ t[p + nu]) - float(t[u] @ t[n + nu])))))
                 for u, p, n in zip(user[:5].tolist(), pos[:5].tolist(), neg[:5].tolist())]
        loss5 = m.calculate_loss(batch[torch.arange(5)])
    expected = sum(terms) if reduction == "sum" else sum(terms) / 5 * math.log(2)
    assert loss5.item() == pytest.approx(expected, rel=1e-4)


def test_mgat_gradients_reach_every_part(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, train = _build("MGAT", data_path, name, n_layers=2)
    m.calculate_loss(next(iter(train))).backward()
    for name_, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name_


def test_mgat_bad_config(tiny_dataset):
    data_path, name = tiny_dataset
    with pytest.raises(ValueError, match="loss_reduction"):
        _build("MGAT", data_path, name, loss_reduction="max")
    with pytest.raises(ValueError, match="n_layers"):
        _build("MGAT", data_path, name, n_layers=0)


def test_mgat_same_seed_same_numbers(tiny_dataset):
    data_path, name = tiny_dataset
    results, batches = [], None
    for _ in range(2):
        _, m, train = _build("MGAT", data_path, name)
        batches = batches or [b for _, b in zip(range(2), train)]
        opt = torch.optim.Adam(m.parameters(), lr=0.01, weight_decay=0.1)
        for batch in batches:
            loss = m.calculate_loss(batch)
            opt.zero_grad(), loss.backward(), opt.step()
        m.eval()
        results.append((loss.detach(), m.inference_embeddings()[1]))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)
    torch.testing.assert_close(results[0][1], results[1][1], rtol=0, atol=0)
