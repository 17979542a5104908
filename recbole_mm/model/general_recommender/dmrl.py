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

Cost: the dCor dominates a step (``(1 + M) K`` distance matrices of ``dcor_rows^2``); it is computed
for all representations at once, with the double-centred Gram's backward written out
(:func:`recbole_mm.model.loss.disentangle_loss`), and the item encoders run once per distinct batch item.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.model.init import xavier_normal_initialization
from recbole.utils import InputType
from torch import nn

from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import FactorModalityAttention, split_factors
from recbole_mm.model.loss import disentangle_loss


class DMRL(MultimodalRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
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
        self.dropout = dropout

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
        """``[item ID, modality 1, ...]`` factorised, ``(n, K, f)`` each (all items if ``items`` is None).

        Without dropout the encoders are row-wise functions: they run once per distinct item of
        ``items`` (a batch repeats items: 5 x 512 rows of 1.4k lfm2k items) and are gathered back."""
        ids = self.item_embedding.weight if items is None else self.item_embedding(items)
        inverse = None
        if items is not None and not (self.training and self.dropout > 0):
            items, inverse = torch.unique(items, return_inverse=True)
        out = [ids]
        for m in self.modalities:
            feat = self.modality_feature(m) if items is None else self.modality_feature(m).index_select(0, items)
            enc = self.encoders[m](F.normalize(feat, dim=-1))
            out.append(enc if inverse is None else enc.index_select(0, inverse))
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
