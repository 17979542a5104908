"""recbole_mm.model.augment: every augmentation against a hand computation on a few numbers,
seeded by a generator (same seed -> same view) or the global RNG."""

import math

import pytest
import torch

from recbole_mm.data import graphs
from recbole_mm.model import augment
from recbole_mm.model.layers import SparseOperator


def _gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _ui_graph():
    # 2 users, 3 items: u0-i0, u0-i1, u1-i1, u1-i2 (nodes: users 0-1, items 2-4)
    adj = graphs.bipartite_norm_adj(torch.tensor([0, 0, 1, 1]), torch.tensor([0, 1, 1, 2]), 2, 3)
    return SparseOperator(adj, symmetric=True)


def test_choose_modality_follows_the_cumulative_shares():
    u = torch.rand((), generator=_gen(3)).item()  # the one draw choose_modality makes
    expected = "a" if u < 0.25 else "b"
    assert augment.choose_modality(["a", "b"], [0.25, 0.75], _gen(3)) == expected
    assert augment.choose_modality(["a", "b"], {"a": 0.0, "b": 2.0}, _gen(3)) == "b"  # renormalised, never "a"
    assert augment.choose_modality(["a", "b"], [1.0, 0.0], _gen(5)) == "a"
    draws = [augment.choose_modality(["a", "b", "c"], None, _gen(s)) for s in range(60)]
    assert set(draws) == {"a", "b", "c"}  # uniform by default
    with pytest.raises(ValueError):
        augment.choose_modality(["a", "b"], [1.0])


def test_modality_mask_zero_and_random():
    feats = {"t": torch.tensor([[1.0, 2.0], [3.0, 4.0]]), "v": torch.tensor([[5.0], [6.0]])}
    zero = augment.modality_mask(feats, "t", "zero")
    torch.testing.assert_close(zero["t"], torch.zeros(2, 2))
    assert zero["v"] is feats["v"] and feats["t"][0, 0] == 1.0  # others untouched, input not modified
    rnd = augment.modality_mask(feats, "t", "random", _gen(1))
    std = feats["t"].std()  # sqrt(5/3)
    torch.testing.assert_close(rnd["t"], torch.randn((2, 2), generator=_gen(1)) * std)
    assert math.isclose(float(std), math.sqrt(5 / 3), rel_tol=1e-6)
    torch.testing.assert_close(augment.modality_mask(feats, "t", "random", _gen(1))["t"], rnd["t"])  # seeded
    with pytest.raises(KeyError):
        augment.modality_mask(feats, "x")
    with pytest.raises(ValueError):
        augment.modality_mask(feats, "t", "blur")


def test_edge_keep_mask_is_bernoulli():
    keep = augment.edge_keep_mask(5, 0.4, _gen(2))
    torch.testing.assert_close(keep, torch.rand(5, generator=_gen(2)) >= 0.4)
    assert augment.edge_keep_mask(1000, 0.0).all()
    with pytest.raises(ValueError):
        augment.edge_keep_mask(3, 1.0)


def test_edge_dropout_drops_both_directions_and_renormalises():
    g = _ui_graph()
    torch.manual_seed(0)
    # which undirected edges are kept: find a seed that keeps exactly u0-i0, u0-i1, u1-i2 (drops u1-i1)
    dropped = None
    for seed in range(200):
        out = augment.edge_dropout(g, 0.3, _gen(seed))
        dense = out.csr.to_dense()
        if dense[3, 1] == 0 and dense[2, 0] > 0 and dense[3, 0] > 0 and dense[4, 1] > 0:
            dropped = out
            break
    assert dropped is not None
    dense = dropped.csr.to_dense()
    torch.testing.assert_close(dense, dense.T)  # both directions of an edge go together
    torch.testing.assert_close(dropped.csr_t.to_dense(), dense.T)
    # kept degrees: u0 = 2, u1 = 1, i0 = 1, i1 = 1, i2 = 1
    expected = torch.zeros(5, 5)
    for (r, c, v) in [(0, 2, 1 / math.sqrt(2)), (0, 3, 1 / math.sqrt(2)), (1, 4, 1.0)]:
        expected[r, c] = expected[c, r] = v
    torch.testing.assert_close(dense, expected)
    x = torch.randn(5, 3)
    torch.testing.assert_close(dropped @ x, expected @ x)
    # rescaled (no renormalisation): kept entries / (1 - rate)
    resc = augment.edge_dropout(g, 0.3, _gen(seed), renormalize=False).csr.to_dense()
    full = g.csr.to_dense()
    torch.testing.assert_close(resc, torch.where(dense > 0, full / 0.7, torch.zeros_like(full)))
    assert augment.edge_dropout(g, 0.0).csr.values().tolist() == pytest.approx(g.csr.values().tolist())
    # entry-wise (symmetric=False): each stored entry on its own draw, in edges() order
    values = g.csr.values()
    keep = augment.edge_keep_mask(len(values), 0.3, _gen(seed)).to(values.dtype)
    loose = augment.edge_dropout(g, 0.3, _gen(seed), renormalize=False, symmetric=False)
    torch.testing.assert_close(loose.csr.values(), values * keep / 0.7)
    torch.testing.assert_close(loose.csr_t.to_dense(), loose.csr.to_dense().T)


def test_modality_edge_dropout_draws_independently_and_repeats_with_the_seed():
    g = _ui_graph()
    a = augment.modality_edge_dropout(g, ["id", "t", "v"], 0.5, _gen(7))
    b = augment.modality_edge_dropout(g, ["id", "t", "v"], 0.5, _gen(7))
    assert list(a) == ["id", "t", "v"]
    for k in a:
        torch.testing.assert_close(a[k].csr.to_dense(), b[k].csr.to_dense())
    masks = [tuple((a[k].csr.values() > 0).tolist()) for k in a]
    gen = _gen(7)  # the same three draws by hand: one keep mask over the 4 undirected edges each
    ids, n = augment._undirected_index(g)
    by_hand = [tuple(augment.edge_keep_mask(n, 0.5, gen)[ids].tolist()) for _ in range(3)]
    assert masks == by_hand


def test_feature_dropout_by_hand():
    x = torch.tensor([[1.0, -2.0, 3.0], [4.0, 5.0, -6.0]])
    keep = torch.rand(x.shape, generator=_gen(4)) >= 0.5
    torch.testing.assert_close(augment.feature_dropout(x, 0.5, _gen(4)), x * keep / 0.5)
    assert augment.feature_dropout(x, 0.0) is x


def test_uniform_noise_by_hand():
    e = torch.tensor([[1.0, -2.0], [-0.5, 0.0]])
    u = torch.rand(e.shape, generator=_gen(9))
    noise = u / u.norm(dim=1, keepdim=True)
    expected = e + torch.sign(e) * noise * 0.1
    out = augment.uniform_noise(e, 0.1, _gen(9))
    torch.testing.assert_close(out, expected)
    assert out[1, 1] == 0.0  # sign(0) = 0: zero entries stay
    torch.testing.assert_close((out - e)[0].norm(), torch.tensor(0.1))  # a row with no zeros moves by eps
    assert ((out - e) * e >= 0).all()  # into its own orthant
    torch.manual_seed(1)
    a = augment.uniform_noise(e, 0.1)
    torch.manual_seed(1)
    torch.testing.assert_close(augment.uniform_noise(e, 0.1), a)  # the global RNG, seeded


# -- the models that draw their views here ------------------------------------------------------

def _counting(monkeypatch, name):
    """Wrap ``augment.<name>`` so that the test sees every call the models make."""
    calls, original = [], getattr(augment, name)

    def wrapper(*args, **kwargs):
        calls.append(args)
        return original(*args, **kwargs)

    monkeypatch.setattr(augment, name, wrapper)
    return calls


def test_bm3_target_views_are_feature_dropout(tiny_dataset, monkeypatch):
    from tests.test_models import _build

    data_path, name = tiny_dataset
    _, m, train = _build("BM3", data_path, name, dropout=0.3)
    calls = _counting(monkeypatch, "feature_dropout")
    batch = next(iter(train))
    torch.manual_seed(1)
    loss = m.calculate_loss(batch)
    assert len(calls) == 2 + len(m.modalities)  # user, item and one per modality target view
    assert all(rate == 0.3 for _, rate in calls)
    torch.manual_seed(1)
    torch.testing.assert_close(m.calculate_loss(batch), loss)  # same seed -> same views
    _, m0, _ = _build("BM3", data_path, name, dropout=0.0)
    # no dropout: the targets are the online representations themselves
    u_all, i_all = m0.forward()
    item = batch[m0.ITEM_ID]
    torch.testing.assert_close(augment.feature_dropout(i_all[item], 0.0), i_all[item])


def test_slmrec_views_come_from_augment(tiny_dataset, monkeypatch):
    from tests.test_models import _build

    data_path, name = tiny_dataset
    _, m, train = _build("SLMRec", data_path, name, ssl_task="FD+FM", dropout_rate=0.2)
    dropouts = _counting(monkeypatch, "feature_dropout")
    chosen = _counting(monkeypatch, "choose_modality")
    masked = _counting(monkeypatch, "modality_mask")
    m.train()
    m.calculate_loss(next(iter(train)))
    assert len(dropouts) == 2 * m.n_layers and all(rate == 0.2 for _, rate in dropouts)  # two FD views
    assert len(chosen) == 2 and len(masked) == 2  # two FM views, two different masked views
    assert len(chosen[1][0]) == m.n_views - 1 and chosen[1][0] != chosen[0][0]
    # the mask of a view zeroes exactly the block of the view drawn for it
    torch.manual_seed(4)
    first = augment.choose_modality(list(range(m.n_views)))
    torch.manual_seed(4)
    mask = m.masks()
    d = m.embedding_size
    assert mask[0, first * d:(first + 1) * d].abs().sum() == 0 and mask[0].sum() == d * (m.n_views - 1)
    m.eval()  # no dropout at inference
    ego = m.ego_views()
    torch.testing.assert_close(m.propagate_views(ego, 0.2), m.propagate_views(ego, 0.0))
