"""DualGNN (Wang, Wei, Yin, Wu, Song & Nie, IEEE Transactions on Multimedia 2021; vol. 25, 2023):
"DualGNN: Dual Graph Neural Network for Multimedia Recommendation".

* Single-modal representation learning, on the user-item graph of each modality ``m``: a user
  preference table ``P_m`` and an item MLP ``Linear(d_m, 4d) -> LeakyReLU -> Linear(4d, d)`` give
  ``x_m = normalize([P_m; MLP_m(f_m)])`` (row-wise L2), then ``h_m = sum_{l=0..L} Â^l x_m`` with the
  symmetric-normalised user-item adjacency ``Â`` (the official ``x + Âx + Â²x``: ``L = n_ui_layers = 2``).
* Multimodal fusion, the paper's / official code's options (``construction``): items
  ``i = sum_m h_m[i]``; users ``weighted_sum`` ``u = sum_m a_um h_m[u]`` with learned per-user modality
  weights ``a_u`` (softmax-initialised, then free, as the official code), ``mean``, ``weighted_max``
  ``max_m a_um h_m[u]``, ``cat_mlp`` ``W [a_u1 h_1[u]; ...; a_uM h_M[u]]``; ``cat`` (DRAGON's) keeps the
  weighted concatenation and concatenates the items too.
* User co-occurrence graph aggregation: ``u <- u + sum_{v in N_K(u)} w_uv v`` over the ``K = user_knn_k``
  users sharing most training items with ``u``; ``w_u = softmax`` of the co-occurrence counts
  (``user_aggr_mode: softmax``) or ``1/K`` (``mean``). Built by us from the training split
  (:meth:`~recbole_mm.model.abstract_recommender.MultimodalRecommender.sampled_user_graph`, no
  ``user_graph_dict.npy``); a user with fewer than ``K`` neighbours has its list padded by random repeats,
  redrawn every epoch as the official ``topk_sample`` does (fixed within an epoch: inference is deterministic;
  the draw's seed is saved with the parameters, so a reloaded checkpoint scores with its epoch's graph).
* Loss: BPR with a base-2 log as the official code, ``-mean log2 sigmoid(s_pos - s_neg)``, plus
  ``reg_weight (sum_m mean(P_m[u]^2) + mean(a^2))`` (``cat_mlp``: ``mean(W^2)``; ``mean``/``weighted_max``:
  no fusion term).

Followed from MMRec (``src/models/dualgnn.py``) where it matters for accuracy: with ``mmrec_fusion_alias``
(default) ``weighted_sum`` / ``weighted_max`` see the first modality's user part as the *sum* of all
modalities, as MMRec's in-place ``representation += t_rep`` aliases it (``u = a_u1 sum_m h_m[u] +
sum_{m>1} a_um h_m[u]``); the official DualGNN code has no such alias (False). MMRec's order is (image,
text) and ours the dataset yaml's ``modalities`` order: the first listed plays MMRec's image slot.
Differences: MMRec scores evaluation with the embeddings of the last training batch, we recompute them
with the final parameters; the official item weights ``weight_i``, which enter only a reg term and never a
score, are left out (MMRec's loss is higher by ``reg_weight * mean(weight_i^2)`` ~ ``reg_weight / M^2`` per
batch); the node-dropping masks the official code builds are unused there, and not built here.
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
    scores_cold_items = True  # items are scored from their content features (cold_items)
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
        self.register_epoch_user_graph(self.user_knn_k, self.user_aggr_mode)
        self.pre_epoch_processing()

    def pre_epoch_processing(self):
        """Redraw the padding of the user co-occurrence graph (the official per-epoch ``topk_sample``)."""
        self.redraw_user_graph()

    # -- model blocks ------------------------------------------------------------------------------
    def modality_representations(self) -> list:
        """``[h_m]``, each ``(n_users + n_items, d)``: single-modal propagation on the user-item graph."""
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
