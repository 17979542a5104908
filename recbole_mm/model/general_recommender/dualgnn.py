"""DualGNN (Wang, Wei, Yin, Wu, Song & Nie, IEEE Transactions on Multimedia 2021; vol. 25, 2023):
"DualGNN: Dual Graph Neural Network for Multimedia Recommendation".

* Single-modal representation learning on the user-item graph of each modality: per modality ``m`` a user preference
  table ``P_m`` and an item MLP ``f_m -> Linear(d_m, 4d) -> LeakyReLU -> Linear(4d, d)`` give
  ``x_m = normalize([P_m; MLP_m(f_m)])`` (row-wise L2); ``h_m = sum_{l=0..L} Â^l x_m`` (Eq. 1 for l=1) on the
  symmetric-normalised user-item graph ``Â`` (the official code's ``x + Âx + Â²x``, ``L = n_ui_layers``).
* Multimodal fusion (the model-fusion options of the paper and official code): items ``i = sum_m h_m[i]``; users per ``construction``:
  ``weighted_sum`` ``u = sum_m a_um h_m[u]`` with learned per-user modality weights ``a_u``
  (softmax-initialised, then free, as in the official code), ``mean``, ``weighted_max``
  ``max_m a_um h_m[u]``, ``cat_mlp`` ``W [a_u1 h_1[u]; ...]``, ``cat`` ``[a_u1 h_1[u]; ...]`` (DRAGON's,
  items concatenated too).
* User co-occurrence graph aggregation of the fused user preferences: ``u <- u + sum_{v in N_K(u)} w_uv v`` over each user's
  ``K = user_knn_k`` users sharing most training items, ``w_u = softmax`` of the co-occurrence counts
  (``user_aggr_mode: softmax``) or ``1/K`` (``mean``). Built by us from the training split
  (:meth:`~recbole_mm.model.abstract_recommender.MultimodalRecommender.sampled_user_graph`); users with
  fewer than ``K`` neighbours get their list padded by random repeats, redrawn every epoch, as the
  official code's ``topk_sample`` does (fixed between epochs, so inference is deterministic).
* Loss (BPR): ``-mean log2 sigmoid(s_pos - s_neg)`` (base-2 log as the official code) +
  ``reg_weight (sum_m mean(P_m[u]^2) + mean(a^2))`` (``cat_mlp``: ``mean(W^2)`` instead of ``mean(a^2)``).

Followed from MMRec (``src/models/dualgnn.py``), where it matters for accuracy: with
``mmrec_fusion_alias`` (default), ``weighted_sum``/``weighted_max`` see the first modality's user
representation as the *sum* of all modalities, as MMRec's in-place ``representation += t_rep``
aliases it (``u = a_u1 sum_m h_m[u] + sum_{m>1} a_um h_m[u]``; the official DualGNN code has no such
alias: set False). MMRec's modality order is (image, text): list the image-slot modality first.
Differences: MMRec scores evaluation with the embeddings of the last training batch, we recompute
them with the final parameters; the official code's item weights ``weight_i`` (used only in a reg
term, never in a score) are left out; the node-dropping masks it builds are unused there and here.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import spmm
from recbole_mm.model.loss import bpr_loss

CONSTRUCTIONS = ("weighted_sum", "mean", "weighted_max", "cat_mlp", "cat")


class DualGNN(MultimodalRecommender):
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = d = config["embedding_size"]
        self.n_ui_layers, self.reg_weight = config["n_ui_layers"], config["reg_weight"]
        self.construction = config["construction"]
        if self.construction not in CONSTRUCTIONS:
            raise ValueError(f"{type(self).__name__}: construction must be one of {CONSTRUCTIONS}, "
                             f"got {self.construction!r}")
        self.user_knn_k, self.user_aggr_mode = config["user_knn_k"], config["user_aggr_mode"]
        self.fusion_alias = bool(config["mmrec_fusion_alias"])
        n_mod = len(self.modalities)

        self.preference = nn.ParameterDict({
            m: nn.Parameter(nn.init.xavier_normal_(torch.empty(self.n_users, d))) for m in self.modalities})
        self.mlp = nn.ModuleDict({m: nn.Sequential(nn.Linear(dim, 4 * d), nn.LeakyReLU(), nn.Linear(4 * d, d))
                                  for m, dim in self.modality_dims().items()})
        # per-user modality weights a_u (n_users, M, 1): Xavier-normal, softmax over modalities once
        self.weight_u = nn.Parameter(torch.softmax(nn.init.xavier_normal_(torch.empty(self.n_users, n_mod, 1)), 1))
        self.user_mlp = nn.Linear(n_mod * d, d) if self.construction == "cat_mlp" else None

        self.adj = self.ui_graph()
        self.user_adj = self.sampled_user_graph(self.user_knn_k, self.user_aggr_mode)

    def pre_epoch_processing(self):
        """Redraw the padding of the user co-occurrence graph (the official per-epoch ``topk_sample``)."""
        self.user_adj = self.sampled_user_graph(self.user_knn_k, self.user_aggr_mode)

    # -- model blocks ------------------------------------------------------------------------------
    def modality_representations(self) -> list:
        """``[h_m]``, each ``(n_users + n_items, d)``: Eq. 1-3 on the user-item graph, one per modality."""
        reps = []
        for m in self.modalities:
            x = F.normalize(torch.cat([self.preference[m], self.mlp[m](self.modality_feature(m))]), dim=1)
            h = total = x
            for _ in range(self.n_ui_layers):
                h = spmm(self.adj, h)
                total = total + h
            reps.append(total)
        return reps

    def fuse(self, reps: list):
        """``(users, items)`` from the modality representations, per ``construction``."""
        nu = self.n_users
        users = [h[:nu] for h in reps]
        if self.construction == "cat":
            items = torch.cat([h[nu:] for h in reps], dim=1)
        else:
            items = torch.stack([h[nu:] for h in reps]).sum(0)
            if self.fusion_alias and self.construction in ("weighted_sum", "weighted_max") and len(users) > 1:
                users[0] = torch.stack(users).sum(0)  # MMRec: the first modality aliased to the sum
        if self.construction == "mean":
            return torch.stack(users).mean(0), items
        stacked = torch.stack(users, dim=2)  # (n_users, d, M)
        if self.construction == "weighted_sum":
            return (stacked @ self.weight_u).squeeze(2), items
        weighted = stacked * self.weight_u.transpose(1, 2)
        if self.construction == "weighted_max":
            return weighted.amax(2), items
        flat = weighted.transpose(1, 2).reshape(nu, -1)  # [a_u1 h_1[u]; a_u2 h_2[u]; ...]
        return (self.user_mlp(flat) if self.construction == "cat_mlp" else flat), items

    def forward(self):
        users, items = self.fuse(self.modality_representations())
        return users + spmm(self.user_adj, users), items

    def fusion_regularizer(self) -> torch.Tensor:
        if self.construction in ("weighted_sum", "cat"):
            return self.weight_u.pow(2).mean()
        if self.construction == "cat_mlp":
            return self.user_mlp.weight.pow(2).mean()
        return self.weight_u.new_zeros(())

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items = self.forward()
        u = users[user]
        loss = bpr_loss((u * items[pos]).sum(1), (u * items[neg]).sum(1)) / math.log(2)  # -mean log2 sigmoid
        reg = sum(self.preference[m][user].pow(2).mean() for m in self.modalities) + self.fusion_regularizer()
        return loss + self.reg_weight * reg

    def inference_embeddings(self):
        return self.forward()
