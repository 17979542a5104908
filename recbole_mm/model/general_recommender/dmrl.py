"""DMRL: Disentangled Multimodal Representation Learning (Liu, Chen, Cheng, Liu, Nie, Kankanhalli;
"Disentangled Multimodal Representation Learning for Recommendation", IEEE TMM 2022, arXiv 2203.05406).

Every representation -- user ID ``u``, item ID ``i`` and one projection per content modality ``x_m``
(a two-layer LeakyReLU MLP of the L2-normalised feature) -- is split into ``K`` chunks ("factors")
of size ``f = D / K``. For factor ``k`` of a (user, item) pair, a neural attention shared by all
factors weighs the ``M`` item-side modalities (the item ID counts as modality 0):

    a_k = softmax(W_2 tanh(W_1 [u_k; i_k; x_1k; ...]/||[u_k; i_k; x_1k; ...]|| + b_1))   (attention)
    r_ui = sum_k sum_m a_km softplus(u_k . x_mk)                                          (preference)

Training: the paper's pairwise loss plus disentangling, ``L = sum softplus(-(r_ui - r_uj)) +
lambda_c L_dcor``; as in Cornac, ``j`` is the highest-scored of ``num_neg`` sampled negatives
(RecBole's ``train_neg_sample_args.sample_num``; ``1`` gives the paper's single negative), and
``L_dcor`` the distance correlation between every two factors of each representation (user ID,
item ID, every modality), computed over the batch's positive rows; the L2 term is the optimiser's
decoupled weight decay (AdamW), as in the Cornac code.

Followed from Cornac 3.x (``cornac.models.DMRL``, the public implementation we compare with): the
MLP width 150, the L2-normalised inputs (features and the attention's concatenation), the summed
(not averaged) ranking loss, the dCor clamps (1e-5) and its ``K (K + 1) / 2`` normaliser, AdamW.
Deliberately different: (a) Cornac weighs the image score with the *text* attention (index 1); we
give each modality its own weight ``a_km`` (the paper); (b) Cornac's dCor loop skips the last
factor (with ``K = 2`` its loss is 0); we sum over all factor pairs (the paper); (c) Cornac hard-codes
``decay_c = 1e-3`` whatever is passed; ours is ``dcor_weight``; (d) the dCor is computed on at most
``dcor_rows`` rows of the batch (its cost is quadratic in them; Cornac's default batch is 32 rows);
(e) no dropout on the attention's input (we evaluate ``W_1`` per user and per item, see
:class:`FactorModalityAttention`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.model.init import xavier_normal_initialization
from recbole.utils import InputType
from torch import nn

from recbole_mm.model.abstract_recommender import MultimodalRecommender


def split_factors(x: torch.Tensor, n_factors: int) -> torch.Tensor:
    """``(..., D)`` -> ``(..., K, D / K)``: the K disentangled chunks of a representation."""
    return x.view(*x.shape[:-1], n_factors, x.shape[-1] // n_factors)


class FactorModalityAttention(nn.Module):
    """DMRL's per-factor modality attention and preference (the disentangled-factor block).

    Inputs are factorised representations: the user ``u`` ``(..., K, f)`` and ``M`` item-side ones
    ``xs`` (item ID first, then the modalities) of the same shape. One attention net (``W_1``:
    ``(M + 1) f -> M``, tanh, ``W_2``: ``M -> M`` without bias, softmax) is shared by all factors.
    Its input is the L2-normalised concatenation ``z = [u_k; x_1k; ...; x_Mk]``; because
    ``W_1 z / ||z|| = (W_1^u u_k + sum_m W_1^m x_mk) / sqrt(||u_k||^2 + sum_m ||x_mk||^2)``, the
    user and item halves are computed separately, so full ranking never builds the concatenation
    for every (user, item) pair (only ``B x N x K x M`` attention logits).

    ``forward(u, xs)`` scores aligned rows (``u`` and ``xs`` both ``(R, K, f)``) -> ``(R,)``;
    ``forward(u, xs, all_pairs=True)`` scores ``B`` users against ``N`` items -> ``(B, N)``.
    ``attention(...)`` returns the weights ``a`` (``(R, K, M)`` or ``(B, N, K, M)``).
    """

    def __init__(self, factor_size: int, n_sources: int, dropout: float = 0.0):
        super().__init__()
        self.factor_size, self.n_sources = factor_size, n_sources
        self.hidden = nn.Linear((n_sources + 1) * factor_size, n_sources)  # W_1, b_1
        self.out = nn.Linear(n_sources, n_sources, bias=False)  # W_2
        self.dropout = nn.Dropout(dropout)

    def _halves(self, u, xs):
        w = self.hidden.weight.split(self.factor_size, dim=1)  # W_1^u, W_1^1, ..., W_1^M
        user_part = u @ w[0].T
        item_part = sum(x @ wm.T for x, wm in zip(xs, w[1:]))
        return user_part, u.square().sum(-1), item_part, sum(x.square().sum(-1) for x in xs)

    def attention(self, u, xs, all_pairs: bool = False):
        user_part, user_sq, item_part, item_sq = self._halves(u, xs)
        if all_pairs:  # (B, 1, K, .) against (1, N, K, .)
            user_part, user_sq = user_part.unsqueeze(1), user_sq.unsqueeze(1)
            item_part, item_sq = item_part.unsqueeze(0), item_sq.unsqueeze(0)
        norm = (user_sq + item_sq).sqrt().clamp_min(1e-12).unsqueeze(-1)  # F.normalize's eps
        logits = self.out(self.dropout(torch.tanh((user_part + item_part) / norm + self.hidden.bias)))
        return logits.softmax(-1)

    def forward(self, u, xs, all_pairs: bool = False):
        weights = self.attention(u, xs, all_pairs)
        if all_pairs:
            dots = torch.stack([torch.einsum("bkf,nkf->bnk", u, x) for x in xs], dim=-1)
        else:
            dots = torch.stack([(u * x).sum(-1) for x in xs], dim=-1)
        return (weights * F.softplus(dots)).sum((-1, -2))


def distance_correlation_matrix(factors: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """``(K, K)`` distance correlations between the K factors of ``factors`` ``(n, K, f)``.

    Per factor the ``n x n`` Euclidean distance matrix (``sqrt(max(d^2, eps))``) is double-centred
    (row, column and grand mean); ``dCov^2(k, l) = <A_k, A_l> / n^2`` (clamped at ``eps`` before the
    square root) and ``dCor(k, l) = dCov(k, l) / sqrt(dCov(k, k) dCov(l, l))`` (Szekely et al.)."""
    x = factors.transpose(0, 1)  # (K, n, f)
    sq = x.square().sum(-1)
    dist = (sq.unsqueeze(2) - 2 * x @ x.transpose(1, 2) + sq.unsqueeze(1)).clamp_min(eps).sqrt()
    centred = dist - dist.mean(2, keepdim=True) - dist.mean(1, keepdim=True) + dist.mean((1, 2), keepdim=True)
    n = x.shape[1]
    cov = (torch.einsum("knm,lnm->kl", centred, centred) / (n * n)).clamp_min(eps).sqrt()
    var = cov.diagonal()
    return cov / (var.unsqueeze(0) * var.unsqueeze(1)).sqrt()


def disentangle_loss(factor_sets, eps: float = 1e-5) -> torch.Tensor:
    """``sum`` over representations and over factor pairs ``k < l`` of ``dCor``, divided by
    ``K (K + 1) / 2`` (Cornac's normaliser)."""
    n_factors = factor_sets[0].shape[1]
    upper = torch.triu(torch.ones(n_factors, n_factors, dtype=torch.bool, device=factor_sets[0].device), 1)
    total = sum(distance_correlation_matrix(f, eps)[upper].sum() for f in factor_sets)
    return total / (n_factors * (n_factors + 1) / 2)


class DMRL(MultimodalRecommender):
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.n_factors = config["n_factors"]
        if self.embedding_size % self.n_factors:
            raise ValueError(f"DMRL: embedding_size {self.embedding_size} must be a multiple of "
                             f"n_factors {self.n_factors}")
        self.dcor_weight = config["dcor_weight"]
        self.dcor_rows = config["dcor_rows"]
        neg_args = config["train_neg_sample_args"] or {}
        self.num_neg = int(neg_args.get("sample_num", 1) or 1)
        dropout, hidden = config["dropout"], config["mlp_hidden_size"]

        self.user_embedding = nn.Embedding(self.n_users, self.embedding_size)
        self.item_embedding = nn.Embedding(self.n_items, self.embedding_size)
        self.encoders = nn.ModuleDict({
            m: nn.Sequential(nn.Dropout(dropout), nn.Linear(d, hidden), nn.LeakyReLU(), nn.Dropout(dropout),
                             nn.Linear(hidden, self.embedding_size), nn.LeakyReLU())
            for m, d in self.modality_dims().items()
        })
        self.attention = FactorModalityAttention(self.embedding_size // self.n_factors, 1 + len(self.modalities),
                                                 dropout)
        self.apply(xavier_normal_initialization)

    def _item_factors(self, items=None) -> list:
        """``[item ID, modality 1, ...]`` factorised, ``(n, K, f)`` each (all items if ``items`` is None)."""
        ids = self.item_embedding.weight if items is None else self.item_embedding(items)
        out = [ids]
        for m in self.modalities:
            feat = self.modality_feature(m) if items is None else self.modality_feature(m)[items]
            out.append(self.encoders[m](F.normalize(feat, dim=-1)))
        return [split_factors(x, self.n_factors) for x in out]

    def calculate_loss(self, interaction):
        users, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        n_pos = len(users) // self.num_neg  # RecBole repeats the batch once per sampled negative
        users, pos = users[:n_pos], pos[:n_pos]
        u = split_factors(self.user_embedding(users), self.n_factors)
        # one pass over the positives and all negatives: (1 + num_neg) * n_pos item rows
        items = self._item_factors(torch.cat([pos, neg]))
        u_all = u.repeat(1 + self.num_neg, 1, 1)
        scores = self.attention(u_all, items).view(1 + self.num_neg, n_pos)
        hardest_neg = scores[1:].max(0).values
        loss = F.softplus(-(scores[0] - hardest_neg)).sum()
        if self.dcor_weight > 0 and self.n_factors > 1:
            rows = min(n_pos, self.dcor_rows) if self.dcor_rows else n_pos
            loss = loss + self.dcor_weight * disentangle_loss([u[:rows]] + [x[:rows] for x in items])
        return loss

    def predict(self, interaction):
        items = self.eval_cached(self._item_factors)
        u = split_factors(self.user_embedding(interaction[self.USER_ID]), self.n_factors)
        idx = interaction[self.ITEM_ID]
        return self.attention(u, [x[idx] for x in items])

    def full_sort_predict(self, interaction):
        items = self.eval_cached(self._item_factors)
        u = split_factors(self.user_embedding(interaction[self.USER_ID]), self.n_factors)
        # the pairwise attention holds B x N x K x M values: score users in chunks of ~2^21 pairs
        step = max(1, (1 << 21) // max(self.n_items, 1))
        return torch.cat([self.attention(u[s:s + step], items, all_pairs=True)
                          for s in range(0, len(u), step)]).view(-1)
