"""LayerGCN (Zhou, Lin, Liu & Miao, ICDE 2023): "Layer-refined Graph Convolutional Networks for
Recommendation". A collaborative model (no item features).

* Layer refinement: each propagation layer's output is re-weighted, row by row, by its cosine
  similarity to the ego (layer-0) embeddings before it feeds the next layer,

      E^{l+1} = a^{l+1} * (A E^l),   a^{l+1}_n = cos((A E^l)_n, E^0_n),

  and the final representations sum the refined layers, ``E = sum_{l=1..L} E^l`` (the ego layer
  itself is not added). ``A`` is the sym-normalised user-item adjacency ``D^-1/2 [[0,R],[R^T,0]] D^-1/2``.
* Degree-sensitive edge dropout: before each training epoch a fraction ``dropout`` of the user-item
  edges is removed, edges kept with probability ``p_(u,i) ∝ 1/sqrt(d_u d_i)``, and the kept graph is
  re-normalised; inference uses the full graph. As the official code (MMRec), epochs alternate
  between this degree-sensitive sample and a uniform one (the first epoch is degree-sensitive).
* Loss: BPR on the refined embeddings plus ``reg_weight`` x L2 of the batch's ego embeddings, both
  summed over the batch as the official code does (``sum_b -log sigma(x_ubi - x_ubj)`` +
  ``reg_weight/2 sum ||e^0||^2``), not averaged.
"""

from __future__ import annotations

import math

import torch
from recbole.utils import InputType

from recbole_mm.data import graphs
from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import refined_propagate, split_users_items
from recbole_mm.model.loss import bpr_loss, l2_reg


class LayerGCN(MultimodalRecommender):
    input_type = InputType.PAIRWISE
    uses_modalities = False

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size, self.n_layers = config["embedding_size"], config["n_layers"]
        self.reg_weight, self.dropout = config["reg_weight"], config["dropout"]

        self.init_id_embeddings(self.embedding_size)
        self.full_adj = self.ui_graph()
        self.train_adj = self.full_adj
        self._uniform_next = False  # the official code alternates degree-sensitive / uniform dropout

    def pre_epoch_processing(self):
        """Resample the pruned training graph (degree-sensitive and uniform epochs alternate)."""
        if self.dropout <= 0:
            self.train_adj = self.full_adj
            return
        keep = 1.0 - self.dropout
        if self._uniform_next:
            kept = torch.randperm(len(self.train_users))[: math.ceil(keep * len(self.train_users))]
            adj = graphs.bipartite_norm_adj(self.train_users[kept], self.train_items[kept], self.n_users, self.n_items)
            self.train_adj = self._operator(adj, symmetric=True)
        else:
            self.train_adj = self.pruned_ui_graph(keep)
        self._uniform_next = not self._uniform_next

    def forward(self, adj):
        return split_users_items(refined_propagate(adj, self.id_embeddings(), self.n_layers), self.n_users)

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items = self.forward(self.train_adj)
        u = users[user]
        mf = bpr_loss((u * items[pos]).sum(1), (u * items[neg]).sum(1))
        reg = l2_reg(self.user_embedding(user), self.item_embedding(pos), self.item_embedding(neg))
        return len(user) * (mf + self.reg_weight * reg)  # batch sums, as the official code

    def inference_embeddings(self):
        return self.forward(self.full_adj)
