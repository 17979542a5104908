"""VBPR: Visual Bayesian Personalized Ranking (He & McAuley, AAAI 2016).

Matrix factorisation whose item side also sees content features. The paper's preference
predictor (Eq. 2), with the global offset and user bias dropped because they cancel in the
pairwise BPR objective:

    x_ui = beta_i + gamma_u . gamma_i + theta_u . (E^T f_i) + beta'^T f_i

``f_i`` is the concatenation of all the item's modalities (not only a visual CNN feature), ``E``
projects it to ``feature_embedding_size`` dims. Equivalently the item factor is
``[gamma_i ; E^T f_i]`` against the user factor ``[gamma_u ; theta_u]``.
"""

from __future__ import annotations

import torch
from torch import nn
from recbole.model.init import xavier_normal_initialization
from recbole.model.loss import BPRLoss
from recbole.utils import InputType

from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.loss import l2_reg


class VBPR(MultimodalRecommender):
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.feature_embedding_size = config["feature_embedding_size"]
        self.reg_weight = config["reg_weight"]
        self.normalize_features = config["normalize_features"]
        self.use_bias = config["use_bias"]

        feat_dim = sum(self.modality_dims().values())
        self.user_gamma = nn.Embedding(self.n_users, self.embedding_size)
        self.user_theta = nn.Embedding(self.n_users, self.feature_embedding_size)
        self.item_gamma = nn.Embedding(self.n_items, self.embedding_size)
        self.feature_proj = nn.Linear(feat_dim, self.feature_embedding_size, bias=False)  # E
        self.item_bias = nn.Embedding(self.n_items, 1)  # beta_i
        self.feature_bias = nn.Linear(feat_dim, 1, bias=False)  # beta'
        self.loss = BPRLoss()
        self.apply(xavier_normal_initialization)
        nn.init.zeros_(self.item_bias.weight)
        nn.init.zeros_(self.feature_bias.weight)

    def _features(self, items=None) -> torch.Tensor:
        return self.concat_features(items, normalize=self.normalize_features)

    def _item_side(self, items=None):
        """Item factor ``[gamma_i ; E^T f_i]`` and bias ``beta_i + beta'^T f_i``."""
        f = self._features(items)
        gamma = self.item_gamma.weight if items is None else self.item_gamma(items)
        factor = torch.cat([gamma, self.feature_proj(f)], dim=1)
        if not self.use_bias:
            return factor, torch.zeros(factor.shape[0], device=factor.device)
        bias = (self.item_bias.weight if items is None else self.item_bias(items)).squeeze(1)
        return factor, bias + self.feature_bias(f).squeeze(1)

    def _user_side(self, users):
        return torch.cat([self.user_gamma(users), self.user_theta(users)], dim=1)

    def calculate_loss(self, interaction):
        users = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        u = self._user_side(users)
        pos_f, pos_b = self._item_side(pos)
        neg_f, neg_b = self._item_side(neg)
        pos_score = (u * pos_f).sum(1) + pos_b
        neg_score = (u * neg_f).sum(1) + neg_b
        reg = l2_reg(u, self.item_gamma(pos), self.item_gamma(neg))
        return self.loss(pos_score, neg_score) + self.reg_weight * reg

    def predict(self, interaction):
        u = self._user_side(interaction[self.USER_ID])
        factor, bias = self._item_side(interaction[self.ITEM_ID])
        return (u * factor).sum(1) + bias

    def full_sort_predict(self, interaction):
        u = self._user_side(interaction[self.USER_ID])
        factor, bias = self._item_side()
        return (u @ factor.T + bias).view(-1)
