"""MVGAE and SLMRec, and the losses they added to recbole_mm.model.loss, on hand numbers and tiny data."""

import math
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_mm.model.general_recommender.mvgae import MVGAE, _MeanConv
from recbole_mm.model.layers import SparseOperator, lightgcn_propagate
from recbole_mm.model.loss import gaussian_kl, info_nce_dot, product_of_experts
from tests.test_models import _build


# -- losses --------------------------------------------------------------------------------------
def test_info_nce_dot_hand_and_cross_entropy():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # logits [[2, 0], [0, 1]]: no normalisation
    hand = ((math.log(math.exp(2) + 1) - 2) + (math.log(1 + math.e) - 1)) / 2
    assert info_nce_dot(a, b, 1.0).item() == pytest.approx(hand, rel=1e-6)
    assert info_nce_dot(a, b, 0.5).item() == pytest.approx(
        ((math.log(math.exp(4) + 1) - 4) + (math.log(1 + math.exp(2)) - 2)) / 2, rel=1e-6)
    torch.manual_seed(0)
    a = (5 * torch.randn(7, 4)).requires_grad_()  # large logits: the row-max shift keeps exp finite
    b = (5 * torch.randn(7, 4)).requires_grad_()
    ours = info_nce_dot(a, b, 0.1)
    ga, gb = torch.autograd.grad(ours, (a, b))
    ref = F.cross_entropy(a @ b.T / 0.1, torch.arange(7))
    ra, rb = torch.autograd.grad(ref, (a, b))
    torch.testing.assert_close(ours, ref)
    torch.testing.assert_close(ga, ra)
    torch.testing.assert_close(gb, rb)


def test_gaussian_kl_hand():
    mu = torch.tensor([[1.0, 0.0]])
    logvar = torch.tensor([[0.0, math.log(2.0)]])  # -1/2 [(1 + 0 - 1 - 1) + (1 + ln 2 - 0 - 2)]
    assert gaussian_kl(mu, logvar).item() == pytest.approx(1 - math.log(2) / 2, rel=1e-6)
    two_rows = gaussian_kl(torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.zeros(2, 2))
    assert two_rows.item() == pytest.approx(0.25)  # (1/2 + 0) / 2 rows
    clamped = gaussian_kl(torch.zeros(1, 1), torch.tensor([[20.0]]), max_logvar=10.0)
    assert clamped.item() == pytest.approx(-0.5 * (1 + 10 - math.exp(10)), rel=1e-6)


def test_product_of_experts_hand():
    mu = torch.tensor([[[1.0]], [[3.0]]])  # two experts, one row, one dimension
    same = product_of_experts(mu, torch.zeros(2, 1, 1))  # variances 1, 1
    assert same[0].item() == pytest.approx(2.0) and same[1].exp().item() == pytest.approx(0.5)
    logvar = torch.log(torch.tensor([[[1.0]], [[3.0]]]))  # precisions 1 + 1/3
    m, lv = product_of_experts(mu, logvar)
    assert m.item() == pytest.approx((1 + 3 / 3) / (4 / 3), rel=1e-6)
    assert lv.exp().item() == pytest.approx(0.75, rel=1e-6)


# -- MVGAE ---------------------------------------------------------------------------------------
def test_mvgae_mean_convolution_hand():
    conv = _MeanConv(2, 2, dropout=0.1)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(2))
        conv.bias.zero_()
    # path 0 - 1 - 2 with self-loops, rows divided by degree + 1
    rows = torch.tensor([0, 0, 1, 1, 1, 2, 2])
    cols = torch.tensor([0, 1, 0, 1, 2, 1, 2])
    values = torch.tensor([1 / 2, 1 / 2, 1 / 3, 1 / 3, 1 / 3, 1 / 2, 1 / 2])
    graph = SparseOperator(torch.sparse_coo_tensor(torch.stack([rows, cols]), values, (3, 3)))
    x = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    conv.eval()
    r = 1 / math.sqrt(2)
    expected = torch.tensor([[r, r], [r, r], [1 / math.sqrt(5), 2 / math.sqrt(5)]])
    torch.testing.assert_close(conv(graph, x), expected)
    conv.train()
    torch.manual_seed(0)
    assert not torch.allclose(conv(graph, x), expected)  # dropout in training only


def test_mvgae_graph_is_mean_over_self_and_neighbours(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("MVGAE", data_path, name)
    x = torch.randn(m.n_users + m.n_items, 3)
    u = int(m.train_users[0])
    items = m.train_items[m.train_users == u] + m.n_users
    torch.testing.assert_close((m.adj @ x)[u], torch.cat([x[u:u + 1], x[items]]).mean(0))


def _fake(n_users, sigmoid=False, nodes=False, scores=True, negatives="batch_hardest"):
    return SimpleNamespace(n_users=n_users, sigmoid_embeddings=sigmoid, mmrec_node_indexing=nodes,
                           score_sigmoid=scores, negatives=negatives)


def test_mvgae_reconstruction_hand():
    s = torch.sigmoid
    # nodes: users u0 = (1, 0), u1 = (0, 2); items i0 = (1, 0), i1 = (0, 1), i2 = (0.5, 0)
    z = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 0.0], [0.0, 1.0], [0.5, 0.0]])
    user, pos, neg = torch.tensor([0, 1]), torch.tensor([0, 2]), torch.tensor([1, 2])
    # u0: pos 1, hardest in-batch negative max(0, 0.5); u1: pos 0, negatives max(2, 0)
    d0 = s(torch.tensor(1.0)) - s(torch.tensor(0.5))
    d1 = s(torch.tensor(0.0)) - s(torch.tensor(2.0))
    hand = -(torch.log2(s(d0)) + torch.log2(s(d1)))
    got = MVGAE.reconstruction_loss(_fake(2), z, user, pos, neg)
    torch.testing.assert_close(got, hand)
    raw = MVGAE.reconstruction_loss(_fake(2, scores=False), z, user, pos, neg)  # the original code's decoder
    torch.testing.assert_close(raw, -(torch.log2(s(torch.tensor(1.0 - 0.5))) + torch.log2(s(torch.tensor(0.0 - 2.0)))))
    sig = MVGAE.reconstruction_loss(_fake(2, sigmoid=True), z, user, pos, neg)
    torch.testing.assert_close(sig, MVGAE.reconstruction_loss(_fake(2), s(z), user, pos, neg))
    # MMRec's indexing: item ids looked up in the joint node table (item 0 -> user row 0)
    mm = MVGAE.reconstruction_loss(_fake(2, nodes=True), z, user, pos, neg)
    zu = z[:2]
    pos_s = s((zu[user] * z[pos]).sum(1))
    neg_s = s((zu[user] @ z[neg].T).amax(1))
    torch.testing.assert_close(mm, -torch.log2(s(pos_s - neg_s)).sum())
    # own negatives: u0 against i1 (score 0), u1 against i2 (score 0) -- plain BPR in log2
    own = MVGAE.reconstruction_loss(_fake(2, scores=False, negatives="own"), z, user, pos, neg)
    torch.testing.assert_close(own, -(torch.log2(s(torch.tensor(1.0 - 0.0))) + torch.log2(s(torch.tensor(0.0 - 0.0)))))


def test_mvgae_sampling_and_loss_composition(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, train = _build("MVGAE", data_path, name)
    mu, logvar = torch.zeros(20000, 1), torch.zeros(20000, 1)
    m.train()
    torch.manual_seed(0)
    assert m.sample(mu, logvar).std().item() == pytest.approx(0.1, rel=0.05)  # 0.1 eps sigma
    m.eval()
    assert torch.equal(m.sample(mu, logvar), mu)
    batch = next(iter(train))
    fused, experts = m.encode()
    # fused precision = sum of the experts' precisions (two-stage product of experts)
    prec = sum(1 / lv.exp() for _, lv in experts)
    torch.testing.assert_close(1 / fused[1].exp(), prec, rtol=1e-4, atol=1e-4)
    user, pos, neg = batch[m.USER_ID], batch[m.ITEM_ID], batch[m.NEG_ITEM_ID]
    hand = sum(m.reconstruction_loss(mu_, user, pos, neg) + m.beta * gaussian_kl(mu_, lv_, 10.0)
               for mu_, lv_ in [fused, *experts])
    torch.testing.assert_close(m.calculate_loss(batch), hand)  # eval mode: z = mu, no dropout
    names = {n for n, _ in m.named_parameters()}
    assert "collaborative" in names and "cf_expert.preference" in names  # trained (the paper)
    _, frozen, _ = _build("MVGAE", data_path, name, train_embeddings=False)
    names = {n for n, _ in frozen.named_parameters()}
    assert not any("preference" in n or n == "collaborative" for n in names)  # MMRec: fixed random
    assert "collaborative" in frozen.state_dict() and "experts.text.preference" in frozen.state_dict()


def test_mvgae_same_seed_same_loss(tiny_dataset):
    data_path, name = tiny_dataset
    losses, batch = [], None
    for _ in range(2):
        _, m, train = _build("MVGAE", data_path, name)
        batch = next(iter(train)) if batch is None else batch  # one batch: the loader shuffles with its own state
        m.train()
        torch.manual_seed(3)
        losses.append(m.calculate_loss(batch))
    assert torch.equal(losses[0], losses[1])


def test_mvgae_recomputed_terms_change_no_number(tiny_dataset):
    """The product of experts and each ELBO term run again in backward (sampling noise replayed) and
    the in-place activations: training loss and every gradient equal the plain composition."""
    import torch.nn.functional as F
    from recbole_mm.model.general_recommender import mvgae as mod

    data_path, name = tiny_dataset
    _, m, train = _build("MVGAE", data_path, name)
    batch = next(iter(train))
    user, pos, neg = batch[m.USER_ID], batch[m.ITEM_ID], batch[m.NEG_ITEM_ID]
    m.train()
    params = [p for p in m.parameters() if p.requires_grad]

    def plain_encoder(enc, graph, item_inputs):  # the same layers, out-of-place, F.normalize
        x = F.normalize(torch.cat([enc.preference, enc.mlp(item_inputs)]), dim=-1)
        for conv, gate in zip(enc.convs, enc.gates):
            x = F.leaky_relu(gate(F.leaky_relu(conv(graph, x))))
        return tuple(h["gate"](F.leaky_relu(h["conv"](graph, x))) + F.leaky_relu(h["skip"](x))
                     for h in enc.heads.values())

    def plain_loss():
        experts = [plain_encoder(m.experts[k], m.adj, m.modality_feature(k)) for k in m.modalities]
        experts.append(plain_encoder(m.cf_expert, m.adj, m.collaborative))
        mm = mod.product_of_experts(torch.stack([mu for mu, _ in experts[:-1]]), torch.stack([lv for _, lv in experts[:-1]]))
        fused = mod.product_of_experts(torch.stack([mm[0], experts[-1][0]]), torch.stack([mm[1], experts[-1][1]]))
        return sum(m.reconstruction_loss(m.sample(mu, lv), user, pos, neg) + m.beta * gaussian_kl(mu, lv, 10.0)
                   for mu, lv in [fused, *experts])

    results = []
    for fn in (lambda: m.calculate_loss(batch), plain_loss):
        torch.manual_seed(5)  # the same dropout masks and sampling noise
        loss = fn()
        results.append([loss.detach()] + list(torch.autograd.grad(loss, params)))
    torch.testing.assert_close(results[0][0], results[1][0], rtol=0, atol=0)  # the same forward numbers
    for a, b in zip(results[0][1:], results[1][1:]):  # gradients up to float order (normalize_rows' formula)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# -- SLMRec --------------------------------------------------------------------------------------
def test_slmrec_block_propagation_is_per_view_lightgcn(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("SLMRec", data_path, name)
    assert m.n_views == 3
    u, i = int(m.train_users[0]), int(m.train_items[0])
    du, di = (m.train_users == u).sum().item(), (m.train_items == i).sum().item()
    dense_value = (m.adj @ torch.eye(m.n_users + m.n_items)[:, m.n_users + i:m.n_users + i + 1])[u]
    assert dense_value.item() == pytest.approx(1 / math.sqrt(du * di), rel=1e-5)  # sym-normalised Â
    ego = m.ego_views()
    views = m.propagate_views(ego)
    proj = m.projector({k: F.normalize(m.modality_feature(k), dim=1) for k in m.modalities})
    item_inputs = [m.item_embedding.weight] + [proj[k] for k in m.modalities]
    for k, items in enumerate(item_inputs):
        alone = lightgcn_propagate(m.adj, torch.cat([m.user_embedding.weight, items]), m.n_layers)
        torch.testing.assert_close(m.view_block(views, k), alone)
    rows = views[:4]
    torch.testing.assert_close(m.fuse(rows, m.user_out), rows @ m.user_out.weight.T + m.user_out.bias)


def test_slmrec_fac_chain_hand(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("SLMRec", data_path, name)
    d = m.embedding_size
    assert [step.out_features for step in m.fac_chain] == [d, d // 2]  # fine space, then the coarse one
    views = torch.randn(6, 3 * d)
    x1 = m.fac_chain[0](views[:, :d])
    x2 = m.fac_chain[1](x1)
    first, second = m.modalities
    y1, y2 = m.fac_heads[first](views[:, d:2 * d]), m.fac_heads[second](views[:, 2 * d:])
    labels = torch.arange(6)
    hand = F.cross_entropy(x1 @ y1.T / m.ssl_temp, labels) + F.cross_entropy(x2 @ y2.T / m.ssl_temp, labels)
    torch.testing.assert_close(m.fac_loss(views), hand)


def test_slmrec_main_task_is_in_batch_softmax(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, train = _build("SLMRec", data_path, name, ssl_alpha=0.0)
    m.eval()
    batch = next(iter(train))
    users, items = m.inference_embeddings()
    u = F.normalize(users[batch[m.USER_ID]], dim=1)
    i = F.normalize(items[batch[m.ITEM_ID]], dim=1)
    hand = F.cross_entropy(u @ i.T / m.temperature, torch.arange(len(u)))
    torch.testing.assert_close(m.calculate_loss(batch), hand)


def test_slmrec_masks_zero_two_different_views(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("SLMRec", data_path, name, ssl_task="FM")
    d = m.embedding_size
    torch.manual_seed(0)
    seen = set()
    for _ in range(30):
        mask = m.masks()
        zeroed = [tuple(int(mask[v, k * d:(k + 1) * d].sum() == 0) for k in range(3)) for v in range(2)]
        assert all(sum(z) == 1 for z in zeroed) and zeroed[0] != zeroed[1]
        assert mask.sum().item() == 2 * 2 * d
        seen.add((zeroed[0].index(1), zeroed[1].index(1)))
    assert len(seen) == 6  # every ordered pair of different views occurs


@pytest.mark.parametrize("task", ["FD", "FM", "FD+FM"])
def test_slmrec_augmented_tasks_train_and_repeat(tiny_dataset, task):
    data_path, name = tiny_dataset
    losses, batch = [], None
    for _ in range(2):
        _, m, train = _build("SLMRec", data_path, name, ssl_task=task, mm_fusion_mode="mean")
        batch = next(iter(train)) if batch is None else batch
        m.train()
        torch.manual_seed(5)
        loss = m.calculate_loss(batch)
        loss.backward()
        assert torch.isfinite(loss) and m.user_embedding.weight.grad.abs().sum() > 0
        losses.append(loss.detach())
    assert torch.equal(losses[0], losses[1])  # same seed -> same augmentations
    m.eval()
    users = Interaction({"user_id": torch.tensor([1, 2])})
    first = m.full_sort_predict(users)
    m._eval_cache = None
    torch.testing.assert_close(first, m.full_sort_predict(users))  # no dropout / masking at inference
    if "FD" in task:
        m.train()
        ego = m.ego_views()
        assert not torch.allclose(m.propagate_views(ego, 0.3), m.propagate_views(ego, 0.3))
