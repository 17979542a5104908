"""SelfCF (Zhou, Sun, Liu, Zhang & Miao, ACM TORS 2023): "SelfCF: A Simple Framework for
Self-supervised Collaborative Filtering" -- the embedding-dropout variant SelfCF_ed on a LightGCN
backbone (MMRec's ``SELFCFED_LGN``). A collaborative model (no item features), trained without
negative samples.

* Backbone: LightGCN, ``E = mean(E^0, A E^0, ..., A^L E^0)`` on the sym-normalised user-item graph.
* Augmentation: the online view is the backbone output ``(e_u, e_i)`` of a training pair; the target
  view is a copy of it with embedding dropout and a stop-gradient, ``(sg(drop(e_u)), sg(drop(e_i)))``
  (Sec. 4.2, embedding dropout). A linear predictor ``h`` maps the online view.
* Loss (BYOL-style symmetric negative cosine; written as ``1 - cos``, which adds the constant 1):

      L = 1/2 [1 - cos(h(e_u), sg(drop(e_i)))] + 1/2 [1 - cos(h(e_i), sg(drop(e_u)))]
          + reg_weight/2 (||e_u||^2 + ||e_i||^2)      (norms summed over the batch, as MMRec)

* Scores (as the official code): ``s(u, i) = h(e_u) . e_i + e_u . h(e_i)``.

What the official code (MMRec / BUIR's LightGCN encoder) does beyond the paper, followed here: during
training the backbone propagates over a graph with random *edge* dropout, a fresh rate
``r ~ U(0, graph_dropout)`` per batch, every adjacency entry kept with probability ``1 - r`` and
scaled by ``1 / (1 - r)``; inference uses the full graph. ``graph_dropout: 0`` turns it off.
"""

from __future__ import annotations

import torch
from recbole.utils import InputType
from torch import nn

from recbole_mm.model import augment
from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import SparseOperator, lightgcn_propagate, split_users_items, take_rows
from recbole_mm.model.loss import bootstrap_loss, l2_reg


class SelfCF(MultimodalRecommender):
    input_type = InputType.POINTWISE  # positives only: train_neg_sample_args: ~
    uses_modalities = False

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size, self.n_layers = config["embedding_size"], config["n_layers"]
        self.dropout, self.reg_weight = config["dropout"], config["reg_weight"]
        self.graph_dropout = config["graph_dropout"]

        self.init_id_embeddings(self.embedding_size)
        self.predictor = nn.Linear(self.embedding_size, self.embedding_size)
        self.adj = self.ui_graph()

    def dropped_graph(self) -> SparseOperator:
        """The adjacency with random edge dropout at a rate drawn per call (official encoder)."""
        rate = torch.rand(()).item() * self.graph_dropout
        # entries are dropped independently (no longer symmetric); dropped ones stay as stored zeros
        return augment.edge_dropout(self.adj, rate, renormalize=False, symmetric=False)

    def forward(self, adj):
        return split_users_items(lightgcn_propagate(adj, self.id_embeddings(), self.n_layers), self.n_users)

    def calculate_loss(self, interaction):
        user, item = interaction[self.USER_ID], interaction[self.ITEM_ID]
        users, items = self.forward(self.dropped_graph() if self.graph_dropout > 0 else self.adj)
        u, i = take_rows(users, user), take_rows(items, item)
        with torch.no_grad():  # target views: embedding dropout on a stopped-gradient copy
            u_target, i_target = augment.feature_dropout(u, self.dropout), augment.feature_dropout(i, self.dropout)
        loss = (bootstrap_loss(self.predictor(u), i_target) + bootstrap_loss(self.predictor(i), u_target)) / 2
        return loss + self.reg_weight * len(user) * l2_reg(u, i)  # = reg_weight/2 (sum ||e_u||^2 + ||e_i||^2)

    def inference_embeddings(self):
        users, items = self.forward(self.adj)
        # [h(e_u), e_u] . [e_i, h(e_i)] = h(e_u) . e_i + e_u . h(e_i)
        return torch.cat([self.predictor(users), users], 1), torch.cat([items, self.predictor(items)], 1)
