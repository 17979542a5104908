"""MGCN (Yu et al., ACM MM 2023): "Multi-View Graph Convolutional Network for Multimedia Recommendation".

* Behaviour-guided purifier (Eq. 1): ``x_m = e_id ⊙ sigmoid(W_m f_m + b_m)`` removes
  preference-irrelevant noise from each modality using the item's ID embedding.
* Views: user-item LightGCN over IDs (content view), and per modality an item-item KNN graph
  (weighted cosine, sym-normalised, from the raw features) over ``x_m``, lifted to users with the
  normalised interaction matrix (Eq. 2-4).
* Behaviour-aware fuser (Eq. 5-7): modality-common part by attention over modalities, modality-
  specific parts gated by the users'/items' behaviour embeddings; ``side = (sum_m s_m + c) / (M+1)``,
  final = content + side.
* Loss: BPR + L2 on the batch + ``cl_weight`` x InfoNCE between side and content views of the batch's
  users and items (Eq. 10, τ = ``cl_temperature``).
"""

from __future__ import annotations

import torch
from recbole.utils import InputType

from recbole_mm.model.abstract_recommender import SideViewRecommender
from recbole_mm.model.layers import Fusion, ModalityProjector, lightgcn_propagate, propagate


class MGCN(SideViewRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = self.embedding_size

        self.init_id_embeddings(d)
        self.features = self.feature_tables(trainable=config["train_features"])
        self.projector = ModalityProjector(self.modality_dims(), d)
        self.purifier = ModalityProjector({m: d for m in self.modalities}, d, activation="sigmoid")
        self.preference = ModalityProjector({m: d for m in self.modalities}, d, activation="sigmoid")
        self.common = Fusion("attention", d, len(self.modalities))

        self.item_graphs = self.modality_knn_graphs(config["knn_k"], weighted=True)
        self.adj = self.ui_graph()
        self.R = self.interaction_matrix()

    def forward(self):
        content = lightgcn_propagate(self.adj, self.id_embeddings(), self.n_ui_layers)
        projected = self.projector({m: self.features[m].weight for m in self.modalities})
        gates = self.purifier(projected)
        views = []
        for m in self.modalities:
            items = propagate(self.item_graphs[m], self.item_embedding.weight * gates[m], self.n_layers)
            views.append(torch.cat([self.R @ items, items]))
        common = self.common(views)
        prefer = self.preference({m: content for m in self.modalities})
        specific = [prefer[m] * (v - common) for m, v in zip(self.modalities, views)]
        side = (sum(specific) + common) / (len(views) + 1)
        return content + side, side, content
