"""MICRO (Zhang, Zhu, Liu, Zhang, Wu & Wang, IEEE TKDE 2022): "Latent Structure Mining with
Contrastive Modality Fusion for Multimedia Recommendation" -- LATTICE's successor.

Written from the paper and the official code (github.com/CRIPAC-DIG/MICRO, ``codes/Models.py``,
``main.py``); MMRec does not ship MICRO. The paper's equation numbers are not available to us, so
the blocks are named by content:

* Modality-aware structure learning, per modality m (no mixing of modalities' graphs, unlike
  LATTICE): the initial graph ``S~_m`` = sym-normalised top-k cosine graph of the raw features
  (weights kept), and the learned ``Â_m`` = the same on the projected features ``W_m x_m + b_m``;
  ``A_m = (1-λ) Â_m + λ S~_m`` (``lambda_coeff``). ``A_m`` is rebuilt once per epoch and keeps its
  gradient (to the projections and the raw features) for the batch that builds it, as in the
  official code (``build_item_graph`` is True for an epoch's first batch only, and at test time).
* Modality-aware item representations ``z_m = A_m^L e`` from the shared item ID embeddings ``e``
  (``n_layers``).
* Attention fusion ``h = sum_m a_m z_m``, ``a = softmax_m(q^T tanh(W z_m + b))`` per item
  (:class:`Fusion` ``attention``: the official ``query`` network, shared by the modalities).
* Items of a LightGCN over ``D^{-1}(A_ui + I)`` (official ``norm_adj``, ``n_ui_layers``) plus
  ``normalize(h)``; users from the same LightGCN. Scores are inner products.
* Contrastive modality fusion: ``sum_m L_c(z_m, h)``, GRACE's InfoNCE with inter- and intra-view
  negatives over *all* items, every batch (official ``batched_contrastive_loss``; anchor z_m only;
  temperature 0.5), weighted by ``cl_weight`` (``loss_ratio``) beside BPR + ``reg_weight`` x L2 of
  the batch rows (``sum ||.||^2 / (2B)``, official ``decay``).

Differences: the KNN graphs are built block-wise as edge lists (no n x n similarity) and the
contrastive loss is summed over row blocks with per-block recomputation, so memory stays
O(block x n); the padding item 0 is left out of the graphs and the contrastive loss.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch.utils.checkpoint import checkpoint

from recbole_mm.data import graphs
from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import Fusion, ModalityProjector, SparseOperator, edge_propagate, lightgcn_propagate
from recbole_mm.model.layers import propagate, split_users_items
from recbole_mm.model.loss import bpr_l2, row_logsumexp


# -- generic blocks (shared candidates) --------------------------------------------------------------
def _intra_inter_block(anchor, z1, z2, start, temperature):
    """Summed GRACE loss of the anchor rows ``z1[start:start+B]`` (all rows L2-normalised)."""
    shift = 1.0 / temperature  # cosines <= 1: exp(logit - 1/t) cannot overflow
    scaled = anchor / temperature
    positive = (scaled * z2[start:start + anchor.shape[0]]).sum(1) - shift
    # denominator: every row of both views (intra-view z1, inter-view z2) but the anchor itself
    return (row_logsumexp(scaled, [z1, z2], shift, skip_diagonal=start) - positive).sum()


def intra_inter_info_nce(z1: torch.Tensor, z2: torch.Tensor, temperature: float, block_size: int = 4096):
    """GRACE's InfoNCE (Zhu et al., 2020) with anchors ``z1``, over all ``n`` rows:

    ``mean_i -log( e(z1_i, z2_i) / (sum_j e(z1_i, z2_j) + sum_{j != i} e(z1_i, z1_j)) )``,
    ``e(a, b) = exp(cos(a, b) / t)``: the positive is row i of the other view, the negatives every
    other row of both views (MICRO's contrastive modality fusion, ``z1`` a modality, ``z2`` the
    fused view). Rows are processed in blocks of ``block_size`` anchors; with gradients and more
    than one block, each block is recomputed in backward (peak memory ``O(block_size * n)``).
    """
    z1, z2 = F.normalize(z1, dim=1), F.normalize(z2, dim=1)
    n, total = z1.shape[0], 0.0
    many = n > block_size and torch.is_grad_enabled()
    for start in range(0, n, block_size):
        anchor = z1[start:start + block_size]
        if many:
            total = total + checkpoint(_intra_inter_block, anchor, z1, z2, start, temperature, use_reentrant=False)
        else:
            total = total + _intra_inter_block(anchor, z1, z2, start, temperature)
    return total / n


# -- the model ---------------------------------------------------------------------------------------
class MICRO(MultimodalRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size, self.reg_weight = config["embedding_size"], config["reg_weight"]
        self.knn_k, self.lambda_coeff = config["knn_k"], config["lambda_coeff"]
        self.n_layers, self.n_ui_layers = config["n_layers"], config["n_ui_layers"]
        self.cl_weight, self.cl_temperature = config["cl_weight"], config["cl_temperature"]

        self.init_id_embeddings(self.embedding_size)
        self.features = self.feature_tables(trainable=config["train_features"])
        self.projector = ModalityProjector(self.modality_dims(), config["feat_embed_dim"])
        self.fusion = Fusion("attention", self.embedding_size, len(self.modalities))
        self.initial = self.modality_knn_graphs(self.knn_k, weighted=True)  # S~_m, fixed (cached on disk)
        self.adj = self.ui_graph(normalization="rw", self_loops=True)
        self._item_graphs = None  # {m: A_m as a fixed operator}, rebuilt each epoch
        self._rebuild = True

    def pre_epoch_processing(self):
        self._rebuild = True

    def build_item_graphs(self) -> dict:
        """``{m: (rows, cols, values)}`` of ``A_m = (1-λ) Â_m + λ S~_m``, differentiable w.r.t. the
        projections and features (duplicate edges add up in propagation)."""
        projected = self.projector({m: self.features[m].weight for m in self.modalities})
        out = {}
        for m in self.modalities:
            rows, cols, vals = graphs.learned_knn_edges(projected[m][1:], self.knn_k, "sym")  # real items (row 0: padding)
            init_rows, init_cols, init_vals = self.initial[m].edges()
            out[m] = (torch.cat([rows + 1, init_rows]), torch.cat([cols + 1, init_cols]),
                      torch.cat([(1 - self.lambda_coeff) * vals, self.lambda_coeff * init_vals]))
        return out

    def _graphs(self) -> dict:
        """The epoch's first batch gets each A_m as differentiable edges; later batches reuse them
        as fixed CSR operators (the official code detaches them after that batch)."""
        if self._rebuild or self._item_graphs is None:
            self._rebuild = False
            edges = self.build_item_graphs()
            self._item_graphs = {
                m: SparseOperator(graphs.sparse(r, c, v.detach(), (self.n_items,) * 2))
                for m, (r, c, v) in edges.items()}
            return edges
        return self._item_graphs

    def forward(self):
        item = self.item_embedding.weight
        modal = {}
        for m, graph in self._graphs().items():
            modal[m] = (propagate(graph, item, self.n_layers) if isinstance(graph, SparseOperator)
                        else edge_propagate(*graph, item, self.n_layers))
        fused = self.fusion([modal[m] for m in self.modalities])
        users, items = split_users_items(lightgcn_propagate(self.adj, self.id_embeddings(), self.n_ui_layers),
                                         self.n_users)
        return users, items + F.normalize(fused, dim=1), modal, fused

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items, modal, fused = self.forward()
        loss = bpr_l2(users[user], items[pos], items[neg], self.reg_weight)
        if self.cl_weight:
            cl = sum(intra_inter_info_nce(modal[m][1:], fused[1:], self.cl_temperature) for m in self.modalities)
            loss = loss + self.cl_weight * cl
        return loss

    def inference_embeddings(self):
        with torch.no_grad():
            self._rebuild = True  # score with the graphs of the current projections (official test())
            users, items, _, _ = self.forward()
            return users, items
