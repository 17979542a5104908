"""IDFREE (Li et al., ACM MM 2025, arXiv 2507.05715): "From ID-based to ID-free: Rethinking ID
Effectiveness in Multimodal Collaborative Filtering Recommendation".

No user or item ID table: every representation is computed from content and the graph.

* Content representations, per modality m: an item's are its (fine-tuned) raw features ``x_i^m``, a
  user's the mean of the raw features of the items it trained on (fixed). Both go through one shared
  encoder ``h^m = LayerNorm(tanh(W_m x + b_m)) + PE`` with the sinusoidal positional code
  ``PE(p)`` of the node's index (users and items counted separately; ``pe: False`` drops it).
* Fusion: ``e^0 = alpha h^a + (1 - alpha) h^o`` with ``alpha = m_alpha``, ``a`` the anchor modality
  (``anchor_modality``, the official code's text; the first one when absent) and ``o`` the others'
  mean (one modality: ``e^0 = h^a``).
* Augmented graph (``auige``): the user-item graph plus a user-user and an item-item graph, each the
  sum over modalities of top-``knn_k`` cosine KNN graphs of the raw (user-mean) features, weights
  ``s_uv`` = the cosines, self included.
* Adaptive similarity graph (``asg``), training: every KNN edge is re-weighted,
  ``w_uv = s_uv sigmoid(<relu(F1 h^a_u), relu(F2 h^o_v)>)``, one scorer for users and one for items.
  At inference the user-user / item-item graphs are instead the KNN graphs (cosine weights) of the
  current fused ``e^0`` (the official code's choice; ``asg: False`` keeps the raw-feature graphs).
* Training-time edge dropout: ``int(|E| (1 - dropout))`` edges of the whole augmented graph kept,
  sampled without replacement with ``p_e`` proportional to the edge weight; then
  ``D^-1/2 A D^-1/2`` with row-sum degrees and ``d^-1/2`` clipped to at most 10 (the official code;
  a node without edges gets 10, not 0). The full graph, normalised the same way, at inference.
* LightGCN over it: ``E = mean(e^0, A e^0, ..., A^L e^0)`` (``gcn_layers`` = L); scores ``<e_u, e_i>``.
* Loss: the softmax loss on cosines, with the official code's broadcast: every user of the batch
  against all B sampled negatives, ``mean_u log sum_j exp((cos(e_u, e_j-) - cos(e_u, e_u+)) / tau)``,
  plus ``lamda`` x the modality alignment InfoNCE (anchor -> each other modality, temperature tau)
  of the batch users' and positive items' ``h^m``.

Written from the official code (G-H-Li/IDFREE, src/models/idfree.py; the paper's text was not at
hand, so the equations above are unnumbered), including what only the code fixes: the broadcast
softmax loss, the inference-time KNN of the fused representations, the clipped normalisation,
``int(|E| (1 - dropout))`` kept edges, cosine training vs. dot-product scoring. Its KNN similarities
are constants (the edge scorer copies the sparse values, which carry no gradient), so its trainer's
``retain_graph=True`` changes nothing and we need none.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_mm.data import graphs
from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import edge_propagate, sinusoidal_encoding
from recbole_mm.model.loss import info_nce


# -- generic blocks (shared candidates) -----------------------------------------------------------
def clipped_sym_norm(rows, cols, values, n: int, max_inv: float = 10.0) -> torch.Tensor:
    """Edge values of ``D^-1/2 A D^-1/2``, ``D`` the row sums, ``d^-1/2`` clipped to ``max_inv``
    (so a zero degree gives ``max_inv``): differentiable in ``values`` (degrees included)."""
    deg = torch.zeros(n, dtype=values.dtype, device=values.device).index_add(0, rows, values)
    inv = deg.clamp_min(max_inv ** -2).pow(-0.5)  # = min(deg^-1/2, max_inv), with a finite gradient
    return inv[rows] * values * inv[cols]


def weighted_edge_sample(values: torch.Tensor, keep_ratio: float) -> torch.Tensor:
    """Indices of ``int(|E| keep_ratio)`` edges drawn without replacement, ``p_e`` proportional to the
    (non-negative part of the) edge value; all edges when that is every edge."""
    n_keep = int(values.numel() * keep_ratio)
    if n_keep >= values.numel():
        return torch.arange(values.numel(), device=values.device)
    return torch.multinomial(values.detach().clamp_min(0.0), n_keep, replacement=False)


def edge_lightgcn(rows, cols, values, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN's layer mean over a graph given as an edge list whose values carry a gradient."""
    layers = [ego]
    for _ in range(n_layers):
        layers.append(edge_propagate(rows, cols, values, layers[-1], 1))
    return torch.stack(layers).mean(0)


def batch_softmax_loss(user: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor, tau: float) -> torch.Tensor:
    """``mean_a log sum_b exp((cos(u_a, n_b) - cos(u_a, p_a)) / tau)``: each user against every
    sampled negative of the batch (the positive is not in the sum)."""
    user, pos, neg = (F.normalize(x, dim=-1) for x in (user, pos, neg))
    margin = user @ neg.T - (user * pos).sum(1, keepdim=True)
    return torch.logsumexp(margin / tau, dim=1).mean()


class EdgeScorer(nn.Module):
    """ASG's edge re-weighting ``w_uv = s_uv sigmoid(<relu(F1 a_u), relu(F2 b_v)>)``."""

    def __init__(self, dim: int):
        super().__init__()
        self.src, self.dst = nn.Linear(dim, dim), nn.Linear(dim, dim)

    def forward(self, rows, cols, a, b, base):
        score = (F.relu(self.src(a))[rows] * F.relu(self.dst(b))[cols]).sum(1)
        return base * torch.sigmoid(score)


class IDFREE(MultimodalRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        dim = config["embedding_size"]
        self.n_layers, self.knn_k, self.tau = config["gcn_layers"], config["knn_k"], config["tau"]
        self.dropout, self.lamda = config["dropout"], config["lamda"]
        self.asg, self.auige, self.pe = config["asg"], config["auige"], config["pe"]
        anchor = config["anchor_modality"]
        self.anchor = anchor if anchor in self.modalities else self.modalities[0]
        self.others = [m for m in self.modalities if m != self.anchor]
        self.alpha = config["m_alpha"] if self.others else 1.0

        self.features = self.feature_tables(trainable=True)  # the official code fine-tunes them
        to_users = self.interaction_matrix("rw")  # mean over a user's training items
        self.encoders = nn.ModuleDict()
        uu, ii = [], []
        for m in self.modalities:
            feat = self.modality_feature(m)
            users = to_users @ feat
            self.register_buffer(f"user_feat_{m}", users, persistent=False)
            self.encoders[m] = nn.Sequential(nn.Linear(feat.shape[1], dim), nn.Tanh(), nn.LayerNorm(dim))
            ii.append(self._knn(feat.cpu()))
            uu.append(self._knn(users.cpu()))
        n = self.n_users + self.n_items
        self._edge_buffers("uu", self._sum(uu))
        self._edge_buffers("ii", self._sum(ii))
        users, items = self.train_users, self.train_items + self.n_users
        ui = graphs.sparse(torch.cat([users, items]), torch.cat([items, users]), torch.ones(2 * len(users)), (n, n))
        self._edge_buffers("ui", ui)
        self.register_buffer("pe_user", sinusoidal_encoding(torch.arange(self.n_users) - 1, dim), persistent=False)
        self.register_buffer("pe_item", sinusoidal_encoding(torch.arange(self.n_items) - 1, dim), persistent=False)
        self.user_scorer, self.item_scorer = EdgeScorer(dim), EdgeScorer(dim)

    def _knn(self, features: torch.Tensor) -> torch.Tensor:
        """Top-k cosine KNN (weights = cosines, self included) over rows 1.. (row 0 = padding)."""
        return graphs.item_knn_graph(features, self.knn_k, normalization="none", weighted=True,
                                     backend=self.knn_backend)

    @staticmethod
    def _sum(coos):
        return sum(coos[1:], coos[0]).coalesce()  # one graph per modality, weights add up

    def _edge_buffers(self, name: str, coo: torch.Tensor) -> None:
        coo = coo.coalesce()
        self.register_buffer(f"{name}_idx", coo.indices(), persistent=False)
        self.register_buffer(f"{name}_val", coo.values(), persistent=False)

    # -- representations ------------------------------------------------------------------------
    def modality_representations(self):
        """``({m: h^m_users}, {m: h^m_items})``: encoded content (+ the positional code)."""
        users, items = {}, {}
        for m in self.modalities:
            users[m] = self.encoders[m](getattr(self, f"user_feat_{m}"))
            items[m] = self.encoders[m](self.features[m].weight)
            if self.pe:
                users[m], items[m] = users[m] + self.pe_user, items[m] + self.pe_item
        return users, items

    def _other(self, reps):
        return reps[self.anchor] if not self.others else torch.stack([reps[m] for m in self.others]).mean(0)

    def _fuse(self, reps):
        return reps[self.anchor] if not self.others else self.alpha * reps[self.anchor] + (1 - self.alpha) * self._other(reps)

    def _graph(self, users, items, u0, i0, train: bool):
        """``(rows, cols, values)`` of the augmented graph on users then items (items offset by n_users)."""
        parts = [(self.ui_idx, self.ui_val)]
        if self.auige:
            if self.asg and train:
                uu = self.user_scorer(*self.uu_idx, users[self.anchor], self._other(users), self.uu_val)
                ii = self.item_scorer(*self.ii_idx, items[self.anchor], self._other(items), self.ii_val)
                uu, ii = (self.uu_idx, uu), (self.ii_idx, ii)
            elif self.asg:
                uu, ii = (self._knn(u0.detach()).coalesce(), self._knn(i0.detach()).coalesce())
                uu, ii = (uu.indices(), uu.values()), (ii.indices(), ii.values())
            else:
                uu, ii = (self.uu_idx, self.uu_val), (self.ii_idx, self.ii_val)
            parts += [uu, (ii[0] + self.n_users, ii[1])]
        idx = torch.cat([p[0] for p in parts], dim=1)
        return idx[0], idx[1], torch.cat([p[1] for p in parts])

    def forward(self, train: bool = True):
        users, items = self.modality_representations()
        u0, i0 = self._fuse(users), self._fuse(items)
        rows, cols, values = self._graph(users, items, u0, i0, train)
        if train and self.dropout > 0:
            kept = weighted_edge_sample(values, 1.0 - self.dropout)
            rows, cols, values = rows[kept], cols[kept], values[kept]
        values = clipped_sym_norm(rows, cols, values, self.n_users + self.n_items)
        h = edge_lightgcn(rows, cols, values, torch.cat([u0, i0]), self.n_layers)
        return h[: self.n_users], h[self.n_users:], users, items

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        u_g, i_g, users, items = self.forward(train=True)
        loss = batch_softmax_loss(u_g[user], i_g[pos], i_g[neg], self.tau)
        if self.lamda:
            for m in self.others:
                loss = loss + self.lamda * (info_nce(users[self.anchor][user], users[m][user], self.tau)
                                            + info_nce(items[self.anchor][pos], items[m][pos], self.tau))
        return loss

    def inference_embeddings(self):
        with torch.no_grad():
            u_g, i_g, _, _ = self.forward(train=False)
        return u_g, i_g
