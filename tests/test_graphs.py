"""Graph building blocks on hand-checkable graphs."""

import math

import numpy as np
import pytest
import torch

from recbole_mm.data import graphs


def dense(t):
    return t.to_dense().numpy()


def test_bipartite_norm_adj_by_hand():
    # users 0,1 ; items 0,1,2 ; edges u0-i0, u0-i1, u1-i1
    users, items = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1])
    A = dense(graphs.bipartite_norm_adj(users, items, 2, 3))
    assert A.shape == (5, 5)
    # d(u0)=2, d(u1)=1, d(i0)=1, d(i1)=2, d(i2)=0
    assert A[0, 2] == pytest.approx(1 / math.sqrt(2 * 1))
    assert A[0, 3] == pytest.approx(1 / math.sqrt(2 * 2))
    assert A[1, 3] == pytest.approx(1 / math.sqrt(1 * 2))
    np.testing.assert_allclose(A, A.T)
    assert A[:, 4].sum() == 0 and np.isfinite(A).all()  # isolated item: zeros, not inf
    assert A[:2, :2].sum() == 0 and A[2:, 2:].sum() == 0  # bipartite


def test_normalize_rw_and_none():
    rows, cols, vals = torch.tensor([0, 0, 1]), torch.tensor([1, 2, 0]), torch.tensor([1.0, 3.0, 2.0])
    np.testing.assert_allclose(graphs.normalize_edges(rows, cols, vals, 3, mode="rw"), [0.25, 0.75, 1.0])
    np.testing.assert_allclose(graphs.normalize_edges(rows, cols, vals, 3, mode="none"), [1, 3, 2])
    with pytest.raises(ValueError, match="normalization"):
        graphs.normalize_edges(rows, cols, vals, 3, mode="bad")


def test_knn_edges_by_hand():
    feats = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.1, 0.9]])
    rows, cols, sims = graphs.knn_edges(feats, k=2)
    got = {(int(r), int(c)) for r, c in zip(rows, cols)}
    assert got == {(0, 0), (0, 1), (1, 1), (1, 0), (2, 2), (2, 3), (3, 3), (3, 2)}
    rows, cols, _ = graphs.knn_edges(feats, k=1, include_self=False)
    assert cols.tolist() == [1, 0, 3, 2]


def test_knn_blockwise_equals_dense():
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(103, 16, generator=gen)
    one = graphs.knn_graph(feats, 5, block_size=1000)
    blocked = graphs.knn_graph(feats, 5, block_size=7)
    np.testing.assert_allclose(dense(one), dense(blocked), rtol=1e-6)
    # reference: dense cosine top-k
    normed = torch.nn.functional.normalize(feats, dim=1)
    top = torch.topk(normed @ normed.T, 5, dim=1).indices
    assert ((dense(one) > 0).sum(1) == 5).all()
    for i in range(103):
        assert set(np.flatnonzero(dense(one)[i])) == set(top[i].tolist())


def test_knn_graph_normalisation_and_weights():
    feats = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    binary = dense(graphs.knn_graph(feats, 2, normalization="sym"))
    # binary, every row has degree k=2 -> every kept edge weighs 1/2 (FREEDOM's construction)
    np.testing.assert_allclose(binary[binary > 0], 0.5)
    weighted = dense(graphs.knn_graph(feats, 2, normalization="none", weighted=True))
    assert weighted[0, 1] == pytest.approx(0.8) and weighted[0, 0] == pytest.approx(1.0)
    assert weighted[0, 2] == 0


def test_degree_sensitive_prune_count_and_bias():
    # user 0 is a hub (10 items); users 1..10 each have one private item
    users = torch.tensor([0] * 10 + list(range(1, 11)))
    items = torch.tensor(list(range(10)) + list(range(10, 20)))
    gen = torch.Generator().manual_seed(0)
    kept_hub = 0
    trials = 400
    for _ in range(trials):
        u, i = graphs.degree_sensitive_prune(users, items, 11, 20, 0.5, generator=gen)
        assert len(u) == math.ceil(0.5 * 20)
        assert len(set(zip(u.tolist(), i.tolist()))) == len(u)  # without replacement
        kept_hub += int((u == 0).sum())
    # hub edges weigh 1/sqrt(10) vs 1 for private edges: far fewer of them survive
    hub_rate = kept_hub / (10 * trials)
    private_rate = (trials * 10 - kept_hub) / (10 * trials)
    assert hub_rate < 0.5 * private_rate
    u, i = graphs.degree_sensitive_prune(users, items, 11, 20, 1.0)
    assert len(u) == 20
    with pytest.raises(ValueError):
        graphs.degree_sensitive_prune(users, items, 11, 20, 0.0)


def test_co_interaction_graph_by_hand():
    # user 0: items 0,1,2 ; user 1: items 0,1 ; user 2: items 2,3
    users = [0, 0, 0, 1, 1, 2, 2]
    items = [0, 1, 2, 0, 1, 2, 3]
    G = dense(graphs.co_interaction_graph(users, items, 3, 4, k=10, normalization="none"))
    expected = np.array([[0, 2, 1, 0], [2, 0, 1, 0], [1, 1, 0, 1], [0, 0, 1, 0]], dtype=np.float32)
    np.testing.assert_array_equal(G, expected)
    top1 = dense(graphs.co_interaction_graph(users, items, 3, 4, k=1, normalization="none", block_size=2))
    assert top1[0, 1] == 2 and top1[1, 0] == 2 and (top1 > 0).sum(1).tolist() == [1, 1, 1, 1]


def test_weighted_sum():
    a = graphs.sparse([0], [1], [1.0], (2, 2))
    b = graphs.sparse([0, 1], [1, 0], [1.0, 1.0], (2, 2))
    np.testing.assert_allclose(dense(graphs.weighted_sum([a, b], [0.25, 0.75])), [[0, 1.0], [0.75, 0]])


def test_cached_graph(tmp_path):
    calls = []

    def build():
        calls.append(1)
        return graphs.sparse([0, 1], [1, 0], [0.5, 0.5], (2, 2))

    key = graphs.graph_cache_key([torch.ones(2, 2)], k=3)
    assert key != graphs.graph_cache_key([torch.ones(2, 2)], k=4)
    assert key != graphs.graph_cache_key([torch.zeros(2, 2)], k=3)
    first = graphs.cached_graph(str(tmp_path), "g", key, build)
    second = graphs.cached_graph(str(tmp_path), "g", key, build)
    assert len(calls) == 1 and torch.equal(first.to_dense(), second.to_dense())
    (tmp_path / f"g-{key}.pt").write_bytes(b"garbage")
    third = graphs.cached_graph(str(tmp_path), "g", key, build)  # corrupt cache -> rebuilt
    assert len(calls) == 2 and torch.equal(third.to_dense(), first.to_dense())
    assert graphs.cached_graph(None, "g", key, build) is not None and len(calls) == 3


def test_item_knn_graph_leaves_padding_out():
    feats = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])  # row 0 = padding
    G = dense(graphs.item_knn_graph(feats, 2, normalization="none"))
    assert G.shape == (4, 4) and G[0].sum() == 0 and G[:, 0].sum() == 0
    assert set(np.flatnonzero(G[1])) == {1, 2} and set(np.flatnonzero(G[3])) == {3, 2}


@pytest.mark.parametrize("include_self", [True, False])
def test_faiss_backend_matches_torch(include_self):
    pytest.importorskip("faiss", reason="faiss-cpu is the optional KNN backend (in the dev extra)")
    feats = torch.randn(300, 16, generator=torch.Generator().manual_seed(1))
    t_cols, t_sims = graphs.knn_indices(feats, 5, include_self=include_self, backend="torch", block_size=37)
    f_cols, f_sims = graphs.knn_indices(feats, 5, include_self=include_self, backend="faiss")
    assert torch.equal(t_cols, f_cols)
    torch.testing.assert_close(t_sims, f_sims, atol=1e-5, rtol=0)
    if not include_self:
        assert not (f_cols == torch.arange(300).unsqueeze(1)).any()
    auto = graphs.knn_indices(feats, 5, backend="auto")[0]  # small n: torch
    assert torch.equal(auto, graphs.knn_indices(feats, 5)[0])
    with pytest.raises(ValueError, match="not one of"):
        graphs.knn_indices(feats, 5, backend="annoy")


def test_learned_knn_edges_gradient_is_deterministic_with_threads():
    """Repeated neighbours must not make the feature gradient depend on thread scheduling."""
    from recbole_mm.data.graphs import learned_knn_edges

    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        base = torch.randn(800, 16, generator=torch.Generator().manual_seed(0))
        weights = torch.randn(800 * 8, generator=torch.Generator().manual_seed(1))
        grads = []
        for _ in range(4):
            f = base.clone().requires_grad_()
            _, _, values = learned_knn_edges(f, 8, "sym")
            (values * weights).sum().backward()
            grads.append(f.grad)
        assert all(torch.equal(grads[0], g) for g in grads[1:])
    finally:
        torch.set_num_threads(threads)
