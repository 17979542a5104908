"""FREEDOM (Zhou & Shen, ACM MM 2023): "A Tale of Two Graphs: Freezing and Denoising Graph
Structures for Multimodal Recommendation".

* Frozen item-item graph: per-modality KNN graphs of the raw features (binary, sym-normalised),
  mixed with modality weights, built once (Eq. 3-4); item ID embeddings propagate over it
  (``n_mm_layers``) and are added to the LightGCN item output.
* Denoised user-item graph: degree-sensitive edge pruning each epoch (keep ``1 - edge_prune_ratio``
  of the edges, sampled with p ∝ 1/sqrt(d_u d_i), Sec. 3.2); the full graph at inference.
* Loss: BPR on the fused embeddings + ``reg_weight`` x BPR of the user embedding against each
  modality's projected features (Eq. 9).

Fusion options (not in the paper):

* ``fusion: graph`` (the paper's): graph-level fusion, ``h = (sum_m w_m S_m)^L e_id`` as above.
  Any other value fuses representations instead: ``h_m = S_m^L e_id`` over each modality's own
  KNN graph, ``h = Fusion([h_1, ..., h_M])`` (:class:`~recbole_mm.model.layers.Fusion`; ``mean``,
  ``sum``, ``concat``, ``gate``, ``attention``, ``cross_attention``) or, for ``non_invasive``,
  ``Fusion([e_id, h_1, ..., h_M])`` with the item ID embeddings as its ID branch.
  ``modality_weights`` shape only the graph mix (and the early concatenation below).
* ``fusion_stage: early``: the modalities are L2-normalised, scaled by ``sqrt(w_m)`` and
  concatenated into one modality before the model
  (:meth:`~recbole_mm.model.abstract_recommender.MultimodalRecommender.fuse_modalities_early`):
  one KNN graph of the concatenation (cosine = ``sum_m w_m cos_m``), one projection in the
  modality loss. ``late`` (default): per-modality graphs and projections, fused as ``fusion`` says.
"""

from __future__ import annotations

import torch
from recbole.utils import InputType

from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import Fusion, ModalityProjector, lightgcn_propagate, propagate, split_users_items
from recbole_mm.model.loss import bpr_loss

FUSION_STAGES = ("early", "late")


class FREEDOM(MultimodalRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.n_ui_layers, self.n_mm_layers = config["n_ui_layers"], config["n_mm_layers"]  # graph depths
        self.reg_weight, self.edge_prune_ratio = config["reg_weight"], config["edge_prune_ratio"]

        self.fusion_stage, self.fusion_mode = config["fusion_stage"] or "late", config["fusion"] or "graph"
        if self.fusion_stage not in FUSION_STAGES:
            raise ValueError(f"fusion_stage must be one of {FUSION_STAGES}, got {self.fusion_stage!r}")
        graph_weights = config["modality_weights"]
        if self.fusion_stage == "early":  # the weights go into the concatenation; one modality remains
            self.fuse_modalities_early(self.modality_weights(graph_weights))
            graph_weights = None

        self.init_id_embeddings(self.embedding_size)
        self.features = self.feature_tables(trainable=config["train_features"])
        self.projector = ModalityProjector(self.modality_dims(), self.embedding_size)

        if self.fusion_mode == "graph":
            self.fusion = None
            self.mm_graph = self.mixed_knn_graph(config["knn_k"], graph_weights)
        else:  # one graph per modality, representations fused
            self.mm_graphs = self.modality_knn_graphs(config["knn_k"])
            n_inputs = len(self.modalities) + (self.fusion_mode == "non_invasive")
            self.fusion = Fusion.from_config(config, self.embedding_size, n_inputs)
        self.full_adj = self.ui_graph()
        self.train_adj = self.full_adj

    def pre_epoch_processing(self):
        """Resample the degree-pruned user-item graph (training only)."""
        if self.edge_prune_ratio <= 0:
            self.train_adj = self.full_adj
            return
        self.train_adj = self.pruned_ui_graph(1.0 - self.edge_prune_ratio)

    def item_graph_embeddings(self) -> torch.Tensor:
        """``h``: item ID embeddings over the frozen item graph(s), fused as ``fusion`` says."""
        e = self.item_embedding.weight
        if self.fusion is None:
            return propagate(self.mm_graph, e, self.n_mm_layers)
        views = [propagate(self.mm_graphs[m], e, self.n_mm_layers) for m in self.modalities]
        return self.fusion([e] + views if self.fusion_mode == "non_invasive" else views)

    def forward(self, adj):
        h = self.item_graph_embeddings()
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
