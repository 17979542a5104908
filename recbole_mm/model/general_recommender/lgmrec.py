"""LGMRec (Guo et al., AAAI 2024): "LGMRec: Local and Global Graph Learning for Multimodal Recommendation".

* Local graph embeddings: collaborative (LightGCN over IDs, Eq. 3) plus, per modality, item
  features ``f_m W_m`` with users as the mean of their items, propagated over the user-item graph
  (``n_mm_layers``, Eq. 4-5); ``local = cge + sum_m normalize(mge_m)``.
* Global hypergraph embeddings (Eq. 6-9): ``hyper_num`` learnable hyperedges per modality;
  item-hyperedge memberships ``softmax(f_m H_m / τ)`` (Gumbel noise while training), user
  memberships from their items; hypergraph convolution of the collaborative item embeddings
  (``n_hyper_layer``, with edge dropout ``1 - keep_rate``). ``final = local + alpha normalize(global)``.
* Loss: BPR + ``cl_weight`` x cross-modal hypergraph contrast (InfoNCE of a user's/item's
  hyper-embeddings in two modalities against all users/items, summed over the batch; every
  modality pair) + ``reg_weight`` x ``EmbLoss`` of the batch.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from recbole.model.loss import EmbLoss
from recbole.utils import InputType
from torch import nn

from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import lightgcn_propagate, propagate, split_users_items
from recbole_mm.model.loss import bpr_loss


class LGMRec(MultimodalRecommender):
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = self.embedding_size = config["embedding_size"]
        # depths: collaborative, modality and hypergraph convolutions
        self.n_ui_layers, self.n_mm_layers, self.n_hyper_layer = (config["n_ui_layers"], config["n_mm_layers"],
                                                                   config["n_hyper_layer"])
        self.alpha = config["alpha"]  # weight of the global embeddings
        self.cl_weight, self.reg_weight = config["cl_weight"], config["reg_weight"]
        self.tau = config["hyper_temperature"]
        self.eval_memberships, self.eval_samples = config["eval_memberships"], config["eval_samples"]
        if self.eval_memberships not in ("sampled", "soft"):
            raise ValueError(f"config key 'eval_memberships' must be sampled or soft, got {self.eval_memberships!r}")
        self.eval_seed = config["seed"]

        self.init_id_embeddings(d)
        dims = self.modality_dims()
        self.feat_proj = nn.ParameterDict({
            m: nn.Parameter(nn.init.xavier_uniform_(torch.empty(dims[m], d))) for m in dims})
        self.hyperedges = nn.ParameterDict({
            m: nn.Parameter(nn.init.xavier_uniform_(torch.empty(dims[m], config["hyper_num"]))) for m in dims})
        self.edge_dropout = nn.Dropout(1 - config["keep_rate"])
        self.reg_loss = EmbLoss()

        self.adj = self.ui_graph()
        self.R = self.interaction_matrix(normalization="none")
        self.R_mean = self.interaction_matrix(normalization="rw")

    def _memberships(self, logits, generator=None):
        """Soft hyperedge memberships: a Gumbel-softmax sample while training (Eq. 7), at inference a
        sample from ``generator`` (``eval_memberships: sampled``) or the noise-free
        ``softmax(logits / tau)`` (``soft``)."""
        if self.training:
            return F.gumbel_softmax(logits, tau=self.tau, dim=1, hard=False)
        if generator is None:
            return torch.softmax(logits / self.tau, dim=1)
        gumbels = -torch.empty_like(logits).exponential_(generator=generator).log()
        return torch.softmax((logits + gumbels) / self.tau, dim=1)

    def _hypergraph(self, cge_items, generator=None) -> dict:
        """``{modality: (users, items)}`` hypergraph embeddings (Eq. 6-9) of one membership draw."""
        hyper = {}
        for m in self.modalities:
            i_logits = self.modality_feature(m) @ self.hyperedges[m]
            i_member = self._memberships(i_logits, generator)
            u_member = self._memberships(self.R @ i_logits, generator)
            i_member, u_member = self.edge_dropout(i_member), self.edge_dropout(u_member)
            i_ret = cge_items
            for _ in range(self.n_hyper_layer):
                edges = i_member.T @ i_ret
                i_ret, u_ret = i_member @ edges, u_member @ edges
            hyper[m] = (u_ret, i_ret)
        return hyper

    def forward(self, generator=None, samples: int = 1):
        """``(final, hyper)``; at inference with ``generator`` the global part averages ``samples``
        membership draws (one draw while training)."""
        cge = lightgcn_propagate(self.adj, self.id_embeddings(), self.n_ui_layers)
        local = cge
        for m in self.modalities:
            item_feats = self.modality_feature(m) @ self.feat_proj[m]
            mge = propagate(self.adj, torch.cat([self.R_mean @ item_feats, item_feats]), self.n_mm_layers)
            local = local + F.normalize(mge, dim=1)
        glob = None
        for _ in range(samples):
            hyper = self._hypergraph(cge[self.n_users:], generator)
            draw = sum(torch.cat(h) for h in hyper.values())
            glob = draw if glob is None else glob + draw
        if samples > 1:
            glob = glob / samples
        return local + self.alpha * F.normalize(glob, dim=1), hyper

    def _contrast(self, a, b, all_b):
        a, b, all_b = F.normalize(a, dim=1), F.normalize(b, dim=1), F.normalize(all_b, dim=1)
        pos = (a * b).sum(1) / self.tau
        return -(pos - torch.logsumexp(a @ all_b.T / self.tau, dim=1)).sum()

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        final, hyper = self.forward()
        users, items = split_users_items(final, self.n_users)
        u, p, n = users[user], items[pos], items[neg]
        loss = bpr_loss((u * p).sum(1), (u * n).sum(1))
        cl = 0.0
        for a, b in itertools.combinations(self.modalities, 2):
            (ua, ia), (ub, ib) = hyper[a], hyper[b]
            cl = cl + self._contrast(ua[user], ub[user], ub) + self._contrast(ia[pos], ib[pos], ib)
        return loss + self.cl_weight * cl + self.reg_weight * self.reg_loss(u, p, n)

    def inference_embeddings(self):
        if self.eval_memberships == "soft":
            return split_users_items(self.forward()[0], self.n_users)
        # scores from memberships distributed as in training, drawn from a fixed seed (reproducible)
        generator = torch.Generator(device=self.device).manual_seed(self.eval_seed)
        return split_users_items(self.forward(generator, self.eval_samples)[0], self.n_users)
