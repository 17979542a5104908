"""MMGCF (UMAP 2026, DOI 10.1145/3774935.3806158): "Multimodal Graph Collaborative Filtering for
Recommendation with Graph Convolutional Networks" (contributed to MMRec by G. Spillo).

A late-fusion model: LightGCN on the ID embeddings only, then each item's graph representation is
fused with its projected modality features; users keep their LightGCN representation. The paper's
text was not available to us, so the equations below are numbered by us and follow the official
code (MMRec's ``mmgcf.py``), which we compare against.

* (1) LightGCN: ``E = mean(E^0, A E^0, ..., A^L E^0)`` (``L = n_ui_layers``) on the sym-normalised
  user-item graph ``A``; ``E^0`` Xavier-initialised.
* (2) Modality features: ``f_m = W_m x_m + b_m``, ``x_m`` the raw (frozen) features of modality
  ``m``, ``W_m`` learned (``feat_embed_dim``); any number ``M`` of modalities.
* (3) Fusion of the item representation ``e_i`` (``fuse`` = ``fusion_mode``: the official element-wise
  ``mean``, ``sum``, or ``concat`` = a learned linear map of the concatenation back to
  ``embedding_size``; also the shared layer's ``gate``, ``attention``, ``cross_attention`` and
  ``non_invasive`` operators, :class:`~recbole_mm.model.layers.Fusion`, ``e_i`` its first input):
  - ``equal``:      ``fuse(e_i, fuse(f_1, ..., f_M))`` (the inner fuse only when ``M > 1``);
  - ``alpha``:      ``fuse(a e_i, (1-a) f_1, ..., (1-a) f_M)``, ``a = sigmoid(w)``, ``w`` learned, 0 at start;
  - ``normalized``: ``fuse(M e_i/|e_i|, f_1/|f_1|, ..., f_M/|f_M|)``.
* (4) Loss: BPR on ``u . i_fused`` (mean over the batch) + ``reg_weight`` x
  ``(|e_u^0|^2 + |e_pos^0|^2 + |e_neg^0|^2) / (2B)``: L2 on the batch's ego ID embeddings only.
* Degree-sensitive edge dropout: before each training epoch a fraction ``dropout`` of the user-item
  edges is removed, edges kept with probability ``p ∝ 1/sqrt(d_u d_i)`` (without replacement) and the
  kept graph re-normalised (shared ``pruned_ui_graph``); inference uses the full graph.

Deviations from MMRec, none of which changes the model: we keep ``ceil((1-dropout)|E|)`` edges where
MMRec keeps ``int(...)``; the loss fuses only the batch's rows (fusion is row-wise, same values and
gradients); only the fusion layers a setting uses are created; ``feat_embed_dim: ~`` means
``embedding_size`` (MMRec sets both to 64; every mode but concat needs them equal).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import FUSIONS, Fusion, ModalityProjector, lightgcn_propagate, split_users_items
from recbole_mm.model.loss import bpr_loss, l2_reg

WEIGHTINGS = ("equal", "alpha", "normalized")


class MMGCF(MultimodalRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = self.embedding_size = config["embedding_size"]
        fd = self.feat_embed_dim = config["feat_embed_dim"] or d
        self.n_ui_layers, self.reg_weight, self.dropout = config["n_ui_layers"], config["reg_weight"], config["dropout"]
        self.fusion_mode, self.weighting = config["fusion_mode"], config["weighting"]
        if self.fusion_mode not in FUSIONS:
            raise ValueError(f"fusion_mode must be one of {FUSIONS}, got {self.fusion_mode!r}")
        if self.weighting not in WEIGHTINGS:
            raise ValueError(f"weighting must be one of {WEIGHTINGS}, got {self.weighting!r}")
        if self.fusion_mode != "concat" and fd != d:
            raise ValueError(f"fusion_mode {self.fusion_mode!r} combines ID and feature embeddings of one size: "
                             f"feat_embed_dim ({fd}) must equal embedding_size ({d}) (or use fusion_mode concat)")
        n_mod = len(self.modalities)

        self.init_id_embeddings(d)
        self.projector = ModalityProjector(self.modality_dims(), fd)  # Eq. 2 (nn.Linear's default init)
        if self.weighting == "alpha":
            self.alpha_logit = nn.Parameter(torch.zeros(()))  # a = sigmoid(0) = 0.5 at start
        fusion = lambda n, width, dim=d: Fusion.from_config(  # noqa: E731
            config, dim, n, mode=self.fusion_mode, concat_width=width)
        self.mm_fusion = self.id_mm_fusion = self.all_fusion = None
        if self.weighting == "equal":
            self.mm_fusion = fusion(n_mod, n_mod * fd, fd) if n_mod > 1 else None
            self.id_mm_fusion = fusion(2, d + fd)
        else:
            self.all_fusion = fusion(n_mod + 1, d + n_mod * fd)

        self.full_adj = self.ui_graph()
        self.train_adj = self.full_adj

    def pre_epoch_processing(self):
        """Resample the degree-sensitively pruned training graph (the full graph when dropout is 0)."""
        self.train_adj = self.full_adj if self.dropout <= 0 else self.pruned_ui_graph(1.0 - self.dropout)

    # -- Eq. 2-3 ------------------------------------------------------------------------------
    def modality_embeddings(self, items: torch.Tensor | None = None) -> list:
        """``[f_1, ..., f_M]`` for ``items`` (all items when ``None``)."""
        raw = {m: self.modality_feature(m) if items is None else self.modality_feature(m)[items] for m in self.modalities}
        return list(self.projector(raw).values())

    def fuse_items(self, item_emb: torch.Tensor, feats: list) -> torch.Tensor:
        """Eq. 3: fuse the LightGCN item rows with their modality embeddings (row-wise)."""
        if self.weighting == "alpha":
            a = torch.sigmoid(self.alpha_logit)
            return self.all_fusion([a * item_emb] + [(1.0 - a) * f for f in feats])
        if self.weighting == "normalized":
            return self.all_fusion([F.normalize(item_emb, dim=1) * len(feats)] + [F.normalize(f, dim=1) for f in feats])
        mm = self.mm_fusion(feats) if len(feats) > 1 else feats[0]
        return self.id_mm_fusion([item_emb, mm])

    # -- Eq. 1, 4 -----------------------------------------------------------------------------
    def forward(self, adj):
        users, items = split_users_items(lightgcn_propagate(adj, self.id_embeddings(), self.n_ui_layers), self.n_users)
        return users, self.fuse_items(items, self.modality_embeddings())

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items = split_users_items(lightgcn_propagate(self.train_adj, self.id_embeddings(), self.n_ui_layers),
                                         self.n_users)
        rows = torch.cat([pos, neg])
        fused_pos, fused_neg = self.fuse_items(items[rows], self.modality_embeddings(rows)).split(len(pos))
        u = users[user]
        loss = bpr_loss((u * fused_pos).sum(1), (u * fused_neg).sum(1))
        return loss + self.reg_weight * l2_reg(self.user_embedding(user), self.item_embedding(pos), self.item_embedding(neg))

    def inference_embeddings(self):
        return self.forward(self.full_adj)
