"""The fusion toolbox (layers.Fusion's cross_attention and non_invasive) against hand computations,
FREEDOM's and AlignRec's ``fusion`` options, and early fusion (``fusion_stage: early``)."""

import math

import pytest
import torch
import torch.nn.functional as F

from recbole_mm.model import layers
from recbole_mm.quick_start import run_recbole_mm
from tests.test_models import _build


def _identity_attention(fusion):
    """Q = K = V = input, output projection = identity, no biases: the attention is plain
    ``softmax(x x^T / sqrt(d_head)) x`` per head."""
    attn = fusion.attn
    d = attn.embed_dim
    with torch.no_grad():
        attn.in_proj_weight.copy_(torch.cat([torch.eye(d)] * 3))
        attn.in_proj_bias.zero_()
        attn.out_proj.weight.copy_(torch.eye(d))
        attn.out_proj.bias.zero_()


def _softmax(*scores):
    e = [math.exp(s) for s in scores]
    return [v / sum(e) for v in e]


def test_cross_attention_by_hand():
    x1, x2, x3 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]]), torch.tensor([[1.0, 1.0]])
    fusion = layers.Fusion("cross_attention", 2, 3, heads=1)
    _identity_attention(fusion)
    r = 1 / math.sqrt(2)  # 1 / sqrt(d)
    # x1 attends over x2, x3 with scores <x1, x2> r = 0, <x1, x3> r = r; and so on
    a12, a13 = _softmax(0.0, r)
    a21, a23 = _softmax(0.0, 2 * r)
    a31, a32 = _softmax(r, 2 * r)
    z1 = [1 + a12 * 0 + a13 * 1, 0 + a12 * 2 + a13 * 1]
    z2 = [0 + a21 * 1 + a23 * 1, 2 + a21 * 0 + a23 * 1]
    z3 = [1 + a31 * 1 + a32 * 0, 1 + a31 * 0 + a32 * 2]
    expected = torch.tensor([[(z1[0] + z2[0] + z3[0]) / 3, (z1[1] + z2[1] + z3[1]) / 3]])
    torch.testing.assert_close(fusion([x1, x2, x3]), expected)
    w = fusion.last_weights[0]
    torch.testing.assert_close(w, torch.tensor([[0.0, a12, a13], [a21, 0.0, a23], [a31, a32, 0.0]]))

    linear = layers.Fusion("cross_attention", 2, 3, heads=1, combine="linear")
    _identity_attention(linear)
    with torch.no_grad():  # picks z1[0] + z3[1]
        linear.linear.weight.copy_(torch.tensor([[1.0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 1.0]]))
        linear.linear.bias.zero_()
    torch.testing.assert_close(linear([x1, x2, x3]), torch.tensor([[z1[0], z3[1]]]))


def test_cross_attention_two_heads_and_two_inputs():
    # two heads of width 1: head h attends on coordinate h alone (scale 1 / sqrt(1))
    x1, x2, x3 = torch.tensor([[1.0, 2.0]]), torch.tensor([[3.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    fusion = layers.Fusion("cross_attention", 2, 3, heads=2)
    _identity_attention(fusion)
    out = fusion([x1, x2, x3])
    z = []
    for m, x in enumerate([x1, x2, x3]):
        others = [y for k, y in enumerate([x1, x2, x3]) if k != m]
        row = []
        for h in range(2):
            a = _softmax(*[float(x[0, h] * y[0, h]) for y in others])
            row.append(float(x[0, h]) + sum(w * float(y[0, h]) for w, y in zip(a, others)))
        z.append(row)
    torch.testing.assert_close(out, torch.tensor(z).mean(0, keepdim=True))
    # with two inputs each attends to the other alone: z_1 = x_1 + x_2 = z_2, mean = x_1 + x_2
    two = layers.Fusion("cross_attention", 2, 2, heads=2)
    _identity_attention(two)
    torch.testing.assert_close(two([x1, x2]), x1 + x2)


def test_non_invasive_by_hand():
    x0, x1 = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    fusion = layers.Fusion("non_invasive", 2, 2, heads=1)
    _identity_attention(fusion)
    with torch.no_grad():  # V_0 = x_0, V_1 = 2 x_0
        fusion.value_maps.copy_(torch.stack([torch.eye(2), 2 * torch.eye(2)]))
    # F_0 = x_0 = [1, 0], F_1 = x_0 + x_1 = [1, 1]; scores / sqrt(2): F0.F0 = 1, F0.F1 = 1, F1.F1 = 2
    r = 1 / math.sqrt(2)
    a00, a01 = _softmax(r, r)
    a10, a11 = _softmax(r, 2 * r)
    out0 = a00 * 1 + a01 * 2  # values [1, 0] and [2, 0]: the second coordinate stays 0
    out1 = a10 * 1 + a11 * 2
    expected = torch.tensor([[1 + (out0 + out1) / 2, 0.0]])
    torch.testing.assert_close(fusion([x0, x1]), expected)
    torch.testing.assert_close(fusion.last_weights[0], torch.tensor([[a00, a01], [a10, a11]]))


def test_non_invasive_keeps_side_information_out_of_the_values():
    torch.manual_seed(0)
    fusion = layers.Fusion("non_invasive", 4, 3, heads=2)
    ident, side = torch.randn(5, 4), [torch.randn(5, 4), torch.randn(5, 4)]
    y = fusion([ident] + side)
    y_other_side = fusion([ident, 3 * side[1], -side[0]])
    assert not torch.allclose(y, y_other_side)  # side information steers the attention ...
    zero = torch.zeros(5, 4)
    # ... but with no ID signal the output is the same constant (biases) whatever the side inputs
    torch.testing.assert_close(fusion([zero] + side), fusion([zero, 3 * side[1], -side[0]]))
    # and the output is the ID input plus a mix of its token views: gradient reaches every U_t
    y.sum().backward()
    assert (fusion.value_maps.grad.abs().sum((1, 2)) > 0).all()


def test_attention_fusions_reject_bad_shapes():
    with pytest.raises(ValueError, match="two modalities"):
        layers.Fusion("cross_attention", 4, 1)
    with pytest.raises(ValueError, match="ID input"):
        layers.Fusion("non_invasive", 4, 1)
    with pytest.raises(ValueError, match="divide"):
        layers.Fusion("cross_attention", 6, 2, heads=4)
    with pytest.raises(ValueError, match="combine"):
        layers.Fusion("cross_attention", 4, 2, combine="max")


def test_existing_fusions_keep_their_parameters():
    # checkpoints of the older options still load: same parameter names and shapes
    assert set(layers.Fusion("attention", 4, 2).state_dict()) == {"key.weight", "key.bias", "query.weight"}
    assert set(layers.Fusion("concat", 4, 2).state_dict()) == {"linear.weight", "linear.bias"}
    assert list(layers.Fusion("mean", 4, 2).parameters()) == []


# -- FREEDOM and AlignRec ----------------------------------------------------------------------

def test_freedom_late_mean_equals_the_equal_weight_graph(tiny_dataset):
    """One item-graph layer is linear: mean_m S_m e = (sum_m S_m / M) e, the graph mix at equal weights."""
    data_path, name = tiny_dataset
    _, graph, _ = _build("FREEDOM", data_path, name, n_mm_layers=1)
    _, mean, _ = _build("FREEDOM", data_path, name, n_mm_layers=1, fusion="mean")
    _, total, _ = _build("FREEDOM", data_path, name, n_mm_layers=1, fusion="sum")
    assert graph.fusion is None and set(mean.mm_graphs) == {"text", "image"}
    torch.testing.assert_close(mean.item_graph_embeddings(), graph.item_graph_embeddings())
    torch.testing.assert_close(total.item_graph_embeddings(), 2 * graph.item_graph_embeddings())


@pytest.mark.parametrize("fusion", ["gate", "attention", "cross_attention", "non_invasive"])
def test_freedom_learned_fusions_train(tiny_dataset, fusion):
    data_path, name = tiny_dataset
    _, m, train = _build("FREEDOM", data_path, name, fusion=fusion)
    assert m.fusion.mode == fusion
    n_inputs = 3 if fusion == "non_invasive" else 2  # the ID embeddings first, then the modality views
    m.calculate_loss(next(iter(train))).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.fusion.parameters())
    if fusion in ("cross_attention", "non_invasive"):
        assert m.fusion.last_weights.shape == (m.n_items, n_inputs, n_inputs)


def test_freedom_early_fusion_is_one_concatenated_modality(tiny_dataset):
    data_path, name = tiny_dataset
    weights = {"text": 0.8}
    _, late, _ = _build("FREEDOM", data_path, name, modality_weights=weights)
    config, early, _ = _build("FREEDOM", data_path, name, fusion_stage="early", modality_weights=weights)
    assert early.modalities == ["early"] and not hasattr(early, "feat_text")
    w = late.modality_weights(weights)  # text 0.8, image 0.2
    expected = torch.cat([F.normalize(late.modality_feature(m), dim=1) * w[m] ** 0.5 for m in late.modalities], 1)
    torch.testing.assert_close(early.modality_feature("early"), expected)
    assert set(early.features) == {"early"} and set(early.projector.proj) == {"early"}
    # its item graph is the KNN graph of the concatenation (cosine = sum_m w_m cos_m)
    knn = early.knn_graph(expected, config["knn_k"])
    torch.testing.assert_close(early.mm_graph.csr.to_dense(), knn.csr.to_dense())
    with pytest.raises(ValueError, match="fusion_stage"):
        _build("FREEDOM", data_path, name, fusion_stage="middle")


def test_freedom_early_fusion_runs_end_to_end(tiny_dataset, run_config):
    data_path, name = tiny_dataset
    result = run_recbole_mm("FREEDOM", name, config_dict=dict(run_config, data_path=data_path, epochs=1,
                                                               fusion_stage="early", fusion="non_invasive"),
                            print_result=False)
    assert 0 <= result["test_result"]["recall@20"] <= 1


@pytest.mark.parametrize("fusion", ["cross_attention", "non_invasive"])
def test_alignrec_attention_fusions(tiny_dataset, fusion):
    data_path, name = tiny_dataset
    _, m, train = _build("AlignRec", data_path, name, fusion=fusion, fusion_heads=2, pretrain=False)
    h, h_mm, h_id = m.forward()
    assert h.shape == h_id.shape and m.fusion.last_weights.shape == (h.shape[0], 2, 2)
    if fusion == "non_invasive":  # h_id is the ID branch: h = h_id + attention over views of h_id
        torch.testing.assert_close(h, m.fusion([h_id, h_mm]))
    m.calculate_loss(next(iter(train))).backward()
    assert m.fusion.attn.in_proj_weight.grad.abs().sum() > 0


@pytest.mark.parametrize("args,message", [
    (["--fusion=max"], "fusion must be one of"),
    (["--fusion=cross_attention", "--use_modalities=['text']"], "cross_attention needs at least two modalities"),
    (["--fusion=non_invasive", "--fusion_heads=3"], "3 heads do not divide the dimension 16"),
    (["--fusion_stage=middle"], "fusion_stage must be one of"),
])
def test_bad_fusion_settings_are_one_line_errors(tiny_dataset, monkeypatch, capsys, args, message):
    import sys

    from recbole_mm.quick_start import main

    data_path, name = tiny_dataset
    argv = ["--model=FREEDOM", f"--dataset={name}", f"--data_path={data_path}", "--epochs=1",
            "--embedding_size=16", "--state=WARNING", *args]
    monkeypatch.setattr(sys, "argv", ["run_recbole_mm.py", *argv])
    assert main(argv) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0]
