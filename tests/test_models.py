"""Model-specific behaviour of the multimodal baselines, on tiny data."""

import pytest
import torch
from recbole.data.interaction import Interaction

from recbole_mm.config import Config
from recbole_mm.data import create_dataset, data_preparation
from recbole_mm.quick_start import run_recbole_mm
from recbole_mm.utils import get_model
from tests.conftest import FAST, make_mmrec_folder

from recbole_mm.model.general_recommender import discover

MODELS = sorted(discover())  # every model of the package


def _build(model_name, data_path, name, **overrides):
    """A model built by hand, for tests that call its methods on CPU tensors directly (on any machine:
    with a GPU, RecBole would put the graphs on it); the end-to-end tests run on the run's device."""
    config = Config(model_name, name, config_dict={"data_path": data_path, **FAST, "use_gpu": False, **overrides})
    dataset = create_dataset(config)
    train, valid, test = data_preparation(config, dataset)
    torch.manual_seed(0)
    model = get_model(model_name)(config, train.dataset)
    return config, model, train


@pytest.fixture
def three_modalities(tmp_path):
    from dataset_converters.mmrec import convert

    raw = make_mmrec_folder(tmp_path / "raw3", name="tri", dims=(("a", 8), ("b", 6), ("c", 5)))
    convert(str(raw), str(tmp_path / "data3"))
    return str(tmp_path / "data3"), "tri"


@pytest.mark.parametrize("model", MODELS)
@pytest.mark.parametrize("mods", [["a"], ["a", "b", "c"]])
def test_any_number_of_modalities(three_modalities, run_config, model, mods):
    data_path, name = three_modalities
    cfg = dict(run_config, data_path=data_path, epochs=1, use_modalities=mods)
    result = run_recbole_mm(model, name, config_dict=cfg, print_result=False)
    assert 0 <= result["test_result"]["recall@20"] <= 1


@pytest.mark.parametrize("model", MODELS)
def test_predict_matches_full_sort(tiny_dataset, model):
    data_path, name = tiny_dataset
    _, m, train = _build(model, data_path, name)
    m.eval()
    users = torch.tensor([1, 2, 3])
    n = m.n_items
    full = m.full_sort_predict(Interaction({"user_id": users})).view(3, -1)
    pair = m.predict(Interaction({"user_id": users.repeat_interleave(n), "item_id": torch.arange(n).repeat(3)}))
    torch.testing.assert_close(full, pair.view(3, -1), rtol=1e-4, atol=1e-5)
    again = m.full_sort_predict(Interaction({"user_id": users})).view(3, -1)
    torch.testing.assert_close(full, again)  # deterministic at inference (no Gumbel/dropout noise)


def test_freedom_prunes_for_training_only(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("FREEDOM", data_path, name, edge_prune_ratio=0.5)
    full_nnz = m.full_adj.csr.values().numel()
    m.train()
    m.pre_epoch_processing()
    assert m.train_adj.csr.values().numel() == 2 * -(-len(m.train_users) // 2)  # ceil(0.5 |E|) edges, both ways
    assert full_nnz == 2 * len(m.train_users)
    m.eval()
    users = Interaction({"user_id": torch.tensor([1, 2])})
    before = m.full_sort_predict(users)
    m.pre_epoch_processing()  # a new pruned graph must not change inference
    m.eval()
    torch.testing.assert_close(before, m.full_sort_predict(users))


def test_lattice_learns_graph_once_per_epoch(tiny_dataset):
    data_path, name = tiny_dataset
    config, m, train = _build("LATTICE", data_path, name)
    m.train()
    batch = next(iter(train))
    m.pre_epoch_processing()
    m.calculate_loss(batch).backward()
    first = {n: p.grad for n, p in m.named_parameters() if n.startswith(("projector", "modal_logits"))}
    assert all(g is not None and g.abs().sum() > 0 for g in first.values())
    m.zero_grad(set_to_none=True)
    m.calculate_loss(batch).backward()  # same epoch: graph reused, detached
    assert all(p.grad is None for n, p in m.named_parameters() if n.startswith(("projector", "modal_logits")))


def test_bm3_trains_without_negatives(tiny_dataset):
    data_path, name = tiny_dataset
    config, m, train = _build("BM3", data_path, name)
    assert config["train_neg_sample_args"]["distribution"] == "none"
    batch = next(iter(train))
    assert m.NEG_ITEM_ID not in batch.interaction
    loss = m.calculate_loss(batch)
    assert torch.isfinite(loss) and loss.item() > 0


def test_mgcn_attention_weights(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("MGCN", data_path, name)
    m.forward()
    w = m.common.last_weights
    assert w.shape == (m.n_users + m.n_items, 2)
    torch.testing.assert_close(w.sum(1), torch.ones(w.shape[0]))


def test_modality_weights_validation(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("FREEDOM", data_path, name)
    assert m.modality_weights({"text": 0.1}) == pytest.approx({"image": 0.9, "text": 0.1})
    assert m.modality_weights(None) == pytest.approx({"image": 0.5, "text": 0.5})
    with pytest.raises(ValueError, match="audio"):
        m.modality_weights({"audio": 0.3})


def test_feature_norm(tiny_dataset):
    """``feature_norm`` transforms what the model sees; the dataset's tensors stay as stored."""
    data_path, name = tiny_dataset
    _, raw, train = _build("VBPR", data_path, name)
    stored = train.dataset.item_features["image"].float()
    torch.testing.assert_close(raw.modality_feature("image"), stored)
    _, m, _ = _build("VBPR", data_path, name, feature_norm="l2")
    by_hand = stored / stored.norm(dim=1, keepdim=True).clamp_min(1e-12)
    torch.testing.assert_close(m.modality_feature("image"), by_hand)
    _, m, _ = _build("VBPR", data_path, name, feature_norm="standard")
    real = m.modality_feature("image")[1:]
    torch.testing.assert_close(real.mean(0), torch.zeros(real.shape[1]), atol=1e-5, rtol=0)
    torch.testing.assert_close(real.std(0, unbiased=False), torch.ones(real.shape[1]), atol=1e-4, rtol=0)
    torch.testing.assert_close(m.modality_feature("image")[0], stored[0])  # padding row untouched
    torch.testing.assert_close(train.dataset.item_features["image"].float(), stored)
    with pytest.raises(ValueError, match="feature_norm"):
        _build("VBPR", data_path, name, feature_norm="minmax")


@pytest.mark.parametrize("fusion", ["sum", "mean", "concat", "gate", "attention"])
def test_alignrec_fusions(tiny_dataset, run_config, fusion):
    data_path, name = tiny_dataset
    result = run_recbole_mm("AlignRec", name, config_dict=dict(run_config, data_path=data_path, epochs=1,
                                                                fusion=fusion), print_result=False)
    assert 0 <= result["test_result"]["recall@20"] <= 1


def test_alignrec_loss_terms_switch_off(tiny_dataset):
    data_path, name = tiny_dataset
    off = dict(cca_weight=0.0, uia_weight=0.0, sim_weight=0.0, reg_weight=0.0)
    _, m, train = _build("AlignRec", data_path, name, **off)
    batch = next(iter(train))
    h, _, _ = m.forward()
    users, items = h[: m.n_users], h[m.n_users:]
    u, p, n = users[batch["user_id"]], items[batch["item_id"]], items[batch["neg_item_id"]]
    from recbole_mm.model.loss import bpr_loss

    torch.testing.assert_close(m.calculate_loss(batch), bpr_loss((u * p).sum(1), (u * n).sum(1)))
    _, m2, _ = _build("AlignRec", data_path, name, **dict(off, uia_weight=1.0))
    assert m2.calculate_loss(batch) > m.calculate_loss(batch)  # 1 - cos adds a positive term


@pytest.mark.parametrize("off, cca_dtype", [(None, "auto"), (None, "float32"), (None, "bfloat16"),
                                            ("cca_weight", "auto"), ("sim_weight", "auto")])
def test_alignrec_loss_is_the_sum_of_its_terms(tiny_dataset, off, cca_dtype):
    """calculate_loss (one gather per table, BPR/L2/UIA sharing row products) equals the paper's
    objective written term by term on the forward() tables, in value and in every parameter's
    gradient; also with CCA or REG off, and with the CCA in each ``cca_dtype``."""
    from recbole_mm.model.loss import bpr_loss, info_nce, l2_reg, similarity_preserving_loss

    data_path, name = tiny_dataset
    w = dict(cca_weight=0.5, uia_weight=0.3, sim_weight=0.7, reg_weight=0.01, cca_dtype=cca_dtype)
    if off:
        w[off] = 0.0
    _, m, train = _build("AlignRec", data_path, name, **w)
    batch = next(iter(train))
    user, pos, neg = batch["user_id"], batch["item_id"], batch["neg_item_id"]
    assert len(torch.unique(pos)) < len(pos)  # repeats exercise the distinct-row paths

    h, h_mm, h_id = m.forward()
    nu = m.n_users
    u, p, n = h[:nu][user], h[nu:][pos], h[nu:][neg]
    users_d, items_d = torch.unique(user), torch.unique(pos)
    reference = (bpr_loss((u * p).sum(1), (u * n).sum(1)) + w["reg_weight"] * l2_reg(u, p, n)
                 + w["cca_weight"] * (info_nce(h_mm[nu:][items_d], h_id[nu:][items_d], m.cca_temperature, m.cca_dtype)
                                      + info_nce(h_mm[:nu][users_d], h_id[:nu][users_d], m.cca_temperature,
                                                 m.cca_dtype))
                 + w["uia_weight"] * (1 - torch.nn.functional.cosine_similarity(u, p, dim=-1)).mean()
                 + w["sim_weight"] * similarity_preserving_loss(h_mm[nu:][pos], m.h_enc[pos]))  # with repeats
    assert m.cca_dtype == {"float32": None, "bfloat16": torch.bfloat16}.get(cca_dtype, m.cca_dtype)
    params = [q for q in m.parameters() if q.requires_grad]
    expected = torch.autograd.grad(reference, params)
    value = m.calculate_loss(batch)
    got = torch.autograd.grad(value, params)
    torch.testing.assert_close(value, reference)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e)


def test_alignrec_uses_fused_modality_when_present(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("AlignRec", data_path, name, encoder_modality="text")
    torch.testing.assert_close(m.h_enc, m.modality_feature("text"))
    _, fallback, _ = _build("AlignRec", data_path, name, encoder_modality="fused")
    assert fallback.h_enc.shape[1] == 8 + 6  # normalised concatenation of image and text
    _, weighted, _ = _build("AlignRec", data_path, name, encoder_modality="fused",
                            modality_weights={"image": 0.2})
    h = weighted.h_enc[1:]  # row 0 is RecBole's padding item
    torch.testing.assert_close(h.norm(dim=1), torch.ones(len(h)))
    cos = {m: torch.nn.functional.normalize(weighted.modality_feature(m)[1:], dim=1) for m in ("image", "text")}
    torch.testing.assert_close(h @ h.T, 0.2 * cos["image"] @ cos["image"].T + 0.8 * cos["text"] @ cos["text"].T)


def test_alignrec_train_features_tunes_a_copy(tiny_dataset):
    """train_features: the MLP input gets gradients; the graph source and REG target do not move."""
    data_path, name = tiny_dataset
    _, fixed, _ = _build("AlignRec", data_path, name, train_features=False)
    assert fixed.h_enc_tuned is None
    _, m, train = _build("AlignRec", data_path, name, train_features=True)
    original = m.h_enc.clone()
    torch.testing.assert_close(m.h_enc_tuned.detach(), original)
    opt = torch.optim.SGD(m.parameters(), lr=1.0)
    m.calculate_loss(next(iter(train))).backward()
    assert m.h_enc_tuned.grad is not None and m.h_enc_tuned.grad.abs().sum() > 0
    opt.step()
    assert not torch.allclose(m.h_enc_tuned.detach(), original)
    torch.testing.assert_close(m.h_enc, original)


@pytest.mark.parametrize("switch", [{}, {"prune": False}, {"user_pe": True}, {"item_pe": True},
                                    {"behaviour_graph": False}, {"sampled_attention": True},
                                    {"user_pe": True, "sampled_attention": True},  # the paper's full model
                                    {"behaviour_norm": True, "pe_scale": 0.1}])
def test_userec_ablation_switches(tiny_dataset, run_config, switch):
    data_path, name = tiny_dataset
    result = run_recbole_mm("USERec", name, config_dict=dict(run_config, data_path=data_path, epochs=1, **switch),
                            print_result=False)
    assert 0 <= result["test_result"]["recall@20"] <= 1


def test_userec_prunes_for_training_only(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("USERec", data_path, name, keep_ratio=0.3, user_pe=True, sampled_attention=True)
    m.train()
    m.pre_epoch_processing()
    import math

    assert m.train_adj.csr.values().numel() == 2 * math.ceil(0.3 * len(m.train_users))
    m.eval()
    users = Interaction({"user_id": torch.tensor([1, 2])})
    before = m.full_sort_predict(users)
    m.pre_epoch_processing()
    m.eval()
    torch.testing.assert_close(before, m.full_sort_predict(users))
    # positional codes: users get them (when asked), items do not (by default)
    assert m.user_pe and not m.item_pe and m.user_code.shape == (m.n_users, m.embedding_size)


def test_vbpr_pairwise_loss_matches_scores_and_bf16_option(tiny_dataset):
    """calculate_loss works on f_i - f_j; it must equal BPR on predict()'s x_ui - x_uj (+ L2), and the
    bf16 feature option must give (nearly) the same scores."""
    from recbole.data.interaction import Interaction

    from recbole_mm.model.loss import bpr_loss, l2_reg

    data_path, name = tiny_dataset
    _, model, train = _build("VBPR", data_path, name, reg_content=False)
    model.eval()
    batch = next(iter(train))
    u, i, j = batch[model.USER_ID], batch[model.ITEM_ID], batch[model.NEG_ITEM_ID]
    pos = model.predict(Interaction({model.USER_ID: u, model.ITEM_ID: i}))
    neg = model.predict(Interaction({model.USER_ID: u, model.ITEM_ID: j}))
    reg = l2_reg(torch.cat([model.user_gamma(u), model.user_theta(u)], 1), model.item_gamma(i), model.item_gamma(j))
    torch.testing.assert_close(model.calculate_loss(batch), bpr_loss(pos, neg) + model.reg_weight * reg)
    # reg_content (the default): the L2 term covers whole item factors [gamma_i ; E^T f_i], as in MMRec
    _, whole, _ = _build("VBPR", data_path, name)
    assert whole.reg_content
    whole.load_state_dict(model.state_dict())
    whole.eval()
    factor = lambda items: whole._item_side(items)[0]  # noqa: E731
    reg = l2_reg(torch.cat([model.user_gamma(u), model.user_theta(u)], 1), factor(i), factor(j))
    torch.testing.assert_close(whole.calculate_loss(batch), bpr_loss(pos, neg) + model.reg_weight * reg)

    _, half, _ = _build("VBPR", data_path, name, feature_dtype="bfloat16")
    half.load_state_dict(model.state_dict())
    half.eval()
    assert half.content.dtype == torch.bfloat16
    full = model.full_sort_predict(Interaction({model.USER_ID: u[:4]}))
    users, items = model.inference_embeddings()  # the bias as one more dot-product column
    torch.testing.assert_close((users[u[:4]] @ items.T).view(-1), full)
    torch.testing.assert_close(half.full_sort_predict(Interaction({model.USER_ID: u[:4]})), full, atol=2e-2, rtol=2e-2)
    half.train()
    half.calculate_loss(batch).backward()
    assert half.feature_proj.weight.grad.dtype == torch.float32


def test_userec_pe_scale(tiny_dataset):
    from recbole_mm.model.layers import sinusoidal_encoding

    data_path, name = tiny_dataset
    _, m, _ = _build("USERec", data_path, name, pe_scale=0.1)
    torch.testing.assert_close(m.user_code, 0.1 * sinusoidal_encoding(torch.arange(m.n_users), m.embedding_size))


def test_userec_pe_order_shuffled(tiny_dataset):
    """``pe_order: shuffled``: the same codes, assigned through a seeded permutation of the ids."""
    data_path, name = tiny_dataset
    _, ordered, _ = _build("USERec", data_path, name)
    _, shuffled, _ = _build("USERec", data_path, name, pe_order="shuffled")
    _, again, _ = _build("USERec", data_path, name, pe_order="shuffled")
    torch.testing.assert_close(shuffled.user_code, again.user_code)  # same seed, same permutation
    assert not torch.equal(shuffled.user_code, ordered.user_code)
    # each shuffled row is the code of exactly one id: the rows are a permutation of the index codes
    match = (shuffled.user_code[:, None, :] == ordered.user_code[None, :, :]).all(-1)
    assert (match.sum(0) == 1).all() and (match.sum(1) == 1).all()
    with pytest.raises(ValueError, match="pe_order"):
        _build("USERec", data_path, name, pe_order="random")
