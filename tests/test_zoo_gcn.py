"""MMGCN and GRCN, and the layers they add (EdgeGraph, AggregateCombine): hand computations on a
few numbers, gradients, determinism."""

import pytest
import torch
import torch.nn.functional as F

from recbole_mm.model.layers import AggregateCombine, EdgeGraph, SparseOperator, edge_propagate, normalize_rows
from tests.test_models import _build

# a 4-node directed graph (target <- source), given unsorted and with one duplicate edge
ROWS = torch.tensor([2, 0, 0, 3, 2, 0, 2])
COLS = torch.tensor([1, 3, 1, 0, 3, 1, 0])
EDGES = [(0, 1), (0, 3), (2, 0), (2, 1), (2, 3), (3, 0)]  # the distinct edges, target-major


def _dense(graph, values):
    return torch.zeros(graph.n, graph.n, dtype=values.dtype).index_put((graph.rows, graph.cols), values)


def test_edge_graph_layout_and_product():
    g = EdgeGraph(ROWS, COLS, 4)
    assert list(zip(g.rows.tolist(), g.cols.tolist())) == EDGES  # sorted, duplicate dropped
    assert g.crow.tolist() == [0, 2, 2, 5, 6] and g.n_edges == 6
    values = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0], [2.0, -1.0]])
    # node 0 <- 1 (w 1), 3 (w 2): [0,1] + 2 [2,-1] = [4,-1]; node 2 <- 0, 1, 3 (3, 4, 5): [13,-1]; node 3 <- 0 (6)
    torch.testing.assert_close(g(values, x), torch.tensor([[4.0, -1.0], [0.0, 0.0], [13.0, -1.0], [6.0, 0.0]]))
    torch.testing.assert_close(g.csr(values, transpose=True).to_dense(), _dense(g, values).T)
    # edge scores <x_t, x_s>: (0,1) 0, (0,3) 2, (2,0) 1, (2,1) 1, (2,3) 1, (3,0) 2
    torch.testing.assert_close(g.edge_dot(x), torch.tensor([0.0, 2.0, 1.0, 1.0, 1.0, 2.0]))


def test_edge_graph_softmax_by_hand_and_like_pyg():
    from torch_geometric.utils import softmax as pyg_softmax

    g = EdgeGraph(ROWS, COLS, 4)
    s = torch.tensor([0.0, 2.0, 1.0, 1.0, 1.0, 5.0])
    e2 = torch.exp(torch.tensor(2.0))
    expected = torch.tensor([1 / (1 + e2), e2 / (1 + e2), 1 / 3, 1 / 3, 1 / 3, 1.0])
    torch.testing.assert_close(g.softmax(s), expected)
    big = torch.randn(6) * 50  # shifted by the segment max: no overflow
    torch.testing.assert_close(g.softmax(big), pyg_softmax(big, g.rows, num_nodes=4))


def test_edge_graph_gradients():
    g = EdgeGraph(ROWS, COLS, 4).double()
    values = torch.rand(6, dtype=torch.double, requires_grad=True)
    x = torch.randn(4, 3, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, h: g(v, g(v, h)), (values, x))
    assert torch.autograd.gradcheck(lambda h: g(g.softmax(g.edge_dot(h)), h), (x,))
    # against the dense product
    (g(values, x) ** 2).sum().backward()
    vd, xd = values.detach().clone().requires_grad_(), x.detach().clone().requires_grad_()
    ((_dense(g, vd) @ xd) ** 2).sum().backward()
    torch.testing.assert_close(values.grad, vd.grad)
    torch.testing.assert_close(x.grad, xd.grad)


def test_edge_graph_bipartite_and_device_follow():
    g = EdgeGraph.bipartite(torch.tensor([0, 1, 1]), torch.tensor([1, 0, 1]), n_users=2, n_items=2)
    # user rows first (user 0 <- item 1 = node 3; user 1 <- nodes 2, 3), then item rows
    assert list(zip(g.rows.tolist(), g.cols.tolist())) == [(0, 3), (1, 2), (1, 3), (2, 1), (3, 0), (3, 1)]
    assert "rows" not in g.state_dict()  # rebuilt from the data, not checkpointed
    assert g.to(torch.float64).rows.dtype == torch.long


def test_edge_propagate_gradients_with_duplicates():
    """The existing edge_propagate (LATTICE's learned graph): duplicates add up, gradient through values."""
    values = torch.rand(len(ROWS), dtype=torch.double, requires_grad=True)
    x = torch.randn(4, 2, dtype=torch.double, requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, h: edge_propagate(ROWS, COLS, v, h, 2), (values, x))
    dense = torch.zeros(4, 4, dtype=torch.double).index_put((ROWS, COLS), values.detach(), accumulate=True)
    torch.testing.assert_close(edge_propagate(ROWS, COLS, values, x, 2), dense @ dense @ x)


@pytest.mark.parametrize("concat", [True, False])
def test_aggregate_combine_by_hand(concat):
    torch.manual_seed(0)
    layer = AggregateCombine(2, 2, concat=concat)
    with torch.no_grad():
        layer.conv.copy_(torch.tensor([[1.0, 0.0], [0.0, -1.0]]))
        layer.self_proj.weight.copy_(torch.eye(2)), layer.self_proj.bias.zero_()
        layer.combine.weight.copy_(torch.ones_like(layer.combine.weight)), layer.combine.bias.zero_()
    # mean graph: node 0 <- {1, 2}, node 1 <- {0}, node 2 <- {0}
    adj = SparseOperator(torch.sparse_coo_tensor(torch.tensor([[0, 0, 1, 2], [1, 2, 0, 0]]),
                                                 torch.tensor([0.5, 0.5, 1.0, 1.0]), (3, 3)))
    x = torch.tensor([[1.0, 2.0], [3.0, -1.0], [-2.0, 4.0]])
    ids = torch.full((3, 2), 0.5)
    out = layer(adj, x, ids)
    lrelu = lambda t: F.leaky_relu(torch.tensor(t)).item()  # noqa: E731
    # node 0: h = lrelu(mean([3, 1], [-2, -4])) = lrelu([0.5, -1.5]) = [0.5, -0.015]
    h0 = [0.5, lrelu(-1.5)]
    xh0 = [1.5, 2.5]  # lrelu(x_0) + 0.5
    if concat:  # W_3 = ones(2, 4): both outputs are lrelu(sum(h) + sum(x_hat))
        expected0 = [lrelu(sum(h0) + sum(xh0))] * 2
    else:  # W_3 = ones(2, 2): lrelu(sum(h) + x_hat)
        expected0 = [lrelu(sum(h0) + xh0[0]), lrelu(sum(h0) + xh0[1])]
    torch.testing.assert_close(out[0], torch.tensor(expected0))


def test_aggregate_combine_split_matches_concatenation():
    """The two-product form of Eq. 6 equals W_3 [h; x_hat] in output and in every gradient."""
    torch.manual_seed(1)
    layer = AggregateCombine(5, 3, concat=True).double()
    adj = SparseOperator(torch.sparse_coo_tensor(torch.tensor([[0, 0, 1, 2, 3], [1, 2, 0, 3, 1]]),
                                                 torch.rand(5, dtype=torch.double), (4, 4)))
    x = torch.randn(4, 5, dtype=torch.double, requires_grad=True)
    ids = torch.randn(4, 3, dtype=torch.double, requires_grad=True)

    def by_concat():
        h = F.leaky_relu(torch.sparse.mm(adj.csr.to_sparse_coo(), x @ layer.conv))
        x_hat = F.leaky_relu(layer.self_proj(x)) + ids
        return F.leaky_relu(layer.combine(torch.cat([h, x_hat], dim=1)))

    weights = torch.randn(4, 3, dtype=torch.double)
    grads = []
    for fn in (lambda: layer(adj, x, ids), by_concat):
        out = fn()
        grads.append([out.detach()] + list(torch.autograd.grad((out * weights).sum(), [x, ids, *layer.parameters()])))
    for a, b in zip(*grads):
        torch.testing.assert_close(a, b)


def test_normalize_rows_matches_f_normalize():
    x = torch.randn(6, 4, dtype=torch.double)
    x[2] = 0.0  # a zero row: the norm is clamped to eps, as in F.normalize
    x[4] = 1e-14
    x.requires_grad_(True)
    g = torch.randn(6, 4, dtype=torch.double)
    ours, ref = normalize_rows(x), F.normalize(x, dim=1)
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(torch.autograd.grad((ours * g).sum(), x)[0], torch.autograd.grad((ref * g).sum(), x)[0])
    assert torch.autograd.gradcheck(normalize_rows, (torch.randn(3, 5, dtype=torch.double, requires_grad=True),))
    # the custom backward keeps only the output and the norms, not the input
    y = normalize_rows(x)
    assert {t.data_ptr() for t in y.grad_fn.saved_tensors} == {y.data_ptr(), y.grad_fn.saved_tensors[1].data_ptr()}


def test_mmgcn_branches_and_fixed_embeddings(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, train = _build("MMGCN", data_path, name, raw_modalities=["text"], dim_latent=12, train_embeddings=False)
    assert m.branches["text"].mlp is None and m.branches["image"].mlp.out_features == 12
    assert m.branches["text"].preference.shape == (m.n_users, 8)  # raw text width
    assert m.branches["image"].layers[0].conv.shape == (12, 12) and len(m.branches["image"].layers) == 3
    # pooling: the mean of the branches (MMRec), by hand
    reps = [b(m.adj, m.modality_feature(k), m.id_embedding) for k, b in m.branches.items()]
    torch.testing.assert_close(m.forward(), (reps[0] + reps[1]) / 2)
    # mean aggregation: rows of the operator sum to 1 for every node with neighbours
    sums = m.adj.csr.to_dense().sum(1)
    assert torch.all(((sums - 1).abs() < 1e-6) | (sums == 0))
    # MMRec's embeddings stay at init; the layers train
    batch = next(iter(train))
    ids, pref = m.id_embedding.detach().clone(), m.branches["image"].preference.detach().clone()
    opt = torch.optim.Adam(m.parameters(), lr=0.01)
    m.calculate_loss(batch).backward()
    opt.step()
    assert m.id_embedding.grad is None and torch.equal(m.id_embedding, ids)
    assert torch.equal(m.branches["image"].preference, pref)
    assert m.branches["image"].layers[0].conv.grad.abs().sum() > 0
    _, t, _ = _build("MMGCN", data_path, name, train_embeddings=True)
    t.calculate_loss(batch).backward()
    assert t.id_embedding.grad.abs().sum() > 0 and t.branches["text"].preference.grad.abs().sum() > 0


def test_mmgcn_regularizer_by_hand(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("MMGCN", data_path, name, reg_weight=0.5)
    user, pos, neg = torch.tensor([1, 1]), torch.tensor([2, 3]), torch.tensor([4, 5])
    e, n, d = m.id_embedding, m.n_users, m.id_embedding.shape[1]
    # MMRec: mean over the 2B (user, item) rows of e_u^2 + e_i^2, users repeated for pos and neg
    rows_u, rows_i = e[torch.tensor([1, 1, 1, 1])], e[torch.tensor([2, 4, 3, 5]) + n]
    expected = (rows_u ** 2 + rows_i ** 2).sum() / (4 * d)
    expected = expected + sum(b.preference.pow(2).mean() for b in m.branches.values())
    torch.testing.assert_close(m.regularizer(user, pos, neg), expected)


def test_grcn_refined_weights_by_hand(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("GRCN", data_path, name)
    g, nu = m.graph, m.n_users
    assert g.n_edges == 2 * len(m.train_users)
    with torch.no_grad():
        x, a = m.refine("image")
        f = F.normalize(F.leaky_relu(m.mlp["image"](m.modality_feature("image"))), dim=1)
        torch.testing.assert_close(x, torch.cat([F.normalize(m.preference["image"], dim=1), f]))
        # user 1's affinities: softmax over its items of <p_1, f_i>
        items = m.train_items[m.train_users == 1].sort().values
        mask = g.rows == 1
        assert torch.equal(g.cols[mask], items + nu)
        torch.testing.assert_close(a[mask], torch.softmax(x[items + nu] @ x[1], 0))
        # item i's affinities: softmax over its users
        i = int(m.train_items[0])
        users = m.train_users[m.train_items == i].sort().values
        torch.testing.assert_close(a[g.rows == i + nu], torch.softmax(x[users] @ x[i + nu], 0))
        # confid integration + pruning: relu(max_m a^m_ts c^m_s), s the source
        a2 = torch.stack([m.refine(k)[1] for k in m.modalities], 1)
        w = m.edge_weights(a2)
        k = int(mask.nonzero()[0])
        src = int(g.cols[k])
        torch.testing.assert_close(w[k], torch.relu(max(a2[k, j] * m.confidence[src, j] for j in range(2))))
        assert (w >= 0).all()
        # ID GCN on the refined graph: e0 + W e0 + W^2 e0, dense by hand
        dense = torch.zeros(g.n, g.n).index_put((g.rows, g.cols), w)
        e0 = F.normalize(m.id_embedding, dim=1)
        rep = m.forward()
        torch.testing.assert_close(rep[:, :16], e0 + dense @ e0 + dense @ dense @ e0)
        # content part: x + A^m x for each modality, concatenated after the ID part
        dense_a = torch.zeros(g.n, g.n).index_put((g.rows, g.cols), a)
        j = m.modalities.index("image")
        torch.testing.assert_close(rep[:, 16 + 64 * j: 16 + 64 * (j + 1)], x + dense_a @ x)


def test_grcn_routing_moves_prototypes(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("GRCN", data_path, name, n_routing=1)
    with torch.no_grad():
        x, _ = m.refine("text")
        p = F.normalize(m.preference["text"], dim=1)
        f = F.normalize(F.leaky_relu(m.mlp["text"](m.modality_feature("text"))), dim=1)
        items = m.train_items[m.train_users == 2]
        att = torch.softmax(f[items] @ p[2], 0)
        torch.testing.assert_close(x[2], F.normalize(p[2] + att @ f[items], dim=0))


def test_grcn_gradients_reach_every_part(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, train = _build("GRCN", data_path, name)
    m.calculate_loss(next(iter(train))).backward()
    for name_, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name_


def test_grcn_regularizer_by_hand(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("GRCN", data_path, name)
    user, pos, neg = torch.tensor([1, 2]), torch.tensor([2, 3]), torch.tensor([4, 5])
    e, n = m.id_embedding, m.n_users
    ut, it = torch.tensor([1, 1, 2, 2]), torch.tensor([2, 4, 3, 5]) + n  # MMRec's interleaved tensors
    expected = (e[ut] ** 2 + e[it] ** 2).mean()
    expected = expected + sum(p.pow(2).mean() + p[ut].pow(2).mean() for p in m.preference.values())
    torch.testing.assert_close(m.regularizer(user, pos, neg), expected)


@pytest.mark.parametrize("model", ["MMGCN", "GRCN"])
def test_same_seed_same_numbers(tiny_dataset, model):
    data_path, name = tiny_dataset
    losses, batches = [], None
    for _ in range(2):
        _, m, train = _build(model, data_path, name)
        batches = batches or [b for _, b in zip(range(2), train)]
        opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=0.01)
        for batch in batches:
            loss = m.calculate_loss(batch)
            opt.zero_grad(), loss.backward(), opt.step()
        m.eval()
        losses.append((loss.detach(), m.inference_embeddings()[0]))
    torch.testing.assert_close(losses[0][0], losses[1][0], rtol=0, atol=0)
    torch.testing.assert_close(losses[0][1], losses[1][1], rtol=0, atol=0)


@pytest.mark.parametrize("model", ["MMGCN", "MVGAE"])
def test_checkpoint_branches_changes_no_number(tiny_dataset, model):
    """``checkpoint_branches`` recomputes each branch in the backward pass (MVGAE's dropout masks
    replayed): losses, gradients and parameters after Adam steps are bit-identical."""
    data_path, name = tiny_dataset
    runs, batches = [], None
    for flag in (False, True):
        torch.manual_seed(3)  # the same dropout draws on both runs
        _, m, train = _build(model, data_path, name, checkpoint_branches=flag)
        assert m.checkpoint_branches is flag
        batches = batches or [b for _, b in zip(range(3), train)]
        opt = torch.optim.Adam([p for p in m.parameters() if p.requires_grad], lr=0.01)
        losses, grads = [], None
        for batch in batches:
            loss = m.calculate_loss(batch)
            opt.zero_grad(), loss.backward()
            grads = grads or [p.grad.clone() for p in m.parameters() if p.grad is not None]
            opt.step()
            losses.append(loss.detach())
        runs.append((torch.stack(losses), grads, [p.detach().clone() for p in m.parameters()]))
    (l0, g0, p0), (l1, g1, p1) = runs
    torch.testing.assert_close(l0, l1, rtol=0, atol=0)
    assert len(g0) == len(g1) > 0
    for a, b in zip(g0 + p0, g1 + p1):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
