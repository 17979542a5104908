"""Shared layers and losses against hand computations."""

import math

import pytest
import torch

from recbole_mm.data.graphs import sparse
from recbole_mm.model import layers, loss


def test_lightgcn_propagate_layer_mean():
    A = sparse([0, 1], [1, 0], [1.0, 1.0], (2, 2))
    E = torch.tensor([[1.0], [3.0]])
    out = layers.lightgcn_propagate(A, E, 2)  # mean(E, AE, A^2E) = mean([1,3],[3,1],[1,3])
    torch.testing.assert_close(out, torch.tensor([[5 / 3], [7 / 3]]))
    torch.testing.assert_close(layers.propagate(A, E, 1), torch.tensor([[3.0], [1.0]]))


@pytest.mark.parametrize("mode", layers.FUSIONS)
def test_fusion_shapes(mode):
    fusion = layers.Fusion(mode, 4, 3)
    xs = [torch.randn(5, 4) for _ in range(3)]
    assert fusion(xs).shape == (5, 4)


def test_fusion_values():
    xs = [torch.ones(2, 3), 3 * torch.ones(2, 3)]
    torch.testing.assert_close(layers.Fusion("mean", 3, 2)(xs), 2 * torch.ones(2, 3))
    torch.testing.assert_close(layers.Fusion("sum", 3, 2)(xs), 4 * torch.ones(2, 3))
    att = layers.Fusion("attention", 3, 2)
    out = att(xs)
    w = att.last_weights
    torch.testing.assert_close(w.sum(1), torch.ones(2))
    torch.testing.assert_close(out, w[:, :1] * xs[0] + w[:, 1:] * xs[1])
    with pytest.raises(ValueError):
        layers.Fusion("max", 3, 2)


def test_bpr_and_l2():
    assert loss.bpr_loss(torch.tensor([2.0]), torch.tensor([0.0])).item() == pytest.approx(-math.log(1 / (1 + math.exp(-2))))
    assert loss.l2_reg(torch.tensor([[3.0, 4.0]]), torch.tensor([[1.0, 0.0]])).item() == pytest.approx((25 + 1) / 2)


def test_info_nce_by_hand():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    t = 0.5
    # row 0: logits [1/t, 1/t] -> -log(1/2); row 1: logits [0, 0] -> -log(1/2)
    assert loss.info_nce(a, b, t).item() == pytest.approx(math.log(2))
    b2 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    l0 = -math.log(math.exp(2) / (math.exp(2) + 1))
    assert loss.info_nce(a, b2, t).item() == pytest.approx(l0)


@pytest.mark.parametrize("temperature", [0.2, 0.01])  # bound shift / row-max shift
def test_info_nce_matches_cross_entropy_value_and_gradient(temperature):
    """The hand-written backward equals autograd through log-softmax + NLL, repeats included."""
    g = torch.Generator().manual_seed(0)
    a0 = torch.randn(7, 5, generator=g, dtype=torch.float64)
    b0 = torch.randn(7, 5, generator=g, dtype=torch.float64)
    b0[3] = b0[1]  # a repeated row (MGCN's batches keep repeats)
    a1, b1 = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    a2, b2 = a0.clone().requires_grad_(), b0.clone().requires_grad_()
    ours = loss.info_nce(a1, b1, temperature) * 3.0  # upstream gradient != 1
    an = torch.nn.functional.normalize(a2, dim=-1) / temperature
    bn = torch.nn.functional.normalize(b2, dim=-1)
    ref = torch.nn.functional.cross_entropy(an @ bn.T, torch.arange(7)) * 3.0
    ours.backward(retain_graph=True)
    ref.backward()
    assert ours.item() == pytest.approx(ref.item(), rel=1e-12)
    assert torch.allclose(a1.grad, a2.grad, atol=1e-12) and torch.allclose(b1.grad, b2.grad, atol=1e-12)
    ours.backward()  # the saved tensors are not modified by backward: a second pass gives the same
    assert torch.allclose(a1.grad, 2 * a2.grad, atol=1e-12)


def test_info_nce_extreme_temperature_is_finite():
    a = torch.tensor([[1.0, 0.0], [-1.0, 0.0]], requires_grad=True)
    value = loss.info_nce(a, a.detach(), 0.001)  # logits +-1000: needs the row-max shift
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(a.grad).all()


@pytest.mark.parametrize("temperature", [0.2, 0.01])
def test_info_nce_bfloat16_is_close_to_the_exact_value_and_gradient(temperature):
    """The bfloat16 (B, B) path (AlignRec's ``cca_dtype``): loss and gradients within bf16 rounding
    of the float64 result, returned in float32; a wrong row sum or a dropped term fails by far more.
    Below t = 0.1 bf16 logits would be too coarse, and the float32 path is taken (same value)."""
    g = torch.Generator().manual_seed(1)
    z = torch.randn(300, 64, generator=g)
    a0 = z + 0.7 * torch.randn(300, 64, generator=g)  # correlated positives, like a trained model
    b0 = z + 0.7 * torch.randn(300, 64, generator=g)
    results = {}
    for name, dtype, kind in (("exact", None, torch.float64), ("bf16", torch.bfloat16, torch.float32)):
        a, b = a0.to(kind).requires_grad_(), b0.to(kind).requires_grad_()
        value = loss.info_nce(a, b, temperature, dtype=dtype)
        (value * 2.0).backward()
        results[name] = (value, a.grad, b.grad)
    (v64, ga64, gb64), (v16, ga16, gb16) = results["exact"], results["bf16"]
    assert v16.dtype == ga16.dtype == gb16.dtype == torch.float32
    assert v16.item() == pytest.approx(v64.item(), rel=2e-3, abs=1e-6)
    if temperature < 0.1:
        assert v16.item() == loss.info_nce(a0, b0, temperature).item()
    with pytest.raises(ValueError, match="dtype must be None"):
        loss.info_nce(a0, b0, temperature, dtype=torch.float16)
    for got, ref in ((ga16, ga64), (gb16, gb64)):
        assert ((got.double() - ref).norm() / ref.norm()).item() < 1e-2


def test_contrastive_dtype_settings(monkeypatch):
    assert loss.contrastive_dtype("float32", "cpu") is None
    assert loss.contrastive_dtype("bfloat16", "cpu") is torch.bfloat16
    native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    assert loss.contrastive_dtype("auto", "cpu") is (torch.bfloat16 if native else None)
    with pytest.raises(ValueError, match="cca_dtype must be float32, bfloat16 or auto, not 'fp16'"):
        loss.contrastive_dtype("fp16", "cpu")

    def no_onednn():
        raise RuntimeError("no mkldnn in this build")

    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", no_onednn)
    assert loss.contrastive_dtype("auto", "cpu") is None  # emulated bf16 would be slower: float32
    assert loss.contrastive_dtype("bfloat16", "cpu") is torch.bfloat16  # asked for explicitly


def test_bootstrap_loss_stops_target_gradient():
    p = torch.tensor([[1.0, 0.0]], requires_grad=True)
    z = torch.tensor([[0.0, 1.0]], requires_grad=True)
    value = loss.bootstrap_loss(p, z)
    assert value.item() == pytest.approx(1.0)
    value.backward()
    assert p.grad is not None and z.grad is None


def test_similarity_preserving_loss_by_hand_and_stop_gradient():
    h = torch.tensor([[1.0, 0.0], [0.0, 1.0]], requires_grad=True)
    ref = torch.tensor([[1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    # cos(h) = I, cos(ref) = all ones: difference has two off-diagonal -1 -> ||.||_F = sqrt(2), / B=2
    value = loss.similarity_preserving_loss(h, ref)
    assert value.item() == pytest.approx(math.sqrt(2) / 2)
    value.backward()
    assert h.grad is not None and ref.grad is None
    same = torch.tensor([[3.0, 4.0], [1.0, 2.0]])
    assert loss.similarity_preserving_loss(same, 2 * same).item() == pytest.approx(0.0, abs=1e-5)


@pytest.mark.parametrize("batch,d_h,d_ref", [(17, 5, 3), (17, 5, 40), (4, 16, 14), (6, 30, 2)])
def test_similarity_preserving_loss_matches_the_cosine_matrices(batch, d_h, d_ref):
    """Both evaluation orders (d x d Gram matrices, or B x B when the batch is the smaller side)."""
    torch.manual_seed(0)
    h = torch.randn(batch, d_h, dtype=torch.float64, requires_grad=True)
    ref = torch.randn(batch, d_ref, dtype=torch.float64)
    hn, rn = torch.nn.functional.normalize(h, dim=1), torch.nn.functional.normalize(ref, dim=1)
    direct = torch.linalg.norm(hn @ hn.T - rn @ rn.T) / batch
    fast = loss.similarity_preserving_loss(h, ref)
    torch.testing.assert_close(fast, direct)
    (g_direct,) = torch.autograd.grad(direct, h)
    (g_fast,) = torch.autograd.grad(fast, h)
    torch.testing.assert_close(g_fast, g_direct)


def test_similarity_preserving_loss_on_distinct_rows_with_counts():
    """Distinct items weighted by their repeat counts = the batch with its repeats (value and grad)."""
    torch.manual_seed(1)
    table = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    ref_table = torch.randn(6, 9, dtype=torch.float64)
    batch = torch.tensor([3, 0, 3, 5, 3, 0, 2])
    full = loss.similarity_preserving_loss(table[batch], ref_table[batch])
    items, counts = torch.unique(batch, return_counts=True)
    dedup = loss.similarity_preserving_loss(table[items], ref_table[items], counts)
    torch.testing.assert_close(dedup, full)
    (g_full,) = torch.autograd.grad(full, table)
    (g_dedup,) = torch.autograd.grad(dedup, table)
    torch.testing.assert_close(g_dedup, g_full)


def test_sinusoidal_encoding_values():
    pe = layers.sinusoidal_encoding(torch.tensor([0, 1, 5]), 6)
    assert pe.shape == (3, 6)
    torch.testing.assert_close(pe[0], torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]))
    for j in range(3):
        freq = 10000 ** (-2 * j / 6)
        assert pe[2, 2 * j].item() == pytest.approx(math.sin(5 * freq), abs=1e-6)
        assert pe[2, 2 * j + 1].item() == pytest.approx(math.cos(5 * freq), abs=1e-6)
    assert layers.sinusoidal_encoding(torch.arange(4), 5).shape == (4, 5)  # odd sizes work


def test_sampled_attention():
    att = layers.SampledAttention(4, alpha=0.5)
    users, items = torch.randn(3, 4), torch.randn(3, 5, 4)
    out = att(users, items)
    assert out.shape == (3, 4)
    att.alpha = 0.0
    torch.testing.assert_close(att(users, items), users)
    # the update is a convex combination of the keys of the user's own slot and its samples
    att.alpha = 1.0
    K = att.k(torch.cat([users.unsqueeze(1), items], 1))
    w = torch.softmax((att.q(users).unsqueeze(1) @ K.transpose(1, 2)) * 0.5, -1)
    torch.testing.assert_close(att(users, items) - users, (w @ K).squeeze(1))


def test_edge_propagate_matches_dense_with_gradients():
    # a learned 3-node graph with a duplicate edge (0,1) that must add up
    rows, cols = torch.tensor([0, 0, 1, 2, 2]), torch.tensor([1, 1, 2, 0, 2])
    vals = torch.tensor([0.5, 0.25, 2.0, 1.0, -1.0], dtype=torch.float64, requires_grad=True)
    h = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    dense = torch.zeros(3, 3, dtype=torch.float64).index_put((rows, cols), vals, accumulate=True)
    expected = dense @ (dense @ h)
    torch.testing.assert_close(layers.edge_propagate(rows, cols, vals, h, 2), expected)
    torch.autograd.gradcheck(lambda v, x: layers.edge_propagate(rows, cols, v, x, 2), (vals, h))
    # a fixed graph as SparseOperator gives the same product and input gradient
    op = layers.SparseOperator(torch.sparse_coo_tensor(torch.stack([rows, cols]), vals.detach(), (3, 3)))
    torch.testing.assert_close(layers.propagate(op, h, 2), expected)


def test_projector_difference_is_exact_and_needs_linear():
    torch.manual_seed(0)
    proj = layers.ModalityProjector({"a": 5, "b": 3}, 4)
    x = {"a": torch.randn(6, 5), "b": torch.randn(6, 3)}
    y = {"a": torch.randn(6, 5), "b": torch.randn(6, 3)}
    full_x, full_y, diff = proj(x), proj(y), proj.difference(x, y)
    for m in x:
        torch.testing.assert_close(diff[m], full_x[m] - full_y[m])
    with pytest.raises(ValueError, match="linear"):
        layers.ModalityProjector({"a": 5}, 4, activation="tanh").difference(x, y)


def test_first_occurrence():
    ids = torch.tensor([5, 3, 5, 9, 3, 3])
    assert layers.first_occurrence(ids).tolist() == [1, 0, 3]  # values 3, 5, 9 first seen at rows 1, 0, 3


def test_sparse_operator_reweighted_matches_a_rebuilt_graph():
    """Same pattern, new values (dropped entries as stored zeros): product and gradient equal those
    of a graph rebuilt from the surviving entries (SelfCF's per-batch edge dropout)."""
    from recbole_mm.model.layers import SparseOperator

    g = torch.Generator().manual_seed(0)
    dense = (torch.rand(6, 6, generator=g) < 0.5).float() * torch.rand(6, 6, generator=g)
    dense = dense + dense.T  # symmetric, as a normalised user-item adjacency
    op = SparseOperator(dense.to_sparse(), symmetric=True)
    keep = torch.rand(op.csr.values().shape, generator=g) >= 0.4
    new = op.reweighted(op.csr.values() * keep / 0.6)
    rows, cols, vals = op.edges()
    expected = torch.zeros(6, 6)
    expected[rows[keep], cols[keep]] = vals[keep] / 0.6
    x = torch.randn(6, 3, generator=g, requires_grad=True)
    out = new @ x
    torch.testing.assert_close(out, expected @ x)
    out.sum().backward()
    torch.testing.assert_close(x.grad, expected.T @ torch.ones(6, 3))
    assert not new.symmetric and op.csr.values().numel() == new.csr.values().numel()


def test_edge_dot_and_its_written_out_gradient_by_hand():
    # edges target <- source: 0 <- 1, 0 <- 2, 2 <- 1, weighted 1, 2, 3 in the loss sum_e w_e <x_t, y_s>
    g = layers.EdgeGraph(torch.tensor([0, 0, 2]), torch.tensor([1, 2, 1]), 3)
    w = torch.tensor([1.0, 2.0, 3.0])
    x = torch.tensor([[1.0, 2.0], [0.0, 1.0], [3.0, -1.0]], requires_grad=True)
    y = torch.tensor([[2.0, 0.0], [1.0, 1.0], [-1.0, 4.0]], requires_grad=True)
    s = g.edge_dot(x, y)
    torch.testing.assert_close(s, torch.tensor([3.0, 7.0, 2.0]))  # <x0,y1>, <x0,y2>, <x2,y1>
    gx, gy = torch.autograd.grad((w * s).sum(), (x, y))
    # dL/dx_t = sum_s w_ts y_s: x0: y1 + 2 y2; x2: 3 y1.  dL/dy_s = sum_t w_ts x_t: y1: x0 + 3 x2; y2: 2 x0
    torch.testing.assert_close(gx, torch.tensor([[-1.0, 9.0], [0.0, 0.0], [3.0, 3.0]]))
    torch.testing.assert_close(gy, torch.tensor([[0.0, 0.0], [10.0, -1.0], [2.0, 4.0]]))
    # y defaults to x: both ends' gradients add up, (S_w + S_w^T) x
    (gxx,) = torch.autograd.grad((w * g.edge_dot(x)).sum(), (x,))
    torch.testing.assert_close(gxx, torch.tensor([[6.0, -1.0], [10.0, -1.0], [2.0, 7.0]]))


def test_row_logsumexp_by_hand_and_gradients():
    a = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    c1 = torch.tensor([[1.0, 1.0], [0.5, 0.0], [0.0, -1.0]])
    c2 = torch.tensor([[2.0, 0.0]])
    extra = torch.tensor([0.3, -0.2])
    bound = 3.0
    # logits a c1^T = [[1, .5, 0], [2, 0, -2]], a c2^T = [[2], [0]]; skip_diagonal=1 drops l_01 and l_12
    e = math.exp
    want = [math.log(e(1 - 3) + e(0 - 3) + e(2 - 3) + e(0.3 - 3)),
            math.log(e(2 - 3) + e(0 - 3) + e(0 - 3) + e(-0.2 - 3))]
    got = loss.row_logsumexp(a, [c1, c2], bound, extra, skip_diagonal=1)
    torch.testing.assert_close(got, torch.tensor(want))
    # without the skip and the extra logit: the plain log-sum-exp over the concatenated columns, minus the bound
    plain = torch.logsumexp(a @ torch.cat([c1, c2]).T, 1)
    torch.testing.assert_close(loss.row_logsumexp(a, [c1, c2], bound) + bound, plain)
    # the written-out gradient equals autograd's through the masked dense form
    torch.manual_seed(0)
    x = [torch.randn(s, dtype=torch.float64, requires_grad=True) for s in ((3, 4), (5, 4), (2, 4), (3,))]
    w = torch.randn(3, dtype=torch.float64)
    ours = torch.autograd.grad((w * loss.row_logsumexp(x[0], [x[1], x[2]], 8.0, x[3], skip_diagonal=2)).sum(), x)
    logits = torch.cat([x[0] @ x[1].T, x[0] @ x[2].T, x[3].unsqueeze(1)], 1)
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[torch.arange(3), torch.arange(3) + 2] = True
    ref = torch.autograd.grad((w * torch.logsumexp(logits.masked_fill(mask, float("-inf")), 1)).sum(), x)
    for mine, theirs in zip(ours, ref):
        torch.testing.assert_close(mine, theirs)


def test_take_rows_is_indexing_in_value_and_gradient():
    from recbole_mm.model.layers import take_rows

    table = torch.randn(7, 3, requires_grad=True)
    index = torch.tensor([4, 0, 4, 6, 4, 1])  # repeated rows accumulate their gradients
    weights = torch.randn(6, 3)
    (take_rows(table, index) * weights).sum().backward()
    grad, table.grad = table.grad, None
    (table[index] * weights).sum().backward()
    torch.testing.assert_close(take_rows(table, index), table[index])
    torch.testing.assert_close(grad, table.grad)
