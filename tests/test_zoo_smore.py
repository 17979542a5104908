"""SMORE and the blocks it adds (max_pool_graphs, SpectrumFusion): hand computations on a few
numbers, the forward pass against dense matrices, the loss, determinism."""

import pytest
import torch
import torch.nn.functional as F
from recbole.data.interaction import Interaction

from recbole_mm.model.general_recommender.smore import SpectrumFusion, max_pool_graphs
from recbole_mm.model.layers import SparseOperator
from tests.test_models import _build


def _coo(entries, n=3):
    rows, cols, vals = zip(*entries)
    return torch.sparse_coo_tensor(torch.tensor([rows, cols]), torch.tensor(vals), (n, n)).coalesce()


# -- generic blocks ------------------------------------------------------------------------------
def test_max_pool_graphs_by_hand():
    a = _coo([(0, 1, 0.5), (1, 0, 0.2), (2, 2, 1.0)])
    b = SparseOperator(_coo([(0, 1, 0.3), (1, 0, 0.7), (1, 2, 0.4)]))  # operators and COO tensors mix
    c = _coo([(1, 2, -0.1), (2, 0, 0.05)])
    out = max_pool_graphs([a, b, c]).to_dense()
    expected = torch.tensor([[0.0, 0.5, 0.0],   # (0,1): max(0.5, 0.3)
                             [0.7, 0.0, 0.4],   # (1,0): max(0.2, 0.7); (1,2): max(0.4, -0.1)
                             [0.05, 0.0, 1.0]])  # edges of one graph keep their value
    torch.testing.assert_close(out, expected)
    assert max_pool_graphs([a]).values().numel() == 3  # one graph: itself
    torch.testing.assert_close(max_pool_graphs([a]).to_dense(), a.to_dense())


def test_spectrum_fusion_by_hand():
    sf = SpectrumFusion(["a", "b"], 4)
    assert sf.filters["a"].shape == (1, 3, 2)  # 4 // 2 + 1 frequencies, (real, imaginary)
    x = {"a": torch.tensor([[1.0, 2.0, 0.0, 0.0]]), "b": torch.tensor([[0.0, 1.0, 0.0, 0.0]])}
    with torch.no_grad():
        sf.filters["a"].copy_(torch.tensor([[[1.0, 0.0]] * 3]))  # all-pass: the view itself
        sf.filters["b"].copy_(torch.tensor([[[1.0, 0.0], [0.0, 0.0], [0.0, 0.0]]]))  # DC only: the row mean
        sf.fusion_filter.copy_(torch.tensor([[[2.0, 0.0]] * 3]))
    filtered, fused = sf(x)
    torch.testing.assert_close(filtered["a"], x["a"])
    torch.testing.assert_close(filtered["b"], torch.full((1, 4), 0.25))
    # orthonormal FFTs: IFFT(FFT(a) FFT(b)) = circular convolution / sqrt(4); b = delta at 1 shifts a by one
    torch.testing.assert_close(fused, 2 * torch.tensor([[0.0, 1.0, 2.0, 0.0]]) / 2)
    # three views: the convolution of all three, / sqrt(4)^2
    sf3 = SpectrumFusion(["a", "b", "c"], 4)
    with torch.no_grad():
        sf3.fusion_filter.copy_(torch.tensor([[[1.0, 0.0]] * 3]))
    _, fused3 = sf3(dict(x, c=torch.tensor([[0.0, 0.0, 1.0, 0.0]])))  # shifts by two more
    torch.testing.assert_close(fused3, torch.tensor([[2.0, 0.0, 0.0, 1.0]]) / 4)


def test_spectrum_fusion_odd_dim_and_gradient():
    torch.manual_seed(0)
    sf = SpectrumFusion(["a"], 5).double()
    x = torch.randn(3, 5, dtype=torch.double, requires_grad=True)
    filtered, fused = sf({"a": x})
    assert filtered["a"].shape == fused.shape == (3, 5)

    def scalar(h):
        filt, fus = sf({"a": h})
        return filt["a"].sin().sum() + fus.pow(2).sum()

    assert torch.autograd.gradcheck(scalar, (x,))
    fused.pow(2).sum().backward()
    assert sf.fusion_filter.grad.abs().sum() > 0 and sf.filters["a"].grad is None  # fusion path only


# -- the model -----------------------------------------------------------------------------------
def _dense(op):
    return op.csr.to_dense()


def test_graphs_and_knn_override(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("SMORE", data_path, name, knn_k=3, modality_knn_k={"image": 5})
    real = m.n_items - 1  # row 0 (padding) takes no part
    assert m.item_graphs["text"].csr.values().numel() == 3 * real
    assert m.item_graphs["image"].csr.values().numel() == 5 * real
    text, image = _dense(m.item_graphs["text"]), _dense(m.item_graphs["image"])
    expected = torch.where((text != 0) & (image != 0), torch.maximum(text, image), text + image)
    torch.testing.assert_close(_dense(m.fusion_graph), expected)
    # weighted cosine KNN, D^-1/2 S D^-1/2 with row degrees, as MMRec's build_knn_normalized_graph
    f = F.normalize(m.modality_feature("text")[1:], dim=1)
    sim = f @ f.T
    val, idx = sim.topk(3, dim=1)
    raw = torch.zeros_like(sim).scatter_(1, idx, val)
    d = raw.sum(1).pow(-0.5)
    torch.testing.assert_close(text[1:, 1:], d[:, None] * raw * d[None, :])
    with pytest.raises(ValueError, match="modality_knn_k"):
        _build("SMORE", data_path, name, modality_knn_k={"audio": 5})


def test_forward_against_dense(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("SMORE", data_path, name, n_ui_layers=2, n_layers=2)
    m.eval()
    with torch.no_grad():
        final, side, content = m.forward()
        adj, R = _dense(m.adj), _dense(m.R)
        e0 = m.id_embeddings()
        e = (e0 + adj @ e0 + adj @ adj @ e0) / 3
        torch.testing.assert_close(content, e)
        p = {k: m.features[k].weight @ m.projector.proj[k].weight.T + m.projector.proj[k].bias for k in m.modalities}
        spec = {k: torch.fft.rfft(v, dim=1, norm="ortho") for k, v in p.items()}
        W = {k: torch.view_as_complex(m.spectrum.filters[k]) for k in m.modalities}
        conv = {k: torch.fft.irfft(spec[k] * W[k], n=16, dim=1, norm="ortho") for k in m.modalities}
        fconv = torch.fft.irfft(spec["text"] * spec["image"] * torch.view_as_complex(m.spectrum.fusion_filter),
                                n=16, dim=1, norm="ortho")
        i_id = m.item_embedding.weight

        def view(S, x):
            h = S @ (S @ x)
            return torch.cat([R @ h, h])

        h_f = view(_dense(m.fusion_graph), i_id * torch.sigmoid(m.fusion_gate[0](fconv)))
        parts = []
        for k in m.modalities:
            h = view(_dense(m.item_graphs[k]), i_id * torch.sigmoid(m.item_gates.proj[k](conv[k])))
            att = torch.softmax(m.queries[k][2](torch.tanh(m.queries[k][0](h_f))), dim=1)
            parts.append(torch.sigmoid(m.prefer.proj[k](e)) * att * h)
        parts.append(torch.sigmoid(m.fusion_prefer[0](e)) * h_f)
        s = sum(parts) / 3
        torch.testing.assert_close(side, s, rtol=1e-4, atol=1e-6)
        torch.testing.assert_close(final, e + s, rtol=1e-4, atol=1e-6)


def test_loss_by_hand(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, train = _build("SMORE", data_path, name, reg_weight=0.1, cl_weight=0.5, cl_temperature=0.5)
    batch = next(iter(train))
    u, i, j = batch["user_id"], batch["item_id"], batch["neg_item_id"]
    loss = m.calculate_loss(batch)
    final, side, content = m.forward()
    n = m.n_users
    eu, ep, en = final[u], final[n + i], final[n + j]
    bpr = -F.logsigmoid((eu * ep).sum(1) - (eu * en).sum(1)).mean()
    reg = 0.5 * (eu.pow(2).sum() + ep.pow(2).sum() + en.pow(2).sum()) / len(u)

    def nce(a, b, t):  # MMRec's InfoNCE, written out
        a, b = F.normalize(a, dim=1), F.normalize(b, dim=1)
        pos = torch.exp((a * b).sum(1) / t)
        return -torch.log(pos / torch.exp(a @ b.T / t).sum(1)).mean()

    cl = nce(side[n + i], content[n + i], 0.5) + nce(side[u], content[u], 0.5)
    torch.testing.assert_close(loss, bpr + 0.1 * reg + 0.5 * cl, rtol=1e-5, atol=1e-6)
    loss.backward()
    assert m.spectrum.fusion_filter.grad.abs().sum() > 0 and m.features["text"].weight.grad is not None


def test_dropout_training_only(tiny_dataset):
    data_path, name = tiny_dataset
    _, m, _ = _build("SMORE", data_path, name, dropout_rate=0.5)
    m.train()
    assert not torch.equal(m.forward()[1], m.forward()[1])  # fresh masks on the preference gates
    m.eval()
    users = Interaction({"user_id": torch.tensor([1, 2, 3])})
    first = m.full_sort_predict(users)
    m.eval()  # cache dropped
    torch.testing.assert_close(first, m.full_sort_predict(users), rtol=0, atol=0)


def test_same_seed_same_numbers(tiny_dataset):
    data_path, name = tiny_dataset
    runs, batches = [], None
    for _ in range(2):
        _, m, train = _build("SMORE", data_path, name, dropout_rate=0.1)
        batches = batches or [b for _, b in zip(range(2), train)]
        torch.manual_seed(1)
        opt = torch.optim.Adam(m.parameters(), lr=0.01)
        for batch in batches:
            loss = m.calculate_loss(batch)
            opt.zero_grad(), loss.backward(), opt.step()
        m.eval()
        runs.append((loss.detach(), m.inference_embeddings()[1]))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=0, atol=0)
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=0, atol=0)
