"""MMGCF: the fusion (every fusion_mode x weighting) by hand, LightGCN and the loss against dense
computations, per-epoch degree-sensitive dropout, determinism."""

import itertools

import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_mm.utils import get_model
from tests.test_models import _build

COMBOS = list(itertools.product(["mean", "sum", "concat"], ["equal", "alpha", "normalized"]))


@pytest.fixture
def tiny(tiny_dataset):  # tiny_dataset has two modalities, text (8 dims) and image (6 dims)
    return tiny_dataset


def _batch(m, n=6):
    g = torch.Generator().manual_seed(1)
    return Interaction({"user_id": torch.randint(1, m.n_users, (n,), generator=g),
                        "item_id": torch.randint(1, m.n_items, (n,), generator=g),
                        "neg_item_id": torch.randint(1, m.n_items, (n,), generator=g)})


E = torch.tensor([[3.0, 4.0], [1.0, 0.0]])    # two items' LightGCN rows
F1 = torch.tensor([[1.0, 1.0], [0.0, 2.0]])   # their first modality embedding
F2 = torch.tensor([[-1.0, 3.0], [4.0, 0.0]])  # and the second


def test_fusion_by_hand(tiny):
    data_path, name = tiny
    cases = {  # (fusion, weighting) -> expected rows, worked out by hand
        ("mean", "equal"): [[(3 + 0) / 2, (4 + 2) / 2], [(1 + 2) / 2, (0 + 1) / 2]],  # (e + (f1+f2)/2) / 2
        ("sum", "equal"): [[3 + 0, 4 + 4], [1 + 4, 0 + 2]],
        ("mean", "alpha"): [[(1.5 + 0.5 - 0.5) / 3, (2 + 0.5 + 1.5) / 3], [(0.5 + 0 + 2) / 3, (0 + 1 + 0) / 3]],  # a = 0.5
        ("sum", "alpha"): [[1.5, 4.0], [2.5, 1.0]],
        # normalized: 2 e/|e| + f1/|f1| + f2/|f2|; |e| = 5, 1; |f1| = sqrt2, 2; |f2| = sqrt10, 4
        ("sum", "normalized"): [[1.2 + 2 ** -0.5 - 10 ** -0.5, 1.6 + 2 ** -0.5 + 3 * 10 ** -0.5], [2 + 0 + 1, 0 + 1 + 0]],
    }
    cases[("mean", "normalized")] = (torch.tensor(cases[("sum", "normalized")]) / 3).tolist()
    for (fusion, weighting), expected in cases.items():
        _, m, _ = _build("MMGCF", data_path, name, embedding_size=2, fusion_mode=fusion, weighting=weighting)
        torch.testing.assert_close(m.fuse_items(E, [F1, F2]), torch.tensor(expected, dtype=torch.float),
                                   msg=f"{fusion}/{weighting}")


def test_concat_fusion_by_hand(tiny):
    data_path, name = tiny
    _, m, _ = _build("MMGCF", data_path, name, embedding_size=2, fusion_mode="concat", weighting="equal")
    with torch.no_grad():  # mm layer: [f1; f2] -> sum of the four inputs in both outputs, + 1
        m.mm_fusion.linear.weight.copy_(torch.ones(2, 4))
        m.mm_fusion.linear.bias.fill_(1.0)
        m.id_mm_fusion.linear.weight.copy_(torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1.0]]))  # [e; mm] -> (e_0, mm_1)
        m.id_mm_fusion.linear.bias.zero_()
    # mm rows: 1+1-1+3+1 = 5, 0+2+4+0+1 = 7 (both columns) -> (e_0, 5), (e_0, 7)
    torch.testing.assert_close(m.fuse_items(E, [F1, F2]), torch.tensor([[3.0, 5.0], [1.0, 7.0]]))
    assert m.all_fusion is None

    _, m, _ = _build("MMGCF", data_path, name, embedding_size=2, fusion_mode="concat", weighting="alpha")
    assert m.mm_fusion is None and m.id_mm_fusion is None and m.all_fusion.linear.in_features == 6
    with torch.no_grad():
        m.all_fusion.linear.weight.copy_(torch.tensor([[1.0, 0, 1, 0, 1, 0], [0, 0, 0, 0, 0, 2.0]]))
        m.all_fusion.linear.bias.zero_()
        m.alpha_logit.fill_(torch.log(torch.tensor(3.0)))  # a = 3/4
    # row 0: 0.75*3 + 0.25*1 + 0.25*(-1) = 2.25, 2 * 0.25 * 3 = 1.5; row 1: 0.75 + 0 + 1 = 1.75, 0
    torch.testing.assert_close(m.fuse_items(E, [F1, F2]), torch.tensor([[2.25, 1.5], [1.75, 0.0]]))

    _, m, _ = _build("MMGCF", data_path, name, embedding_size=2, fusion_mode="concat", weighting="normalized")
    with torch.no_grad():
        m.all_fusion.linear.weight.copy_(torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 0, 0, 1.0, 0, 0]]))
        m.all_fusion.linear.bias.zero_()
    # (2 e/|e|)_0 and (f1/|f1|)_1: row 0 1.2, 2^-0.5; row 1 2, 1
    torch.testing.assert_close(m.fuse_items(E, [F1, F2]), torch.tensor([[1.2, 2 ** -0.5], [2.0, 1.0]]))


def test_single_modality_equal_skips_inner_fusion(tiny):
    data_path, name = tiny
    _, m, _ = _build("MMGCF", data_path, name, embedding_size=2, fusion_mode="concat", weighting="equal",
                     use_modalities=["text"])
    assert m.mm_fusion is None and m.id_mm_fusion.linear.in_features == 4
    _, m, _ = _build("MMGCF", data_path, name, embedding_size=2, weighting="equal", use_modalities=["text"])
    torch.testing.assert_close(m.fuse_items(E, [F1]), (E + F1) / 2)


@pytest.mark.parametrize("fusion", ["gate", "attention", "cross_attention", "non_invasive"])
def test_shared_fusion_operators(tiny, fusion):
    """The shared Fusion layer's other operators: ID rows first, then the (normalised) modality rows."""
    data_path, name = tiny
    _, m, _ = _build("MMGCF", data_path, name, embedding_size=2, fusion_mode=fusion, fusion_heads=1)
    assert m.all_fusion.mode == fusion and m.mm_fusion is None
    parts = [F.normalize(E, dim=1) * 2, F.normalize(F1, dim=1), F.normalize(F2, dim=1)]
    torch.testing.assert_close(m.fuse_items(E, [F1, F2]), m.all_fusion(parts))
    _, eq, _ = _build("MMGCF", data_path, name, embedding_size=2, fusion_mode=fusion, weighting="equal", fusion_heads=1)
    # equal weighting: the modalities fused first, then the ID rows with them
    torch.testing.assert_close(eq.fuse_items(E, [F1, F2]), eq.id_mm_fusion([E, eq.mm_fusion([F1, F2])]))


def test_forward_against_dense_lightgcn_and_projection(tiny):
    data_path, name = tiny
    _, m, _ = _build("MMGCF", data_path, name, n_ui_layers=2, weighting="equal")
    n = m.n_users + m.n_items
    a = torch.zeros(n, n)
    a[m.train_users, m.train_items + m.n_users] = 1.0
    a = a + a.T
    d = a.sum(1).clamp_min(1e-12) ** -0.5
    a = d[:, None] * a * d[None, :]
    ego = m.id_embeddings()
    e = (ego + a @ ego + a @ a @ ego) / 3
    feats = [m.projector.proj[k](m.modality_feature(k)) for k in m.modalities]
    users, items = m.forward(m.full_adj)
    torch.testing.assert_close(users, e[: m.n_users])
    torch.testing.assert_close(items, (e[m.n_users:] + (feats[0] + feats[1]) / 2) / 2)


@pytest.mark.parametrize("fusion,weighting", COMBOS)
def test_loss_every_combination(tiny, fusion, weighting):
    data_path, name = tiny
    _, m, _ = _build("MMGCF", data_path, name, fusion_mode=fusion, weighting=weighting, reg_weight=0.1)
    batch = _batch(m)
    m.train()
    m.pre_epoch_processing()
    loss = m.calculate_loss(batch)
    # the batch-row shortcut equals fusing the whole catalogue, then indexing (Eq. 4 by hand)
    users, items = m.forward(m.train_adj)
    u, p, q = users[batch["user_id"]], items[batch["item_id"]], items[batch["neg_item_id"]]
    bpr = -F.logsigmoid((u * p).sum(1) - (u * q).sum(1)).mean()
    ego = (m.user_embedding.weight[batch["user_id"]].pow(2).sum() + m.item_embedding.weight[batch["item_id"]].pow(2).sum()
           + m.item_embedding.weight[batch["neg_item_id"]].pow(2).sum()) / (2 * len(u))
    torch.testing.assert_close(loss, bpr + 0.1 * ego)
    loss.backward()
    learned = [m.user_embedding.weight, m.item_embedding.weight] + [p.weight for p in m.projector.proj.values()]
    learned += [getattr(m, "alpha_logit")] if weighting == "alpha" else []
    learned += [f.linear.weight for f in (m.mm_fusion, m.id_mm_fusion, m.all_fusion) if f is not None and f.mode == "concat"]
    assert fusion != "concat" or len(learned) > 4
    assert all(t.grad is not None and t.grad.abs().sum() > 0 for t in learned)


def test_dropout_resamples_training_graph_only(tiny):
    data_path, name = tiny
    _, m, _ = _build("MMGCF", data_path, name, dropout=0.5)
    n_edges = len(m.train_users)
    assert m.full_adj.csr.values().numel() == 2 * n_edges
    m.eval()
    users = Interaction({"user_id": torch.tensor([1, 2])})
    before = m.full_sort_predict(users)
    m.train()
    torch.manual_seed(3)
    m.pre_epoch_processing()
    first = m.train_adj.csr
    assert first.values().numel() == 2 * -(-n_edges // 2)  # ceil(0.5 |E|) edges, both directions
    m.pre_epoch_processing()
    assert not torch.equal(first.col_indices(), m.train_adj.csr.col_indices())  # a fresh sample per epoch
    m.eval()
    torch.testing.assert_close(before, m.full_sort_predict(users))  # inference: the full graph
    _, m, _ = _build("MMGCF", data_path, name, dropout=0.0)
    m.pre_epoch_processing()
    assert m.train_adj is m.full_adj


def test_same_seed_same_numbers(tiny):
    data_path, name = tiny
    config, _, train = _build("MMGCF", data_path, name, fusion_mode="concat", weighting="alpha")
    losses = []
    for _ in range(2):
        torch.manual_seed(0)
        m = get_model("MMGCF")(config, train.dataset)
        opt = torch.optim.Adam(m.parameters(), lr=0.01)
        torch.manual_seed(5)
        run = []
        for _ in range(3):
            m.train()
            m.pre_epoch_processing()
            loss = m.calculate_loss(_batch(m))
            opt.zero_grad()
            loss.backward()
            opt.step()
            run.append(loss.item())
        m.eval()
        losses.append((run, m.full_sort_predict(Interaction({"user_id": torch.tensor([1, 2])}))))
    assert losses[0][0] == losses[1][0]
    torch.testing.assert_close(losses[0][1], losses[1][1], rtol=0, atol=0)


def test_bad_settings_fail_clearly(tiny):
    data_path, name = tiny
    with pytest.raises(ValueError, match="feat_embed_dim"):
        _build("MMGCF", data_path, name, feat_embed_dim=8)
    with pytest.raises(ValueError, match="fusion_mode"):
        _build("MMGCF", data_path, name, fusion_mode="prod")
    with pytest.raises(ValueError, match="weighting"):
        _build("MMGCF", data_path, name, weighting="softmax")
    _, m, _ = _build("MMGCF", data_path, name, feat_embed_dim=8, fusion_mode="concat", weighting="equal")  # concat: any size
    assert m.mm_fusion.linear.in_features == 16 and m.id_mm_fusion.linear.in_features == 16 + 8
    assert m.calculate_loss(_batch(m)).isfinite()
