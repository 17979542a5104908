"""LATTICE (Zhang et al., ACM MM 2021): "Mining Latent Structures for Multimedia Recommendation".

* Per modality m, an initial KNN graph of the raw features ``S~_m`` (cosine weights, top-k,
  sym-normalised; Eq. 1-3) and a learned one ``Â_m`` from the projected features (Eq. 4-5),
  rebuilt once per epoch; the learned graph keeps its gradient for the batch that builds it.
* Graphs mixed over modalities with softmax weights ``alpha`` (Eq. 6) and with the initial
  graph by ``lambda_coeff``: ``A = (1-λ) norm(sum_m α_m Â_m) + λ sum_m α_m S~_m`` (Eq. 7).
* Item ID embeddings propagate over A (``n_layers``); the L2-normalised result is added to the
  items of a LightGCN over ``D^{-1}(A_ui + I)`` (the official code's collaborative backbone).

Scalable: neighbours are found block-wise (no n x n matrix) and the graph is an edge list, so
memory is O(n k) instead of MMRec's dense n x n similarity rebuilt every epoch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_mm.data import graphs
from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import (
    ModalityProjector,
    SparseOperator,
    edge_propagate,
    propagate,
    lightgcn_propagate,
    split_users_items,
)
from recbole_mm.model.loss import bpr_loss, l2_reg


class LATTICE(MultimodalRecommender):
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.load_hparams(config, "embedding_size", "knn_k", "lambda_coeff", "n_layers", "n_ui_layers", "reg_weight")

        self.init_id_embeddings(self.embedding_size)
        self.features = self.feature_tables(trainable=config["train_features"])
        self.projector = ModalityProjector(self.modality_dims(), config["feat_embed_dim"])
        self.modal_logits = nn.Parameter(torch.zeros(len(self.modalities)))  # alpha = softmax

        # initial graphs S~_m: fixed, one per modality (cached on disk)
        self._initial = []
        for m in self.modalities:
            g = self.knn_graph(self.modality_feature(m), self.knn_k, normalization="sym", weighted=True)
            self._initial.append((g.indices()[0], g.indices()[1], g.values()))
        self.adj = SparseOperator(self.norm_adj_rw()).to(self.device)
        self._item_graph = None  # A as a fixed operator, rebuilt each epoch
        self._rebuild = True

    def norm_adj_rw(self):
        return graphs.bipartite_norm_adj(self.train_users, self.train_items, self.n_users, self.n_items,
                                         normalization="rw", self_loops=True)

    def pre_epoch_processing(self):
        self._rebuild = True

    def build_item_graph(self):
        """Edge list of ``A`` (Eq. 7), differentiable w.r.t. projections and modality weights."""
        alpha = torch.softmax(self.modal_logits, dim=0)
        projected = self.projector({m: self.features[m].weight for m in self.modalities})
        rows, cols, vals = [], [], []
        for j, m in enumerate(self.modalities):
            feats = projected[m][1:]  # real items only (row 0 is padding)
            nbr, _ = graphs.knn_indices(feats, self.knn_k)
            r = torch.arange(feats.shape[0], device=feats.device).repeat_interleave(nbr.shape[1])
            c = nbr.reshape(-1)
            normed = F.normalize(feats, dim=1)
            sims = (normed[r] * normed[c]).sum(1)  # differentiable Eq. 4 on the kept edges
            rows.append(r + 1), cols.append(c + 1), vals.append(alpha[j] * sims)
        rows, cols, vals = torch.cat(rows), torch.cat(cols), torch.cat(vals)
        learned = graphs.normalize_edges(rows, cols, vals, self.n_items, mode="sym")
        init_rows = torch.cat([g[0] for g in self._initial]).to(self.device)
        init_cols = torch.cat([g[1] for g in self._initial]).to(self.device)
        init_vals = torch.cat([alpha[j] * g[2].to(self.device) for j, g in enumerate(self._initial)])
        return (
            torch.cat([rows, init_rows]),
            torch.cat([cols, init_cols]),
            torch.cat([(1 - self.lambda_coeff) * learned, self.lambda_coeff * init_vals]),
        )

    def _graph(self):
        """The epoch's first batch gets A as differentiable edges (gradient to the projections and
        alpha, as in the official code); later batches reuse it as a fixed CSR operator."""
        if self._rebuild or self._item_graph is None:
            self._rebuild = False
            rows, cols, vals = self.build_item_graph()
            coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals.detach(), (self.n_items, self.n_items))
            self._item_graph = SparseOperator(coo)
            return rows, cols, vals
        return self._item_graph

    def forward(self):
        graph = self._graph()
        if isinstance(graph, SparseOperator):
            h = propagate(graph, self.item_embedding.weight, self.n_layers)
        else:
            h = edge_propagate(*graph, self.item_embedding.weight, self.n_layers)
        ego = torch.cat([self.user_embedding.weight, self.item_embedding.weight])
        users, items = split_users_items(lightgcn_propagate(self.adj, ego, self.n_ui_layers), self.n_users)
        return users, items + F.normalize(h, dim=1)

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items = self.forward()
        u, p, n = users[user], items[pos], items[neg]
        return bpr_loss((u * p).sum(1), (u * n).sum(1)) + self.reg_weight * l2_reg(u, p, n)

    def inference_embeddings(self):
        with torch.no_grad():
            self._rebuild = True  # score with the graph of the current projections (as trained)
            return self.forward()
