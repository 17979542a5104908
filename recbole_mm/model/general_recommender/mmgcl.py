"""MMGCL (Yi, Wang, Ounis & Macdonald, SIGIR 2022): "Multi-modal Graph Contrastive Learning for
Micro-video Recommendation".

No MMRec reference exists, and the paper's full text was not at hand (its abstract and a summary
were): the model follows the paper's description -- modality edge dropout and modality masking as
the two views, a modality-swapped negative -- and, for what that leaves open (encoder, fusion,
which pairs are contrasted), a public MMGCL code (a ``GeneralRecommender`` with ``ssl_task:
ED+MM+CN``, of the SLMRec lineage), read, not copied. Where the two differ, see below. The paper
numbers no equations we could check, so none are cited.

* Encoder: one LightGCN branch per view ``b`` -- the ID branch (user and item ID embeddings) and
  one per modality ``m``, whose item inputs are ``x_i^m = W_m f̂_i^m + b_m`` (L2-normalised features)
  and whose user inputs are the shared user ID embeddings:
  ``H_b = mean(H_b^0, Â H_b^0, ..., Â^L H_b^0)`` on the sym-normalised user-item graph ``Â``.
* Fusion and score: ``z_u = W_u [h_u^id; h_u^m1; ...] + c_u``, ``z_i = W_i [h_i^id; ...] + c_i``;
  ``ŷ_ui = <z_u, z_i>``; the main task is BPR (``L_rec``).
* Views, drawn afresh for every batch from the global RNG
  (:mod:`recbole_mm.model.augment`):
  - modality edge dropout (view 1): every branch (ID included) propagates over its own,
    independently edge-dropped graph (rate ``edge_dropout``, re-normalised on the kept degrees);
    the public code shares one dropped graph across the branches -- the paper drops per modality;
  - modality masking (view 2): one modality ``m ~ p_m`` (``mask_p``; uniform by default) has its
    item inputs replaced by randomly initialised embeddings (``mask_mode``) at the input layer,
    the other branches unchanged (the public code instead node-drops that branch's graph).
* Contrast (each user-item pair gives two anchors, the user and the item): the
  user of view 1 against its positive item of view 2, over the batch's items, and the item of
  view 1 against the user of view 2, over the batch's users -- InfoNCE on cosines at temperature
  ``τ`` (``ssl_temp``). The public code pairs view-1 users with view-1 and view-2 items; an SGL-style
  same-node contrast (z'_u vs z''_u) was tried and made lfm2k's valid Recall@20 fall (0.06 -> 0.05
  over 2 epochs, vs 0.12 -> 0.21 over 3 for this pairing).
* Negative sampling: each positive gets one hard negative, itself with one modality
  branch (drawn uniformly) swapped -- the item's with the BPR-sampled negative item's (as in the
  public code), the user's with another batch user's (the batch rolled by one) -- added to the
  InfoNCE denominator (:func:`info_nce_hard`). The public code computes this term but never adds
  it to its loss; we add it (``hard_negative: False`` leaves it out).
* Objective: ``L = L_rec + λ (L_ssl^user + L_ssl^item)``, ``λ = ssl_alpha``; Adam weight decay as
  the only L2 (the public code has no explicit regulariser).
* Inference: the full graph, no augmentation.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_mm.model import augment
from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import ModalityProjector, lightgcn_propagate, split_users_items
from recbole_mm.model.loss import bpr_loss, row_logsumexp


def info_nce_hard(a: torch.Tensor, b: torch.Tensor, hard: torch.Tensor | None, temperature: float) -> torch.Tensor:
    """In-batch InfoNCE with one extra negative per anchor (MMGCL's negative sampling).

    ``-mean_i log( e^{c(a_i,b_i)/t} / (sum_j e^{c(a_i,b_j)/t} + e^{c(a_i,h_i)/t}) )`` on cosines ``c``;
    ``hard=None`` is the plain in-batch InfoNCE. A generic block (shared candidate).
    """
    a, b = F.normalize(a, dim=-1) / temperature, F.normalize(b, dim=-1)
    extra = None if hard is None else (a * F.normalize(hard, dim=-1)).sum(-1)
    if 1.0 / temperature >= 43:  # e^{-2/t} would underflow: autograd's max-shifted form
        logits = a @ b.T if extra is None else torch.cat([a @ b.T, extra.unsqueeze(1)], 1)
        lse = torch.logsumexp(logits, 1)
    else:
        lse = row_logsumexp(a, [b], 1.0 / temperature, extra) + 1.0 / temperature  # bounded logits: no max pass
    return (lse - (a * b).sum(-1)).mean()


def swap_block(x: torch.Tensor, block: torch.Tensor, k: int) -> torch.Tensor:
    """``x`` (rows, n_blocks * w) with its column block ``k`` replaced by ``block`` (rows, w)."""
    w = block.shape[1]
    return torch.cat([x[:, :k * w], block, x[:, (k + 1) * w:]], 1)


class MMGCL(MultimodalRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.ssl_alpha, self.ssl_temp = config["ssl_alpha"], config["ssl_temp"]
        self.edge_dropout = config["edge_dropout"]
        self.mask_mode, self.hard_negative = config["mask_mode"], bool(config["hard_negative"])
        self.mask_p = self.modality_weights(config["mask_p"])  # {modality: p_m}, summing to one
        if self.mask_mode not in augment.MASK_MODES:
            raise ValueError(f"mask_mode must be one of {augment.MASK_MODES}, got {self.mask_mode!r}")
        self.n_branches = len(self.modalities) + 1  # the ID branch, then the modalities

        self.init_id_embeddings(d)
        self.projector = ModalityProjector(self.modality_dims(), d)
        for layer in self.projector.proj.values():
            nn.init.xavier_uniform_(layer.weight)
        self.read_user, self.read_item = nn.Linear(d * self.n_branches, d), nn.Linear(d * self.n_branches, d)
        nn.init.xavier_uniform_(self.read_user.weight)
        nn.init.xavier_uniform_(self.read_item.weight)
        self.adj = self.ui_graph()

    def item_inputs(self) -> dict:
        """``{modality: (n_items, d)}`` projected, L2-normalised features (the branches' item inputs)."""
        return self.projector({m: F.normalize(self.modality_feature(m), dim=1) for m in self.modalities})

    def ego(self, inputs: dict) -> torch.Tensor:
        """``(n_users + n_items, d * n_branches)``: every branch's ``H^0`` side by side."""
        users = self.user_embedding.weight.repeat(1, self.n_branches)
        items = torch.cat([self.item_embedding.weight] + [inputs[m] for m in self.modalities], 1)
        return torch.cat([users, items])

    def branch(self, ego: torch.Tensor, k: int) -> torch.Tensor:
        return ego[:, k * self.embedding_size:(k + 1) * self.embedding_size]

    def propagate(self, ego: torch.Tensor, graphs=None) -> torch.Tensor:
        """Layer-mean LightGCN of all branches: one block product on ``Â``, or branch ``k`` on ``graphs[k]``."""
        if graphs is None:
            return lightgcn_propagate(self.adj, ego, self.n_layers)
        return torch.cat([lightgcn_propagate(g, self.branch(ego, k), self.n_layers) for k, g in enumerate(graphs)], 1)

    def fuse(self, h: torch.Tensor):
        users, items = split_users_items(h, self.n_users)
        return self.read_user(users), self.read_item(items)

    def views(self, ego: torch.Tensor, full: torch.Tensor, inputs: dict):
        """The two augmented propagations: modality edge dropout, modality masking."""
        dropped = augment.modality_edge_dropout(self.adj, range(self.n_branches), self.edge_dropout)
        view1 = self.propagate(ego, [dropped[k] for k in range(self.n_branches)])
        masked = augment.choose_modality(self.modalities, self.mask_p)
        k = 1 + self.modalities.index(masked)
        x = augment.modality_mask(inputs, masked, self.mask_mode)[masked]  # the masked item inputs
        h = lightgcn_propagate(self.adj, torch.cat([self.user_embedding.weight, x]), self.n_layers)
        view2 = swap_block(full, h, k)  # only the masked branch differs from the full-graph one
        return view1, view2

    def ssl_loss(self, view1, view2, user, pos, neg) -> torch.Tensor:
        """User-item InfoNCE across the views: a user of view 1 against its positive item of view 2 over
        the batch's items (plus the item's hard negative), and the item of view 1 against the user of
        view 2 over the batch's users (plus the user's hard negative)."""
        u1, i1 = split_users_items(view1, self.n_users)
        u2, i2 = split_users_items(view2, self.n_users)
        hard_u = hard_i = None
        # index_select: its backward is one index_add (x[idx]'s goes through index_put)
        u2_user, i2_pos = u2.index_select(0, user), i2.index_select(0, pos)
        if self.hard_negative:
            k = 1 + int(torch.randint(len(self.modalities), ()))  # the modality branch swapped
            hard_i = self.read_item(swap_block(i2_pos, self.branch(i2, k).index_select(0, neg), k))
            hard_u = self.read_user(swap_block(u2_user, self.branch(u2_user.roll(1, 0), k), k))
        return (info_nce_hard(self.read_user(u1.index_select(0, user)), self.read_item(i2_pos), hard_i, self.ssl_temp)
                + info_nce_hard(self.read_item(i1.index_select(0, pos)), self.read_user(u2_user), hard_u,
                                self.ssl_temp))

    def calculate_loss(self, interaction):
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        inputs = self.item_inputs()
        ego = self.ego(inputs)
        full = self.propagate(ego)
        users, items = split_users_items(full, self.n_users)
        u = self.read_user(users.index_select(0, user))
        p, n = self.read_item(items.index_select(0, pos)), self.read_item(items.index_select(0, neg))
        loss = bpr_loss((u * p).sum(1), (u * n).sum(1))
        if self.ssl_alpha > 0:
            loss = loss + self.ssl_alpha * self.ssl_loss(*self.views(ego, full, inputs), user, pos, neg)
        return loss

    def inference_embeddings(self):
        with torch.no_grad():
            return self.fuse(self.propagate(self.ego(self.item_inputs())))
