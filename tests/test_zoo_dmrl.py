"""DMRL and its blocks: the factor split, the per-factor modality attention against the naive
concatenate-and-normalise form and a hand computation, the distance correlation against its
definition, the hardest-negative loss, determinism."""

import math

import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_mm.model.layers import FactorModalityAttention, split_factors
from recbole_mm.model.loss import disentangle_loss, distance_correlation_matrix
from tests.test_models import _build


def test_split_factors():
    x = torch.arange(12.0).view(2, 6)
    f = split_factors(x, 3)
    assert f.shape == (2, 3, 2)
    torch.testing.assert_close(f[1, 2], torch.tensor([10.0, 11.0]))  # factor k = columns 2k, 2k+1


def _naive_scores(att, u, xs):
    """The paper's form: normalise the concatenation [u_k; x_1k; ...], W_1, tanh, W_2, softmax."""
    z = F.normalize(torch.cat([u, *xs], dim=-1), dim=-1)
    a = att.out(torch.tanh(att.hidden(z))).softmax(-1)
    dots = torch.stack([(u * x).sum(-1) for x in xs], dim=-1)
    return (a * F.softplus(dots)).sum((-1, -2)), a


def test_attention_matches_concatenated_form_and_all_pairs():
    torch.manual_seed(0)
    att = FactorModalityAttention(factor_size=3, n_sources=3)
    u = torch.randn(4, 2, 3)
    xs = [torch.randn(4, 2, 3) for _ in range(3)]
    naive, weights = _naive_scores(att, u, xs)
    torch.testing.assert_close(att(u, xs), naive)
    torch.testing.assert_close(att.attention(u, xs), weights)
    torch.testing.assert_close(weights.sum(-1), torch.ones(4, 2))
    # all pairs: B users x N items equals aligned scoring of every (user, item) combination
    items = [torch.randn(5, 2, 3) for _ in range(3)]
    full = att(u, items, all_pairs=True)
    assert full.shape == (4, 5)
    aligned = att(u.repeat_interleave(5, 0), [x.repeat(4, 1, 1) for x in items]).view(4, 5)
    torch.testing.assert_close(full, aligned)


def test_attention_hand():
    # one factor of size 1, two sources (item ID, one modality); W_1 = [[1, 0, 0], [0, 0, 1]], b_1 = 0,
    # W_2 = I: z = [u, i, x] / ||.|| = [1, 2, 2] / 3 -> logits tanh(1/3), tanh(2/3)
    att = FactorModalityAttention(factor_size=1, n_sources=2)
    with torch.no_grad():
        att.hidden.weight.copy_(torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
        att.hidden.bias.zero_()
        att.out.weight.copy_(torch.eye(2))
    u, i, x = torch.tensor([[[1.0]]]), torch.tensor([[[2.0]]]), torch.tensor([[[2.0]]])
    e0, e1 = math.exp(math.tanh(1 / 3)), math.exp(math.tanh(2 / 3))
    a0, a1 = e0 / (e0 + e1), e1 / (e0 + e1)
    softplus2 = math.log1p(math.exp(2.0))  # u . i = u . x = 2
    assert att(u, [i, x]).item() == pytest.approx(a0 * softplus2 + a1 * softplus2, rel=1e-6)
    x = torch.tensor([[[-1.0]]])  # z = [1, 2, -1] / sqrt(6); u . x = -1
    n = math.sqrt(6)
    e0, e1 = math.exp(math.tanh(1 / n)), math.exp(math.tanh(-1 / n))
    expected = (e0 * softplus2 + e1 * math.log1p(math.exp(-1.0))) / (e0 + e1)
    assert att(u, [i, x]).item() == pytest.approx(expected, rel=1e-6)


def _dcor_reference(x, y):
    def centred(a):
        d = torch.cdist(a.double(), a.double())
        return d - d.mean(0, keepdim=True) - d.mean(1, keepdim=True) + d.mean()
    a, b = centred(x), centred(y)
    cov = (a * b).mean().sqrt()
    return cov / ((a * a).mean().sqrt() * (b * b).mean().sqrt()).sqrt()


def test_distance_correlation_matches_definition():
    torch.manual_seed(0)
    f = torch.randn(30, 3, 2)
    f[:, 2] = f[:, 0] ** 2  # dependent but uncorrelated factor: dCor sees it
    dcor = distance_correlation_matrix(f)
    for k in range(3):
        for l in range(3):
            assert dcor[k, l].item() == pytest.approx(_dcor_reference(f[:, k], f[:, l]).item(), abs=2e-3)
    torch.testing.assert_close(dcor.diagonal(), torch.ones(3))
    assert dcor[0, 2] > dcor[0, 1]
    # hand: two factors that are the same up to scale -> dCor 1; loss = (1 + 1) / (K (K + 1) / 2 = 3)
    g = torch.randn(10, 1, 2)
    same = torch.cat([g, 3 * g], dim=1)
    assert disentangle_loss([same, same]).item() == pytest.approx(2 / 3, abs=1e-3)
    # a gradient flows and is finite even with identical rows (the eps clamps)
    flat = torch.ones(5, 2, 2, requires_grad=True)
    disentangle_loss([flat]).backward()
    assert torch.isfinite(flat.grad).all()


def test_stacked_disentangle_loss_matches_reference():
    """loss.disentangle_loss (one batched dCor with its written-out centred-Gram backward) equals the
    readable per-set form over distance_correlation_matrix, value and gradients (a dependent factor
    pair included, identical rows hitting the eps clamps, and a set of another size)."""
    torch.manual_seed(0)
    sets = [torch.randn(20, 3, 4, dtype=torch.float64) for _ in range(3)] + [torch.randn(7, 3, 4, dtype=torch.float64)]
    sets[1][:, 2] = sets[1][:, 0] ** 2
    sets[2][:5] = sets[2][5]
    ours = [s.clone().requires_grad_() for s in sets]
    ref = [s.clone().requires_grad_() for s in sets]
    upper = torch.triu(torch.ones(3, 3, dtype=torch.bool), 1)
    value = disentangle_loss(ours)
    expected = sum(distance_correlation_matrix(f)[upper].sum() for f in ref) / 6
    torch.testing.assert_close(value, expected)
    value.backward()
    expected.backward()
    for a, b in zip(ours, ref):
        torch.testing.assert_close(a.grad, b.grad)


def test_batch_item_factors_equal_all_items_gathered(tiny_dataset):
    """The encoders run once per distinct batch item; the rows equal those of the full table."""
    data_path, name = tiny_dataset
    _, m, _ = _build("DMRL", data_path, name)
    items = torch.tensor([3, 1, 3, 2, 1, 1])
    for batch, full in zip(m._item_factors(items), m._item_factors()):
        torch.testing.assert_close(batch, full[items])


def test_loss_uses_hardest_negative_and_seed(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, train = _build("DMRL", data_path, name)
    assert m.num_neg == 4
    m.dcor_weight = 0.0
    batch = next(iter(train))
    n_pos = len(batch) // 4
    users, items, negs = batch["user_id"], batch["item_id"], batch["neg_item_id"]
    assert torch.equal(users[:n_pos], users[n_pos:2 * n_pos])  # RecBole's layout the loss relies on
    loss = m.calculate_loss(batch)
    m.eval()
    pos = m.predict(Interaction({"user_id": users[:n_pos], "item_id": items[:n_pos]}))
    neg = m.predict(Interaction({"user_id": users, "item_id": negs})).view(4, n_pos).max(0).values
    torch.testing.assert_close(loss, F.softplus(neg - pos).sum())
    m.train()
    m.dcor_weight = 0.5
    assert m.calculate_loss(batch) > loss  # the dCor term is added
    _, m2, _ = _build("DMRL", data_path, name)
    m2.dcor_weight = 0.5
    torch.testing.assert_close(m.calculate_loss(batch), m2.calculate_loss(batch))  # same seed, same numbers


def test_embedding_not_multiple_of_factors(tiny_dataset):
    data_path, name = tiny_dataset
    with pytest.raises(ValueError, match="multiple"):
        _build("DMRL", data_path, name, embedding_size=10, n_factors=4)
