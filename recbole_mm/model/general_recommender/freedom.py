"""FREEDOM (Zhou & Shen, ACM MM 2023): "A Tale of Two Graphs: Freezing and Denoising Graph
Structures for Multimodal Recommendation".

* Frozen item-item graph: per-modality KNN graphs of the raw features (binary, sym-normalised),
  mixed with modality weights, built once (Eq. 3-4); item ID embeddings propagate over it
  (``n_mm_layers``) and are added to the LightGCN item output.
* Denoised user-item graph: degree-sensitive edge pruning each epoch (keep ``1 - edge_prune_ratio``
  of the edges, sampled with p ∝ 1/sqrt(d_u d_i), Sec. 3.2); the full graph at inference.
* Loss: BPR on the fused embeddings + ``reg_weight`` x BPR of the user embedding against each
  modality's projected features (Eq. 9).
"""

from __future__ import annotations

import torch
from recbole.utils import InputType

from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import ModalityProjector, lightgcn_propagate, propagate, split_users_items
from recbole_mm.model.loss import bpr_loss


class FREEDOM(MultimodalRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.n_ui_layers, self.n_mm_layers = config["n_ui_layers"], config["n_mm_layers"]  # graph depths
        self.reg_weight, self.edge_prune_ratio = config["reg_weight"], config["edge_prune_ratio"]

        self.init_id_embeddings(self.embedding_size)
        self.features = self.feature_tables(trainable=config["train_features"])
        self.projector = ModalityProjector(self.modality_dims(), self.embedding_size)

        self.mm_graph = self.mixed_knn_graph(config["knn_k"], config["modality_weights"])
        self.full_adj = self.ui_graph()
        self.train_adj = self.full_adj

    def pre_epoch_processing(self):
        """Resample the degree-pruned user-item graph (training only)."""
        if self.edge_prune_ratio <= 0:
            self.train_adj = self.full_adj
            return
        self.train_adj = self.pruned_ui_graph(1.0 - self.edge_prune_ratio)

    def forward(self, adj):
        h = propagate(self.mm_graph, self.item_embedding.weight, self.n_mm_layers)
        users, items = split_users_items(lightgcn_propagate(adj, self.id_embeddings(), self.n_ui_layers), self.n_users)
        return users, items + h

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items = self.forward(self.train_adj)
        u = users[user]
        loss = bpr_loss((u * items[pos]).sum(1), (u * items[neg]).sum(1))
        if self.reg_weight:
            # Eq. 9's modality BPR terms need only u . P_m(f_pos - f_neg) (linear projection)
            diffs = self.projector.difference({m: t(pos) for m, t in self.features.items()},
                                              {m: t(neg) for m, t in self.features.items()})
            for d in diffs.values():
                score = (u * d).sum(1)
                loss = loss + self.reg_weight * bpr_loss(score, torch.zeros_like(score))
        return loss

    def inference_embeddings(self):
        return self.forward(self.full_adj)
