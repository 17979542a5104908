"""BM3 (Zhou et al., WWW 2023): "Bootstrap Latent Representations for Multi-modal Recommendation".

No negative sampling. A LightGCN online encoder (item output + its ID embedding) and per-modality
projections; the target views are the online representations with dropout
(:func:`~recbole_mm.model.augment.feature_dropout`) and a stop-gradient (Sec. 3.2); a shared
predictor maps online views, and the loss aligns predicted online views with target views
(Eq. 6-9): user<->item, modality<->item and modality<->own-target, plus ``reg_weight`` x
``EmbLoss`` of the online embeddings. Scores: ``predictor(h_u) . predictor(h_i)``.
"""

from __future__ import annotations

import torch
from recbole.model.loss import EmbLoss
from recbole.utils import InputType
from torch import nn

from recbole_mm.model import augment
from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import ModalityProjector, lightgcn_propagate, split_users_items
from recbole_mm.model.loss import bootstrap_loss


class BM3(MultimodalRecommender):
    input_type = InputType.POINTWISE  # positives only: train_neg_sample_args: ~

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size, self.n_layers = config["embedding_size"], config["n_layers"]
        self.reg_weight, self.cl_weight = config["reg_weight"], config["cl_weight"]  # loss weights
        self.dropout = config["dropout"]  # makes the target views

        self.init_id_embeddings(self.embedding_size)
        self.features = self.feature_tables(trainable=config["train_features"])
        self.projector = ModalityProjector(self.modality_dims(), self.embedding_size)
        for layer in self.projector.proj.values():
            nn.init.xavier_normal_(layer.weight)
        self.predictor = nn.Linear(self.embedding_size, self.embedding_size)
        nn.init.xavier_normal_(self.predictor.weight)
        self.reg_loss = EmbLoss()
        self.adj = self.ui_graph()

    def forward(self):
        users, items = split_users_items(lightgcn_propagate(self.adj, self.id_embeddings(), self.n_layers),
                                         self.n_users)
        return users, items + self.item_embedding.weight

    def calculate_loss(self, interaction):
        user, item = interaction[self.USER_ID], interaction[self.ITEM_ID]
        u_all, i_all = self.forward()
        feats = self.project_rows(self.projector, self.features, item)
        with torch.no_grad():  # target views: dropout on a stopped-gradient copy (Eq. 5)
            u_target = augment.feature_dropout(u_all[user], self.dropout)
            i_target = augment.feature_dropout(i_all[item], self.dropout)
            f_target = {m: augment.feature_dropout(f, self.dropout) for m, f in feats.items()}
        u_online = self.predictor(u_all[user])
        i_online = self.predictor(i_all[item])
        loss = bootstrap_loss(u_online, i_target) + bootstrap_loss(i_online, u_target)
        modal = 0.0
        for m, f in feats.items():
            f_online = self.predictor(f)
            modal = modal + bootstrap_loss(f_online, i_target) + bootstrap_loss(f_online, f_target[m])
        return loss + self.reg_weight * self.reg_loss(u_all, i_all) + self.cl_weight * modal

    def inference_embeddings(self):
        users, items = self.forward()
        return self.predictor(users), self.predictor(items)
