"""VBPR: Visual Bayesian Personalized Ranking (He & McAuley, AAAI 2016).

Matrix factorisation whose item side also sees content features. The paper's preference
predictor (Eq. 2), with the global offset and user bias dropped because they cancel in the
pairwise BPR objective:

    x_ui = beta_i + gamma_u . gamma_i + theta_u . (E^T f_i) + beta'^T f_i

``f_i`` is the concatenation of all the item's modalities (not only a visual CNN feature), ``E``
projects it to ``feature_embedding_size`` dims. Equivalently the item factor is
``[gamma_i ; E^T f_i]`` against the user factor ``[gamma_u ; theta_u]``.

Loss: BPR + ``reg_weight`` x squared L2 of the batch's user factors and item factors, the content
part ``E^T f_i`` included (``reg_content``: the paper's ``lambda ||E||^2`` restricted to the rows a
batch touches; without it the projection of large raw features grows unchecked).
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
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.feature_embedding_size = config["feature_embedding_size"]
        self.reg_weight = config["reg_weight"]
        self.normalize_features = config["normalize_features"]
        self.use_bias = config["use_bias"]
        self.reg_content = config["reg_content"]

        # f_i is fixed: build the (normalised) concatenation once, not per batch
        content = self.concat_features(normalize=self.normalize_features)
        if config["feature_dtype"] == "bfloat16":
            content = content.bfloat16()
        self.register_buffer("content", content, persistent=False)
        feat_dim = self.content.shape[1]
        self.user_gamma = nn.Embedding(self.n_users, self.embedding_size)
        self.user_theta = nn.Embedding(self.n_users, self.feature_embedding_size)
        self.item_gamma = nn.Embedding(self.n_items, self.embedding_size)
        # E and beta' share one pass over the (large) features: columns [E | beta']
        self.feature_proj = nn.Linear(feat_dim, self.feature_embedding_size + 1, bias=False)
        self.item_bias = nn.Embedding(self.n_items, 1)  # beta_i
        self.loss = BPRLoss()
        self.apply(xavier_normal_initialization)
        nn.init.zeros_(self.item_bias.weight)
        with torch.no_grad():
            self.feature_proj.weight[-1].zero_()  # beta' starts at 0, like beta_i

    def _project(self, f):
        """``[E^T f | beta'^T f]``; bf16 features are projected with bf16 matmuls (fp32 result)."""
        if f.dtype != torch.bfloat16:
            return self.feature_proj(f)
        with torch.autocast(f.device.type, dtype=torch.bfloat16):
            return self.feature_proj(f).float()

    def _item_side(self, items=None):
        """Item factor ``[gamma_i ; E^T f_i]`` and bias ``beta_i + beta'^T f_i``.

        A batch repeats items, so the (costly, feature-sized) content part is computed once per
        distinct item and scattered back.
        """
        if items is None:
            f, gamma, bias = self.content, self.item_gamma.weight, self.item_bias.weight
            inverse = None
        else:
            unique, inverse = torch.unique(items, return_inverse=True)
            f, gamma, bias = self.content[unique], self.item_gamma(unique), self.item_bias(unique)
        projected = self._project(f)
        factor = torch.cat([gamma, projected[:, :-1]], dim=1)
        total_bias = (bias.squeeze(1) + projected[:, -1]) if self.use_bias else \
            torch.zeros(factor.shape[0], device=factor.device)
        if inverse is not None:
            factor, total_bias = factor[inverse], total_bias[inverse]
        return factor, total_bias

    def _user_side(self, users):
        return torch.cat([self.user_gamma(users), self.user_theta(users)], dim=1)

    def inference_embeddings(self):
        """``([gamma_u ; theta_u ; 1], [gamma_i ; E^T f_i ; bias_i])``: the score ``u . factor_i + bias_i``
        as one dot product (the bias rides on a constant 1), for embedding export and FAISS."""
        factor, bias = self._item_side()
        users = self._user_side(torch.arange(self.n_users, device=factor.device))
        ones = torch.ones(len(users), 1, device=users.device)
        return torch.cat([users, ones], 1), torch.cat([factor, bias.unsqueeze(1)], 1)

    def calculate_loss(self, interaction):
        """BPR needs only ``x_ui - x_uj``. The model is linear in ``f``, so without ``reg_content`` the
        content terms are evaluated on ``f_i - f_j``: one feature-sized projection per triple (exact,
        and about half the work of projecting both items). ``reg_content`` needs ``E^T f_i`` and
        ``E^T f_j`` themselves, so both are projected and the difference taken after."""
        users = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        gamma_u, theta_u = self.user_gamma(users), self.user_theta(users)
        gamma_pos, gamma_neg = self.item_gamma(pos), self.item_gamma(neg)
        f_pos, f_neg = self.content.index_select(0, pos), self.content.index_select(0, neg)
        if self.reg_content:  # the item factors' content half E^T f too (MMRec regularises whole item rows)
            p_pos, p_neg = self._project(torch.cat([f_pos, f_neg])).split(len(pos))
            projected = p_pos - p_neg
            item_rows = (torch.cat([gamma_pos, p_pos[:, :-1]], dim=1), torch.cat([gamma_neg, p_neg[:, :-1]], dim=1))
        else:
            projected = self._project(f_pos - f_neg)
            item_rows = (gamma_pos, gamma_neg)
        # projected = [E^T (f_i - f_j) | beta'^T (f_i - f_j)]
        diff = (gamma_u * (gamma_pos - gamma_neg)).sum(1) + (theta_u * projected[:, :-1]).sum(1)
        if self.use_bias:
            diff = diff + (self.item_bias(pos) - self.item_bias(neg)).squeeze(1) + projected[:, -1]
        reg = l2_reg(torch.cat([gamma_u, theta_u], dim=1), *item_rows)
        return self.loss(diff, torch.zeros_like(diff)) + self.reg_weight * reg

    def predict(self, interaction):
        u = self._user_side(interaction[self.USER_ID])
        factor, bias = self._item_side(interaction[self.ITEM_ID])
        return (u * factor).sum(1) + bias

    def full_sort_predict(self, interaction):
        u = self._user_side(interaction[self.USER_ID])
        factor, bias = self.eval_cached(self._item_side)
        return (u @ factor.T + bias).view(-1)
