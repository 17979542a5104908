"""PGL: the global-aware principal graph against the official dense formula, the local-aware sampling,
the forward pass and the loss by hand, determinism, runs through run_recbole_mm and objective_function."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction
from recbole.utils import init_seed

from recbole_mm.model.general_recommender.pgl import principal_ui_graph, top_singular_triplets
from tests.test_models import _build


def _random_edges(n_users=14, n_items=11, seed=0):
    rng = np.random.default_rng(seed)
    dense = rng.random((n_users, n_items)) < 0.3
    dense[np.arange(n_users), rng.integers(n_items, size=n_users)] = True  # no isolated user
    dense[rng.integers(n_users, size=n_items), np.arange(n_items)] = True  # no isolated item
    users, items = np.nonzero(dense)
    return torch.from_numpy(users), torch.from_numpy(items), n_users, n_items


def _official_principal(users, items, n_users, n_items, rank, threshold):
    """The official global extraction on the dense n x n Laplacian (a full SVD in place of sparsesvd)."""
    n = n_users + n_items
    A = np.zeros((n, n))
    A[users, items + n_users] = A[items + n_users, users] = 1.0
    d = A.sum(1) ** -0.5
    L = d[:, None] * A * d[None, :]
    u, s, vt = np.linalg.svd(L)
    ut, s, vt = u.T[:rank], s[:rank], vt[:rank]
    q = int(0.25 * rank)
    prod = ut.T[:, :q] @ np.diag(s[:q] * s[-q:]) @ vt[:q, :]
    return prod * (np.abs(prod) >= threshold)


def test_top_singular_triplets_match_dense_svd():
    users, items, nu, ni = _random_edges()
    dense = np.zeros((nu, ni))
    dense[users, items] = 1.0
    u, s, v = top_singular_triplets(dense, 5)
    _, s_ref, _ = np.linalg.svd(dense)
    np.testing.assert_allclose(s, s_ref[:5], rtol=1e-8)
    assert np.all(np.diff(s) <= 0)
    np.testing.assert_allclose((u * s) @ v.T @ v, dense @ v, atol=1e-8)  # singular vectors
    u2, _, _ = top_singular_triplets(dense, 5)
    np.testing.assert_array_equal(u, u2)  # seeded: same numbers every call
    with pytest.raises(ValueError, match="rank"):
        top_singular_triplets(dense, 11)


@pytest.mark.parametrize("rank", [8, 16])
@pytest.mark.parametrize("threshold", [0.0, 1e-3, 0.05])
def test_principal_graph_equals_official_dense_formula(rank, threshold):
    users, items, nu, ni = _random_edges()
    ours = principal_ui_graph(users, items, nu, ni, rank, threshold=threshold, block_size=3).to_dense().numpy()
    official = _official_principal(users.numpy(), items.numpy(), nu, ni, rank, threshold)
    # the diagonal blocks vanish (singular values come in +-pairs of the bipartite graph)
    np.testing.assert_allclose(official[:nu, :nu], 0.0, atol=1e-6)
    np.testing.assert_allclose(ours, official, atol=1e-6)
    assert np.allclose(ours, ours.T) and np.abs(ours).max() > 0.05
    if threshold:
        kept = ours[:nu, nu:] != 0
        assert np.all(np.abs(ours[:nu, nu:][kept]) >= threshold)
        assert threshold < 0.05 or not kept.all()


def test_principal_graph_by_hand_one_pair():
    # path u0-i0, u0-i1, u1-i1 (+ an isolated user 2 / item 2): degrees u (2, 1), i (1, 2),
    # R~ = [[1/sqrt2, 1/2, 0], [0, 1/sqrt2, 0], [0, 0, 0]], singular values 1 and 1/2; the top pair has
    # u ~ sqrt(d_u) = (sqrt2, 1)/sqrt3, v ~ sqrt(d_i) = (1, sqrt2)/sqrt3. rank 4, fraction 0.5: q = 2,
    # Â's spectrum (1, 1, 1/2, 1/2) -> weight s_0 s_2 = 1/2 on the top pair: B = u v^T / 2
    users, items = torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1])
    B = principal_ui_graph(users, items, 3, 3, rank=4, fraction=0.5, threshold=0.0).to_dense()[:3, 3:]
    r2 = math.sqrt(2)
    expected = torch.tensor([[r2 / 6, 1 / 3, 0], [1 / 6, r2 / 6, 0], [0, 0, 0]])
    torch.testing.assert_close(B, expected, atol=1e-6, rtol=0)
    # the threshold drops the entries below it in magnitude
    B = principal_ui_graph(users, items, 3, 3, rank=4, fraction=0.5, threshold=0.2).to_dense()[:3, 3:]
    torch.testing.assert_close(B, expected * (expected >= 0.2), atol=1e-6, rtol=0)
    with pytest.raises(ValueError, match="no singular pair"):
        principal_ui_graph(users, items, 3, 3, rank=4)  # int(0.25 x 4) = 1: no full pair
    with pytest.raises(ValueError, match="rank"):
        principal_ui_graph(users, items, 3, 3, rank=8, fraction=0.5)  # 4 triplets of a 3 x 3


def test_forward_by_hand(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("PGL", data_path, name)
    m.eval()
    with torch.no_grad():
        users, items = m.inference_embeddings()
        x = torch.cat([F.normalize(m.features[mod].weight @ m.projector.proj[mod].weight.T + m.projector.proj[mod].bias)
                       for mod in m.modalities], 1)
        p = torch.cat([m.user_prefs[mod].weight for mod in m.modalities], 1)
        A, S = m.full_adj.csr.to_dense(), m.mm_graph.csr.to_dense()
        e0 = torch.cat([p, x])
        e = (e0 + A @ e0 + A @ (A @ e0)) / 3
        torch.testing.assert_close(users, e[: m.n_users])
        torch.testing.assert_close(items, e[m.n_users:] + S @ x)
    assert users.shape[1] == len(m.modalities) * m.embedding_size


def test_loss_by_hand(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, train = _build("PGL", data_path, name, reg_weight=0.5, dropout=0.0)
    m.train()
    m.pre_epoch_processing()
    batch = next(iter(train))
    loss = m.calculate_loss(batch)
    users, items = m.forward(m.train_adj)
    u, p, n = users[batch["user_id"]], items[batch["item_id"]], items[batch["neg_item_id"]]
    bpr = -torch.log(torch.sigmoid((u * p).sum(1) - (u * n).sum(1))).mean()

    def self_nce(z):  # -mean log exp(cos(z_i, z_i)/t) / sum_j exp(cos(z_i, z_j)/t), t = 0.2
        zn = F.normalize(z, dim=1)
        sim = torch.exp(zn @ zn.T / 0.2)
        return -torch.log(sim.diag() / sim.sum(1)).mean()

    torch.testing.assert_close(loss, bpr + 0.5 * (self_nce(u) + self_nce(p)) / 2, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert all(t.weight.grad is not None for t in m.user_prefs.values())


def test_local_mode_samples_for_training_only(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("PGL", data_path, name)
    n_edges = len(m.train_users)
    m.train()
    m.pre_epoch_processing()
    assert m.train_adj.csr.values().numel() == 2 * math.ceil(0.3 * n_edges)
    first = m.train_adj.csr.to_dense()
    m.pre_epoch_processing()
    assert not torch.equal(first, m.train_adj.csr.to_dense())  # resampled every epoch
    m.eval()
    who = Interaction({"user_id": torch.tensor([1, 2])})
    before = m.full_sort_predict(who)
    m.pre_epoch_processing()
    m.eval()
    torch.testing.assert_close(before, m.full_sort_predict(who))  # inference: the complete graph


def test_global_mode_graph_fixed_and_cached(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("PGL", data_path, name, principal_mode="global")
    expected = principal_ui_graph(m.train_users, m.train_items, m.n_users, m.n_items, rank=16)
    torch.testing.assert_close(m.train_adj.csr.to_dense(), expected.to_dense())
    m.pre_epoch_processing()
    torch.testing.assert_close(m.train_adj.csr.to_dense(), expected.to_dense())  # not resampled
    _, again, _ = _build("PGL", data_path, name, principal_mode="global")  # from the cache
    torch.testing.assert_close(again.train_adj.csr.to_dense(), expected.to_dense())
    with pytest.raises(ValueError, match="principal_mode"):
        _build("PGL", data_path, name, principal_mode="both")


def test_same_seed_same_numbers(tiny_dataset):
    data_path, name = tiny_dataset
    losses = []
    for _ in range(2):
        _, m, train = _build("PGL", data_path, name, reg_weight=0.05)
        init_seed(1, True)  # torch (sampling, dropout) and numpy (RecBole's negative sampler)
        m.train()
        m.pre_epoch_processing()
        losses.append(m.calculate_loss(next(iter(train))).item())
    assert losses[0] == losses[1]
