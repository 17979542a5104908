"""SMORE (Ong & Khong, WSDM 2025): "Spectrum-based Modality Representation Fusion Graph Convolutional
Network for Multimodal Recommendation".

Generalised from the paper's image + text to any number ``M`` of modalities; the paper's equation
numbers were not at hand, so the blocks are named after its sections.

* Spectrum modality fusion. Each modality's features are projected, ``p_m = W_m f_m + b_m``
  (trainable raw features, as the official code), and taken to the frequency domain along the
  embedding axis, ``P_m = FFT(p_m)`` (real FFT, orthonormal). Uni-modal denoising:
  ``p~_m = IFFT(P_m ⊙ K_m)``; cross-modality fusion, a circular convolution of the modalities done
  as a product of their spectra: ``p~_f = IFFT(K_f ⊙ prod_m P_m)``. ``K_m, K_f`` are learned complex
  filters, one value per frequency (N(0, 1) real and imaginary parts, as the official code).
* Item representations per view (behaviour gating): ``x_v = e_id ⊙ sigmoid(G_v p~_v + c_v)`` for
  every modality ``v = m`` and for the fusion view ``v = f``.
* Multi-modal graph learning: item-item graphs ``S_m`` (top-``k`` cosine KNN of the raw features,
  similarity-weighted, ``D^-1/2 S D^-1/2``) and the fusion graph ``S_f``, the max-pooled union of the
  ``S_m`` (an edge of several graphs keeps its largest normalised weight; not renormalised, as the
  official code). ``h_v = S_v^L x_v``; users get ``R_norm h_v`` (``R_norm`` the sym-normalised
  interactions). User-item view: LightGCN on the ID embeddings, ``e = mean(E^0 .. E^K)``.
* Modality-aware preference: ``a_m = softmax_d(Q_m(h_f)) ⊙ h_m`` with ``Q_m = W'' tanh(W' . + b')``
  (softmax over the embedding dimensions, as the official code), preference gates
  ``g_v = dropout(sigmoid(W_v e + b_v))``; side ``s = mean(g_1 ⊙ a_1, .., g_M ⊙ a_M, g_f ⊙ h_f)``,
  final representation ``e + s``.
* Loss: BPR + ``reg_weight`` x L2 of the batch's final rows + ``cl_weight`` x (InfoNCE(side, behaviour)
  of the batch's positive items + of its users), temperature ``cl_temperature``.

Differences from the official code (kennethorq/SMORE, MMRec's smore.py), none affecting accuracy:
per-modality knn_k is ``knn_k`` plus an optional ``modality_knn_k`` override; its L2 divides by the
configured batch size, ours by the actual one (differs on the last batch only); its unused
``lambda_coeff``/``temperature`` keys are left out (its InfoNCE temperature is hard-coded 0.2, our
``cl_temperature`` default).
"""

from __future__ import annotations

import torch
from recbole.utils import InputType
from torch import nn

from recbole_mm.data.graphs import sparse
from recbole_mm.model.abstract_recommender import SideViewRecommender
from recbole_mm.model.layers import ModalityProjector, SparseOperator, lightgcn_propagate, propagate


# -- generic blocks (shared candidates) --------------------------------------------------------
def max_pool_graphs(graphs) -> torch.Tensor:
    """The union of same-shaped sparse graphs, each edge weighted by its largest value among the
    graphs that hold it (SMORE's fusion graph). ``graphs``: :class:`SparseOperator` s or sparse COO
    tensors. Returns a coalesced COO tensor; vectorised (one ``unique`` and one ``scatter_reduce``)."""
    rows, cols, vals, shape = [], [], [], None
    for g in graphs:
        if isinstance(g, SparseOperator):
            r, c, v = g.edges()
            shape = g.shape
        else:
            g = g.coalesce()
            (r, c), v, shape = g.indices(), g.values(), tuple(g.shape)
        rows.append(r), cols.append(c), vals.append(v)
    rows, cols, vals = torch.cat(rows), torch.cat(cols), torch.cat(vals)
    keys, inverse = torch.unique(rows * shape[1] + cols, return_inverse=True)
    best = torch.full((len(keys),), -torch.inf, dtype=vals.dtype, device=vals.device)
    best = best.scatter_reduce(0, inverse, vals, reduce="amax")
    return sparse(keys // shape[1], keys % shape[1], best, shape)


class SpectrumFusion(nn.Module):
    """Learned spectral filtering of ``M`` same-sized views and their fusion (SMORE's spectrum fusion).

    ``forward({m: x_m})`` -> ``({m: IFFT(FFT(x_m) K_m)}, IFFT(K_f prod_m FFT(x_m)))``: real FFTs
    along the last axis (orthonormal), ``K`` complex with ``dim // 2 + 1`` frequencies, stored as
    real ``(1, F, 2)`` tensors (real, imaginary parts) initialised N(0, 1).
    """

    def __init__(self, names, dim: int):
        super().__init__()
        self.dim = dim
        shape = (1, dim // 2 + 1, 2)
        self.filters = nn.ParameterDict({m: nn.Parameter(torch.randn(shape)) for m in names})
        self.fusion_filter = nn.Parameter(torch.randn(shape))

    def forward(self, views: dict):
        spectra = {m: torch.fft.rfft(x, dim=-1, norm="ortho") for m, x in views.items()}

        def back(z):
            return torch.fft.irfft(z, n=self.dim, dim=-1, norm="ortho")

        filtered = {m: back(s * torch.view_as_complex(self.filters[m])) for m, s in spectra.items()}
        product = None
        for s in spectra.values():
            product = s if product is None else product * s
        return filtered, back(product * torch.view_as_complex(self.fusion_filter))


def _gate(dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, dim), nn.Sigmoid())


class SMORE(SideViewRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = self.embedding_size
        mods = self.modalities

        self.init_id_embeddings(d)
        self.features = self.feature_tables(trainable=config["train_features"])
        self.projector = ModalityProjector(self.modality_dims(), d)
        self.spectrum = SpectrumFusion(mods, d)
        self.item_gates = ModalityProjector({m: d for m in mods}, d, activation="sigmoid")  # G_m
        self.fusion_gate = _gate(d)  # G_f
        self.queries = nn.ModuleDict({m: nn.Sequential(nn.Linear(d, d), nn.Tanh(), nn.Linear(d, d, bias=False))
                                      for m in mods})
        self.prefer = ModalityProjector({m: d for m in mods}, d, activation="sigmoid")  # preference gates g_m
        self.fusion_prefer = _gate(d)  # g_f
        self.dropout = nn.Dropout(config["dropout_rate"])

        ks = self.modality_k(config["knn_k"], config["modality_knn_k"])
        self.item_graphs = nn.ModuleDict({m: self.knn_graph(self.modality_feature(m), ks[m], weighted=True)
                                          for m in mods})
        self.fusion_graph = self._operator(max_pool_graphs(self.item_graphs.values()))
        self.adj = self.ui_graph()
        self.R = self.interaction_matrix()

    def modality_k(self, k: int, overrides) -> dict:
        """``{modality: k}``: ``knn_k`` for all, ``modality_knn_k`` ({name: k}) where given."""
        overrides = dict(overrides or {})
        unknown = [m for m in overrides if m not in self.modalities]
        if unknown:
            raise ValueError(f"modality_knn_k names {unknown}, but the run's modalities are {self.modalities}")
        return {m: int(overrides.get(m, k)) for m in self.modalities}

    def _lift(self, graph, items: torch.Tensor) -> torch.Tensor:
        """``[R_norm h; h]`` with ``h = S^L items``: a view's user and item rows."""
        h = propagate(graph, items, self.n_layers)
        return torch.cat([self.R @ h, h])

    def forward(self):
        content = lightgcn_propagate(self.adj, self.id_embeddings(), self.n_ui_layers)
        projected = self.projector({m: self.features[m].weight for m in self.modalities})
        filtered, fused = self.spectrum(projected)
        item_id = self.item_embedding.weight
        gates = self.item_gates(filtered)
        fusion = self._lift(self.fusion_graph, item_id * self.fusion_gate(fused))
        prefer = self.prefer({m: content for m in self.modalities})
        parts = []
        for m in self.modalities:
            view = self._lift(self.item_graphs[m], item_id * gates[m])
            attended = torch.softmax(self.queries[m](fusion), dim=-1) * view
            parts.append(self.dropout(prefer[m]) * attended)
        parts.append(self.dropout(self.fusion_prefer(content)) * fusion)
        side = torch.stack(parts).mean(0)
        return content + side, side, content
