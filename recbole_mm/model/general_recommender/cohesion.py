"""COHESION (Xu, Chen, Wang, Hu, Kim & Ngai, SIGIR 2025): "COHESION: Composite Graph Convolutional
Network with Dual-Stage Fusion for Multimodal Recommendation" (arXiv 2504.04452).

Branches ``b = 0..M``: the behaviour (ID) branch ``b = 0`` and one per modality, each with a user
preference table ``P_b`` and an item MLP ``g_b = Linear(d_b, 4d) -> LeakyReLU -> Linear(4d, d)``;
the ID branch's item input is a learned table ``E_id`` (``n_items x d``), a modality's its raw features.

* Early-stage fusion (refining every modality with the behaviour modality): the element-wise quadratic
  mean of the projected features and the ID table, ``e_b = sqrt((g_b(f_b)^2 + E_id^2) / 2 + eps)``
  (``eps = 1e-8``), then ``x_b = normalize([P_b; e_b])`` (row-wise L2).
* Composite GCN, heterogeneous part: per branch on the symmetric-normalised user-item graph ``Â``,
  layer-refined propagation ``h^{l+1} = cos(Â h^l, x_b) * Â h^l`` (row-wise cosine to the ego
  layer), ``h_b = x_b + sum_{l=1..L} h^l``, ``L = n_ui_layers``.
* Late-stage fusion: concatenation ``u = [h_0[u]; ...; h_M[u]]``, ``i = [h_0[i]; ...; h_M[i]]``.
* Composite GCN, homogeneous parts: the item-item graph ``S`` (each modality's top-``knn_k`` cosine
  KNN graph of the raw features, binary, sym-normalised, mixed with ``modality_weights``; FREEDOM's /
  DRAGON's) gives ``i <- i + S^{n_mm_layers} i``; the user-user graph (top-``user_knn_k`` training
  co-occurrence, softmax weights over the counts, short lists padded by repeats redrawn every epoch
  as DualGNN / DRAGON) gives ``u <- u + sum_v w_uv v``.
* Adaptive optimisation: per-branch scores ``s_b = <u_b, i_b>``; a branch that already separates the
  positive from the negative well gets less weight, ``w = 1 - softmax_b(s_b(pos) - s_b(neg))`` (no
  gradient through ``w``); ``s = sum_b w_b s_b``; loss ``-mean log2 sigmoid(s_pos - s_neg)`` plus
  ``reg_weight sum_{b>0} mean(P_b[u]^2)``. Scoring (evaluation) is the plain dot product ``<u, i>``.

Followed from the official code (github.com/Jinfeng-Xu/COHESION, ``src/models/cohesion.py``, MMRec
based) where the paper is silent or differs: the ID branch also has its MLP and is fused with itself
(``sqrt((g_0(E_id)^2 + E_id^2) / 2)``); the ID branch's output enters the scores *detached*
(``detach_id``), so ``P_0`` and ``g_0`` are never trained and ``E_id`` learns only through the modality
branches' early fusion; the late fusion is the plain concatenation (the per-user weights the code
creates enter only a reg term, never a score: left out, so the official loss is higher by
``reg_weight * mean(a^2)``, ~``reg_weight / 4`` with two modalities); the GCN input is the raw
features; ``dropout`` > 0 (official grid: 0) resamples a degree-sensitively pruned user-item graph each
epoch for training. Differences: evaluation uses embeddings recomputed with the final parameters on the
full graph, not those of the last training batch; MMRec's ``mm_adj_{knn_k}.pt`` cache ignores
``mm_image_weight`` (ours is keyed by features and options). MMRec's order is (ID, image, text), ours
ID then the dataset yaml's ``modalities`` order (a permutation of the blocks: same scores).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import propagate, refined_propagate, spmm
from recbole_mm.model.loss import bpr_loss


def quadratic_mean_fusion(features: torch.Tensor, behaviour: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """COHESION's early fusion: ``sqrt((features^2 + behaviour^2) / 2 + eps)``, element-wise."""
    return ((features.pow(2) + behaviour.pow(2)) / 2 + eps).sqrt()


def adaptive_block_weights(user: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, n_blocks: int) -> torch.Tensor:
    """``(B, n_blocks)`` weights ``1 - softmax_b(<u_b, p_b> - <u_b, n_b>)`` over equal-width blocks of the
    last dimension, without gradient (COHESION's adaptive optimisation)."""
    def block_scores(items):
        return (user * items).view(len(user), n_blocks, -1).sum(-1)

    return 1 - torch.softmax(block_scores(pos) - block_scores(neg), dim=1).detach()


class COHESION(MultimodalRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = d = config["embedding_size"]
        self.n_ui_layers, self.n_mm_layers = config["n_ui_layers"], config["n_mm_layers"]
        self.reg_weight, self.dropout = config["reg_weight"], config["dropout"]
        self.detach_id = bool(config["detach_id"])
        self.user_knn_k, self.user_aggr_mode = config["user_knn_k"], config["user_aggr_mode"]
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"COHESION: dropout must be in [0, 1), got {self.dropout}")
        self.n_blocks = len(self.modalities) + 1

        # branch 0 = behaviour (ID), then one per modality
        self.id_feat = nn.Parameter(nn.init.xavier_normal_(torch.empty(self.n_items, d)))
        self.preference = nn.ParameterList(
            [nn.Parameter(nn.init.xavier_normal_(torch.empty(self.n_users, d))) for _ in range(self.n_blocks)])
        dims = [d] + [self.modality_dims()[m] for m in self.modalities]
        self.mlp = nn.ModuleList([nn.Sequential(nn.Linear(dim, 4 * d), nn.LeakyReLU(), nn.Linear(4 * d, d))
                                  for dim in dims])

        self.adj = self.ui_graph()
        self.train_adj = self.adj
        self.mm_graph = self.mixed_knn_graph(config["knn_k"], config["modality_weights"])
        self.register_epoch_user_graph(self.user_knn_k, self.user_aggr_mode)
        self.pre_epoch_processing()

    def pre_epoch_processing(self):
        """Redraw the user graph's padding (official ``topk_sample``) and, with ``dropout``, the pruned graph."""
        self.redraw_user_graph()
        if self.dropout > 0:
            self.train_adj = self.pruned_ui_graph(1.0 - self.dropout)

    # -- model blocks ------------------------------------------------------------------------------
    def branch_inputs(self) -> list:
        """``[x_b]``: early fusion with the ID table, then ``normalize([P_b; e_b])``, ID branch first."""
        feats = [self.id_feat] + [self.modality_feature(m) for m in self.modalities]
        return [F.normalize(torch.cat([p, quadratic_mean_fusion(mlp(f), self.id_feat)]), dim=1)
                for p, mlp, f in zip(self.preference, self.mlp, feats)]

    def branch_representations(self, adj) -> list:
        """``[h_b]``: ``x_b`` plus its layer-refined propagation on the user-item graph ``adj``."""
        reps = [x + refined_propagate(adj, x, self.n_ui_layers) if self.n_ui_layers else x
                for x in self.branch_inputs()]
        if self.detach_id:
            reps[0] = reps[0].detach()  # official: the ID branch's output enters as ``.data``
        return reps

    def forward(self, adj=None):
        reps = self.branch_representations(self.adj if adj is None else adj)
        users = torch.cat([h[: self.n_users] for h in reps], dim=1)
        items = torch.cat([h[self.n_users:] for h in reps], dim=1)
        items = items + propagate(self.mm_graph, items, self.n_mm_layers)
        return users + spmm(self.user_adj, users), items

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items = self.forward(self.train_adj)
        u, p, n = users[user], items[pos], items[neg]
        w = adaptive_block_weights(u, p, n, self.n_blocks).repeat_interleave(self.embedding_size, dim=1)
        loss = bpr_loss((u * p * w).sum(1), (u * n * w).sum(1)) / math.log(2)  # -mean log2 sigmoid
        reg = sum(self.preference[b][user].pow(2).mean() for b in range(1, self.n_blocks))
        return loss + self.reg_weight * reg

    def inference_embeddings(self):
        return self.forward(self.adj)
