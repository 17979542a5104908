"""COHESION on tiny data: early fusion, adaptive weights, the composite GCN and the loss against hand
computations; the detached ID branch, edge dropout, seeds, checkpoints."""

import math

import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_mm.model.general_recommender.cohesion import adaptive_block_weights, quadratic_mean_fusion
from tests.test_models import _build


def _dense(op):
    return op.csr.to_dense()


def _norm_adj(m, users=None, items=None):
    users = m.train_users if users is None else users
    items = m.train_items if items is None else items
    n = m.n_users + m.n_items
    A = torch.zeros(n, n)
    A[users, items + m.n_users] = 1
    A = A + A.T
    d = A.sum(1)
    inv = torch.where(d > 0, d.pow(-0.5), torch.zeros_like(d))
    return inv[:, None] * A * inv[None]


def test_quadratic_mean_fusion_by_hand():
    f = torch.tensor([[3.0, 0.0, -1.0]])
    e = torch.tensor([[4.0, 0.0, 1.0]])
    # sqrt((9 + 16) / 2), sqrt(0 + eps), sqrt((1 + 1) / 2)
    expected = torch.tensor([[math.sqrt(12.5 + 1e-8), math.sqrt(1e-8), math.sqrt(1 + 1e-8)]])
    torch.testing.assert_close(quadratic_mean_fusion(f, e), expected)


def test_adaptive_block_weights_by_hand():
    u = torch.tensor([[1.0, 2.0, 1.0, 0.0]])  # two blocks of width 2
    p = torch.tensor([[1.0, 1.0, 2.0, 5.0]])  # block scores 3, 2
    n = torch.tensor([[0.0, 1.0, 0.0, 9.0]])  # block scores 2, 0 -> differences 1, 2
    soft = torch.tensor([math.exp(1), math.exp(2)]) / (math.exp(1) + math.exp(2))
    w = adaptive_block_weights(u.requires_grad_(), p, n, 2)
    torch.testing.assert_close(w, (1 - soft).view(1, 2))
    assert not w.requires_grad  # no gradient through the weights
    torch.testing.assert_close(w.sum(1), torch.ones(1))  # M + 1 blocks sum to M


def _hand_forward(m, A):
    """Dense COHESION forward: early fusion, refined propagation, concatenation, homogeneous graphs."""
    feats = [m.id_feat] + [m.modality_feature(mod) for mod in m.modalities]
    reps = []
    for b, f in enumerate(feats):
        lin1, lin2 = m.mlp[b][0], m.mlp[b][2]
        g = F.leaky_relu(f @ lin1.weight.T + lin1.bias) @ lin2.weight.T + lin2.bias
        e = torch.sqrt((g * g + m.id_feat * m.id_feat) / 2 + 1e-8)
        x = torch.cat([m.preference[b], e])
        x = x / x.norm(dim=1, keepdim=True)
        h, total = x, x
        for _ in range(m.n_ui_layers):
            h = A @ h
            h = F.cosine_similarity(h, x, dim=1).unsqueeze(1) * h
            total = total + h
        reps.append(total)
    nu = m.n_users
    users = torch.cat([h[:nu] for h in reps], 1)
    items = torch.cat([h[nu:] for h in reps], 1)
    items = items + _dense(m.mm_graph) @ items  # n_mm_layers = 1
    return users + _dense(m.user_adj) @ users, items


@pytest.mark.parametrize("layers", [1, 2])
def test_forward_and_loss_by_hand(tiny_dataset, layers):
    data_path, name = tiny_dataset
    _, m, train = _build("COHESION", data_path, name, n_ui_layers=layers, modality_weights={"image": 0.1},
                         user_knn_k=5, reg_weight=0.1)
    S = _dense(m.mm_graph)
    expected_graph = 0.1 * _dense(m.knn_graph(m.modality_feature("image"), 10)) \
        + 0.9 * _dense(m.knn_graph(m.modality_feature("text"), 10))
    torch.testing.assert_close(S, expected_graph)
    users, items = _hand_forward(m, _norm_adj(m))
    got_users, got_items = m.forward()
    torch.testing.assert_close(got_users, users, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got_items, items, rtol=1e-4, atol=1e-5)
    assert got_items.shape[1] == 3 * m.embedding_size  # ID + two modalities, concatenated

    batch = next(iter(train))
    u, p, n = users[batch["user_id"]], items[batch["item_id"]], items[batch["neg_item_id"]]
    d = m.embedding_size
    pos_b = torch.stack([(u[:, b * d:(b + 1) * d] * p[:, b * d:(b + 1) * d]).sum(1) for b in range(3)], 1)
    neg_b = torch.stack([(u[:, b * d:(b + 1) * d] * n[:, b * d:(b + 1) * d]).sum(1) for b in range(3)], 1)
    w = 1 - torch.softmax(pos_b - neg_b, 1)
    diff = (w * pos_b).sum(1) - (w * neg_b).sum(1)
    reg = sum((m.preference[b][batch["user_id"]] ** 2).mean() for b in (1, 2))  # not the ID branch's
    expected = -torch.log2(torch.sigmoid(diff)).mean() + 0.1 * reg
    torch.testing.assert_close(m.calculate_loss(batch), expected, rtol=1e-4, atol=1e-5)

    m.eval()  # scoring: the plain dot product of the full-graph embeddings
    scores = m.full_sort_predict(Interaction({"user_id": torch.tensor([1, 2])})).view(2, -1)
    torch.testing.assert_close(scores, users[[1, 2]] @ items.T, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("detach", [True, False])
def test_detached_id_branch(tiny_dataset, detach):
    data_path, name = tiny_dataset
    _, m, train = _build("COHESION", data_path, name, detach_id=detach)
    m.calculate_loss(next(iter(train))).backward()
    # official: the ID branch's output is .data -> its preferences and MLP get no gradient; the ID table
    # still learns through the modality branches' early fusion
    assert (m.preference[0].grad is None) == detach and (m.mlp[0][0].weight.grad is None) == detach
    assert m.id_feat.grad is not None and m.preference[1].grad is not None


def test_edge_dropout_prunes_training_graph_only(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, train = _build("COHESION", data_path, name, dropout=0.5)
    torch.manual_seed(3)
    m.pre_epoch_processing()
    n_edges = len(m.train_users)
    assert m.train_adj.csr._nnz() == 2 * math.ceil(0.5 * n_edges) and m.adj.csr._nnz() == 2 * n_edges
    # the pruned graph is re-normalised over the kept edges
    rows, cols = m.train_adj.csr.to_sparse_coo().coalesce().indices()
    keep = rows < m.n_users
    pruned = _norm_adj(m, rows[keep], cols[keep] - m.n_users)
    torch.testing.assert_close(_dense(m.train_adj), pruned)
    m.eval()
    torch.testing.assert_close(m.inference_embeddings()[1], m.forward(m.adj)[1])  # inference: the full graph
    with pytest.raises(ValueError, match="dropout"):
        _build("COHESION", data_path, name, dropout=1.0)


def test_same_seed_same_numbers_and_checkpoint(tiny_dataset):
    data_path, name = tiny_dataset
    _, a, train = _build("COHESION", data_path, name)
    _, b, _ = _build("COHESION", data_path, name)
    batch = next(iter(train))
    torch.testing.assert_close(a.calculate_loss(batch), b.calculate_loss(batch))
    state = {k: v.clone() for k, v in a.state_dict().items()}
    a.eval()
    users = Interaction({"user_id": torch.arange(1, 11)})
    scores = a.full_sort_predict(users)
    torch.testing.assert_close(scores, a.full_sort_predict(users))
    a.pre_epoch_processing()  # a new padding draw of the user graph
    a.load_state_dict(state)  # brings back the draw the scores were made with
    a.eval()
    torch.testing.assert_close(a.full_sort_predict(users), scores)
