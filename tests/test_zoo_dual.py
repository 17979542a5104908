"""The user-user co-occurrence graph (graphs.py + base-class helpers), DualGNN and DRAGON, on tiny data,
each block against a hand computation."""

import math
import os

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_mm.data import graphs
from tests.test_models import _build

# users 0..4, items 0..4; training edges of a hand-checkable co-occurrence matrix
USERS = np.array([0, 0, 0, 1, 1, 2, 2, 3, 3, 4])
ITEMS = np.array([0, 1, 2, 0, 1, 1, 2, 2, 3, 4])
# shared items (R R^T off the diagonal), by hand:
#   0-1: {0,1} = 2   0-2: {1,2} = 2   0-3: {2} = 1   1-2: {1} = 1   2-3: {2} = 1   4: nobody
COUNTS = np.array([[0, 2, 2, 1, 0],
                   [2, 0, 1, 0, 0],
                   [2, 1, 0, 1, 0],
                   [1, 0, 1, 0, 0],
                   [0, 0, 0, 0, 0]], dtype=np.float32)


def _dense(op):
    return op.csr.to_dense()


def test_cooccurrence_counts_by_hand():
    rows, cols, counts = graphs.user_cooccurrence_counts(USERS, ITEMS, 5, 5, k=2)
    # top-2 per user, count descending, ties -> the smaller id (user 2: 0 (2), then 1 and 3 tie at 1 -> 1)
    assert rows.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert cols.tolist() == [1, 2, 0, 2, 0, 1, 0, 2]
    assert counts.tolist() == [2, 2, 2, 1, 2, 1, 1, 1]
    full = graphs.user_cooccurrence_graph(USERS, ITEMS, 5, 5, k=10)
    np.testing.assert_array_equal(full.to_dense().numpy(), COUNTS)  # all of R R^T without the diagonal


def test_cooccurrence_blockwise_equals_one_block():
    rng = np.random.default_rng(0)
    users, items = rng.integers(0, 30, 200), rng.integers(0, 25, 200)
    one = graphs.user_cooccurrence_counts(users, items, 30, 25, k=5, budget=10**9)
    per_user = graphs.user_cooccurrence_counts(users, items, 30, 25, k=5, budget=1)  # one user per block
    for a, b in zip(one, per_user):
        torch.testing.assert_close(a, b)
    R = np.zeros((30, 25))
    R[users, items] = 1
    C = R @ R.T
    np.fill_diagonal(C, 0)
    rows, cols, counts = one
    for u in range(30):  # the dense reference with the same tie rule
        nz = np.flatnonzero(C[u])
        expected = nz[np.lexsort((nz, -C[u, nz]))][:5]
        assert cols[rows == u].tolist() == expected.tolist()
        assert counts[rows == u].tolist() == C[u, expected].tolist()
    assert graphs._row_blocks(np.array([3.0, 1, 5, 10, 1]), 4) == [(0, 2), (2, 3), (3, 4), (4, 5)]


def test_user_graph_normalisations():
    g = graphs.user_cooccurrence_graph(USERS, ITEMS, 5, 5, k=3)
    soft = graphs.normalize_user_graph(g, "softmax").to_dense()
    e = math.exp(1.0)  # user 0: counts (2, 2, 1) -> e^2, e^2, e^1 over their sum
    torch.testing.assert_close(soft[0], torch.tensor([0, e**2, e**2, e, 0]) / (2 * e**2 + e))
    torch.testing.assert_close(soft[3], torch.tensor([0.5, 0, 0.5, 0, 0]))
    assert soft[4].sum() == 0  # no co-occurring user: empty row
    mean = graphs.normalize_user_graph(g, "mean").to_dense()
    torch.testing.assert_close(mean[1], torch.tensor([0.5, 0, 0.5, 0, 0]))
    torch.testing.assert_close(graphs.normalize_user_graph(g, "none").to_dense(), torch.from_numpy(COUNTS))
    with pytest.raises(ValueError, match="normalization"):
        graphs.normalize_user_graph(g, "max")


def test_padded_user_graph_by_hand():
    g = graphs.user_cooccurrence_graph(USERS, ITEMS, 5, 5, k=3)
    gen = torch.Generator().manual_seed(3)
    padded = graphs.padded_user_graph(g, 3, "softmax", generator=gen).to_dense()
    # user 0 has 3 neighbours: the plain softmax; no padding
    torch.testing.assert_close(padded[0], graphs.normalize_user_graph(g, "softmax").to_dense()[0])
    # user 2's 3 neighbours (0: 2, 1: 1, 3: 1) fill k = 3 too; users 1 and 3 have 2 (cols ascending, [0, 2]):
    # position 2 repeats entry 0 or 1 of the list, one draw per padded user from the same generator
    torch.testing.assert_close(padded[2], graphs.normalize_user_graph(g, "softmax").to_dense()[2])
    draws = torch.randint(0, 2, (2,), generator=torch.Generator().manual_seed(3))
    for user, draw in ((1, int(draws[0])), (3, int(draws[1]))):
        neighbours = [0, 2]
        c = torch.from_numpy(COUNTS[user, neighbours])
        w = torch.softmax(torch.cat([c, c[draw].view(1)]), 0)  # softmax over the k = 3 listed counts
        expected = torch.zeros(5)
        expected[neighbours] = w[:2]
        expected[neighbours[draw]] += w[2]  # a repeated neighbour's weights add up
        torch.testing.assert_close(padded[user], expected)
    assert padded[4].sum() == 0
    torch.testing.assert_close(padded.sum(1)[:4], torch.ones(4))
    mean = graphs.padded_user_graph(g, 3, "mean", generator=torch.Generator().manual_seed(3)).to_dense()
    assert sorted(mean[1][mean[1] > 0].tolist()) == pytest.approx(sorted([1 / 3, 2 / 3]))


def test_padded_user_graph_polya_urn_and_seed():
    """One neighbour: every padding entry repeats it (weight 1). Fewer than k: same seed, same draw."""
    users, items = np.array([0, 1, 2, 2]), np.array([0, 0, 1, 2])
    g = graphs.user_cooccurrence_graph(users, items, 3, 3, k=4)
    padded = graphs.padded_user_graph(g, 4, generator=torch.Generator().manual_seed(0)).to_dense()
    torch.testing.assert_close(padded, torch.tensor([[0, 1.0, 0], [1.0, 0, 0], [0, 0, 0]]))
    rng = np.random.default_rng(1)
    big = graphs.user_cooccurrence_graph(rng.integers(0, 20, 60), rng.integers(0, 15, 60), 20, 15, k=6)
    a = graphs.padded_user_graph(big, 6, generator=torch.Generator().manual_seed(5))
    b = graphs.padded_user_graph(big, 6, generator=torch.Generator().manual_seed(5))
    torch.testing.assert_close(a.to_dense(), b.to_dense())
    nonempty = torch.bincount(big.indices()[0], minlength=20) > 0
    torch.testing.assert_close(a.to_dense().sum(1)[nonempty], torch.ones(int(nonempty.sum())))
    assert ((a.to_dense() > 0) <= (big.to_dense() > 0)).all()  # only real neighbours
    with pytest.raises(ValueError, match="more than k"):
        graphs.padded_user_graph(big, 2)


def test_base_class_user_graph_cached(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("DualGNN", data_path, name)
    ref = graphs.user_cooccurrence_graph(m.train_users.numpy(), m.train_items.numpy(), m.n_users, m.n_items, 5,
                                         normalization="softmax")
    op = m.user_graph(5, "softmax")
    torch.testing.assert_close(_dense(op), ref.to_dense())
    files = [f for f in os.listdir(m.graph_cache_dir) if f.startswith("usercooc-")]
    assert len(files) == 2  # k=40 (the model's own graph) and k=5
    _, again, _ = _build("DualGNN", data_path, name)
    torch.testing.assert_close(again._user_counts_coo(5).to_dense(), m._user_counts_coo(5).to_dense())


def _hand_reps(m):
    """The single-modal representations written densely: x = normalize([P; MLP(f)]), x + A x + A^2 x,
    A = D^-1/2 [[0, R], [R^T, 0]] D^-1/2."""
    n = m.n_users + m.n_items
    A = torch.zeros(n, n)
    A[m.train_users, m.train_items + m.n_users] = 1
    A = A + A.T
    d = A.sum(1)
    inv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    A = inv[:, None] * A * inv[None]
    reps = []
    for mod in m.modalities:
        lin1, lin2 = m.mlp[mod][0], m.mlp[mod][2]
        f = m.modality_feature(mod)
        item = F.leaky_relu(f @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias
        x = torch.cat([m.preference[mod], item])
        x = x / x.norm(dim=1, keepdim=True)
        reps.append(x + A @ x + A @ A @ x)
    return reps


@pytest.mark.parametrize("construction, alias", [("weighted_sum", True), ("weighted_sum", False), ("mean", True),
                                                 ("weighted_max", True), ("cat_mlp", True), ("cat", True)])
def test_dualgnn_forward_and_loss_by_hand(tiny_dataset, construction, alias):
    data_path, name = tiny_dataset
    _, m, train = _build("DualGNN", data_path, name, construction=construction, mmrec_fusion_alias=alias,
                         user_knn_k=5, reg_weight=0.1)
    with torch.no_grad():
        m.weight_u.uniform_(0.1, 0.9)  # distinct weights per user and modality
    reps = _hand_reps(m)
    for got, want in zip(m.modality_representations(), reps):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    nu = m.n_users
    a = m.weight_u.squeeze(2)  # (n_users, M)
    hu = [h[:nu] for h in reps]
    if alias and construction in ("weighted_sum", "weighted_max"):
        hu[0] = hu[0] + hu[1]  # MMRec: the first modality's part is the sum of both
    items = torch.cat([h[nu:] for h in reps], 1) if construction == "cat" else reps[0][nu:] + reps[1][nu:]
    users = {"weighted_sum": lambda: a[:, :1] * hu[0] + a[:, 1:] * hu[1],
             "mean": lambda: (hu[0] + hu[1]) / 2,
             "weighted_max": lambda: torch.maximum(a[:, :1] * hu[0], a[:, 1:] * hu[1]),
             "cat_mlp": lambda: m.user_mlp(torch.cat([a[:, :1] * hu[0], a[:, 1:] * hu[1]], 1)),
             "cat": lambda: torch.cat([a[:, :1] * hu[0], a[:, 1:] * hu[1]], 1)}[construction]()
    users = users + _dense(m.user_adj) @ users  # co-occurrence aggregation
    got_users, got_items = m.forward()
    torch.testing.assert_close(got_users, users, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_items, items, rtol=1e-4, atol=1e-5)

    batch = next(iter(train))
    u, p, n = batch["user_id"], batch["item_id"], batch["neg_item_id"]
    diff = (users[u] * items[p]).sum(1) - (users[u] * items[n]).sum(1)
    reg = sum((m.preference[mod][u] ** 2).mean() for mod in m.modalities)
    if construction in ("weighted_sum", "cat"):
        reg = reg + (m.weight_u ** 2).mean()
    elif construction == "cat_mlp":
        reg = reg + (m.user_mlp.weight ** 2).mean()
    expected = -torch.log2(torch.sigmoid(diff)).mean() + 0.1 * reg
    torch.testing.assert_close(m.calculate_loss(batch), expected, rtol=1e-4, atol=1e-5)


def test_dragon_item_graph_by_hand(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("DRAGON", data_path, name, modality_weights={"image": 0.1}, user_knn_k=5)
    assert m.construction == "cat"
    expected_graph = 0.1 * _dense(m.knn_graph(m.modality_feature("image"), 10)) \
        + 0.9 * _dense(m.knn_graph(m.modality_feature("text"), 10))
    S = _dense(m.mm_graph)
    torch.testing.assert_close(S, expected_graph)
    assert torch.allclose(S[1:].sum(1), torch.ones(m.n_items - 1))  # each binary KNN row is 1/k x k
    users, items = m.fuse(m.modality_representations())
    got_users, got_items = m.forward()
    torch.testing.assert_close(got_items, items + S @ items, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_users, users + _dense(m.user_adj) @ users, rtol=1e-4, atol=1e-5)
    assert got_items.shape[1] == 2 * m.embedding_size  # attentive concatenation


@pytest.mark.parametrize("model", ["DualGNN", "DRAGON"])
def test_same_seed_same_numbers_and_epoch_resampling(tiny_dataset, model):
    data_path, name = tiny_dataset
    _, a, train = _build(model, data_path, name)
    _, b, _ = _build(model, data_path, name)
    batch = next(iter(train))
    torch.testing.assert_close(a.calculate_loss(batch), b.calculate_loss(batch))
    a.eval()
    scores = a.full_sort_predict(batch)
    torch.testing.assert_close(scores, a.full_sort_predict(batch))
    before = _dense(a.user_adj)
    torch.manual_seed(1)
    a.pre_epoch_processing()  # the padding is redrawn; real neighbour sets and row sums stay
    after = _dense(a.user_adj)
    assert ((after > 0) <= (a._user_counts_coo(a.user_knn_k).to_dense() > 0)).all()
    torch.testing.assert_close(after.sum(1), before.sum(1))


def test_bad_construction(tiny_dataset):
    data_path, name = tiny_dataset
    with pytest.raises(ValueError, match="construction"):
        _build("DualGNN", data_path, name, construction="concat")


def test_checkpoint_restores_the_epoch_user_graph(tiny_dataset):
    """k=40 > any tiny user's neighbours: every row is padded; load_state_dict brings back the draw."""
    data_path, name = tiny_dataset
    _, m, _ = _build("DualGNN", data_path, name)
    m.pre_epoch_processing()
    state = {k: v.clone() for k, v in m.state_dict().items()}
    graph = _dense(m.user_adj)
    m.eval()
    users = Interaction({"user_id": torch.arange(1, 11)})
    scores = m.full_sort_predict(users)
    m.pre_epoch_processing()
    assert not torch.equal(_dense(m.user_adj), graph)  # a new padding draw
    m.load_state_dict(state)
    m.eval()
    torch.testing.assert_close(_dense(m.user_adj), graph)
    torch.testing.assert_close(m.full_sort_predict(users), scores)
