"""AlignRec (Liu et al., CIKM 2024): "AlignRec: Aligning and Training in Multimodal Recommendations".

Stage 2 (recommendation) of the paper. The model declares (:meth:`AlignRec.required_features`)
the fused item feature ``h_enc`` of stage 1 (inter-content alignment pre-training); the pipeline
(:mod:`recbole_mm.pretrain`, run first by default: ``pretrain: True``) produces it and attaches it
as a dataset modality (``encoder_modality``).

* ``h_enc``: the fused modality if the run has it, otherwise the documented fallback: every
  modality L2-normalised, weighted by ``sqrt(modality_weights)`` and concatenated (the content
  MLP below then projects it).
* ID branch: LightGCN over the normalised user-item graph (layer mean) -> ``h_id``.
* Content branch: ``h_con_i = e_id_i ⊙ sigmoid(MLP(h_enc_i))``; item-item KNN graph S of ``h_enc``
  (cosine, top-k, sym-normalised, built once and cached); ``h_mm_i = S h_con``, ``h_mm_u = R̂ h_mm``.
* ``train_features``: the MLP reads a trainable copy of ``h_enc`` (graph and REG target stay fixed).
* Fusion: ``h = h_mm + h_id`` (``fusion: sum``), or the shared fusion layer
  ``Fusion([h_id, h_mm])`` (``mean | concat | gate | attention | cross_attention | non_invasive``;
  ``non_invasive`` keeps ``h_id`` as its value branch, ``h_mm`` enters only queries and keys).
  ``h_enc`` is early-fused by design (stage 1, or the fallback concatenation), so AlignRec has
  no ``fusion_stage`` switch.
* Loss: BPR + ``reg_weight`` L2 + α CCA (in-batch InfoNCE between h_mm and h_id of the batch's
  distinct items and users, τ = ``cca_temperature``; its B x B part in ``cca_dtype``) + β UIA (``1 - cos(h_u, h_i)`` on observed pairs)
  + λ REG (``||cos(h_mm_i, h_mm_j) - sg(cos(h_enc_i, h_enc_j))||``). A weight of 0 switches its term off.
"""

from __future__ import annotations

from logging import getLogger

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_mm.model.abstract_recommender import FeatureRequest, MultimodalRecommender
from recbole_mm.model.layers import Fusion, lightgcn_propagate, propagate, split_users_items
from recbole_mm.model.loss import bpr_loss, contrastive_dtype, info_nce, similarity_preserving_loss


class AlignRec(MultimodalRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = self.embedding_size = config["embedding_size"]
        self.n_ui_layers, self.n_mm_layers = config["n_ui_layers"], config["n_mm_layers"]  # ID, content depth
        # loss weights (alpha, beta, lambda of the paper; 0 switches a term off) and the CCA temperature
        self.cca_weight, self.uia_weight = config["cca_weight"], config["uia_weight"]
        self.sim_weight = config["sim_weight"]
        self.reg_weight, self.cca_temperature = config["reg_weight"], config["cca_temperature"]
        # resolved for the device the run trains on (the model is built on CPU, then moved)
        self.cca_dtype = contrastive_dtype(config["cca_dtype"], config["device"] or "cpu")

        self.init_id_embeddings(d)
        h_enc = self.encoder_features(config["encoder_modality"], config["modality_weights"])
        self.register_buffer("h_enc", h_enc, persistent=False)
        # train_features: the content MLP reads a trainable copy of h_enc (as the official code's
        # unfrozen feature table); the KNN graph and the REG target keep the original h_enc.
        self.h_enc_tuned = nn.Parameter(h_enc.clone()) if config["train_features"] else None
        self.content_mlp = nn.Sequential(nn.Linear(h_enc.shape[1], d), nn.Linear(d, d))
        self.fusion_mode = config["fusion"] or "sum"
        # [h_id, h_mm]: h_id first, the ID branch of non_invasive fusion
        self.fusion = None if self.fusion_mode == "sum" else Fusion.from_config(config, d, 2)

        self.mm_graph = self.knn_graph(h_enc, config["knn_k"], weighted=True)
        self.adj = self.ui_graph()
        self.R = self.interaction_matrix()

    @classmethod
    def required_features(cls, config) -> list:
        """Stage 1's fused item feature ``h_enc``, attached as modality ``encoder_modality``.

        The pipeline (:mod:`recbole_mm.pretrain`) produces it: from ``encoder_file`` when one is
        given, else from a file keyed by the modalities, ICA settings and seed that made it; stage 1
        runs first when it is missing and ``pretrain`` is on (``pretrain_overwrite``: always).
        """
        name = config["encoder_modality"]
        if not name:
            return []
        return [FeatureRequest(name=name, producer="ica", file=config["encoder_file"] or None,
                               run=bool(config["pretrain"]), overwrite=bool(config["pretrain_overwrite"]),
                               exclude=(name,))]

    def encoder_features(self, name, weights=None) -> torch.Tensor:
        """``h_enc``: the stage-1 fused modality ``name`` if present, else the fallback: modalities
        L2-normalised, scaled by ``sqrt(w_m)`` (``modality_weights``; equal by default) and
        concatenated, so cos(h_enc_i, h_enc_j) = sum_m w_m cos_m(i, j)."""
        if name and name in self.modalities:
            return self.modality_feature(name)
        getLogger().warning("AlignRec: no stage-1 features '%s'; h_enc falls back to the normalised concatenation "
                            "of %s (the yaml defaults are tuned for stage-1 features: run with --pretrain=true)",
                            name, sorted(self.modalities))
        return self.concat_features(normalize=True, weights=self.modality_weights(weights))

    def forward(self):
        h_id = lightgcn_propagate(self.adj, self.id_embeddings(), self.n_ui_layers)
        h_in = self.h_enc if self.h_enc_tuned is None else self.h_enc_tuned
        h_con = self.item_embedding.weight * torch.sigmoid(self.content_mlp(h_in))
        h_mm_items = propagate(self.mm_graph, h_con, self.n_mm_layers)
        h_mm = torch.cat([self.R @ h_mm_items, h_mm_items])
        h = h_id + h_mm if self.fusion is None else self.fusion([h_id, h_mm])
        return h, h_mm, h_id

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        h, h_mm, h_id = self.forward()
        # Rows are gathered from the whole (users; items) tables with item ids offset by n_users, one
        # index_select per table: its backward is one index_add into one zero table (several times
        # faster on CPU than the accumulate-scatter behind h[idx], and one instead of one per view).
        n_u = self.n_users
        u, p, n = h.index_select(0, torch.cat([user, pos + n_u, neg + n_u])).chunk(3)
        # BPR, L2 and UIA share the row products: x_ui and the squared norms give cos(h_u, h_i)
        pos_score, sq_u, sq_p = (u * p).sum(1), u.square().sum(1), p.square().sum(1)
        sq_n = n.square().sum(1)
        loss = bpr_loss(pos_score, (u * n).sum(1))
        loss = loss + self.reg_weight * (sq_u.sum() + sq_p.sum() + sq_n.sum()) / (2.0 * len(user))  # = l2_reg(u, p, n)
        if self.uia_weight:  # 1 - cos(h_u, h_i) on the observed pairs, as F.cosine_similarity (eps 1e-8)
            cos = pos_score / (sq_u * sq_p).sqrt().clamp_min(1e-8)
            loss = loss + self.uia_weight * (1 - cos).mean()
        if self.cca_weight or self.sim_weight:
            # CCA and REG work on the batch's distinct items (and CCA on its distinct users, as
            # SGL/SimGCL do): a repeated item is not its own negative, and the B x B logits shrink
            # to distinct x distinct. Both use cosines: the rows are normalised once for both.
            items_d, item_counts = torch.unique(pos, return_counts=True)
            users_d = torch.unique(user) if self.cca_weight else user[:0]
            rows = torch.cat([users_d, items_d + n_u])
            mm_u, mm_i = F.normalize(h_mm.index_select(0, rows), dim=-1).split([len(users_d), len(items_d)])
        if self.cca_weight:
            id_u, id_i = F.normalize(h_id.index_select(0, rows), dim=-1).split([len(users_d), len(items_d)])
            t, dtype = self.cca_temperature, self.cca_dtype
            cca = info_nce(mm_i, id_i, t, dtype, normalized=True) + info_nce(mm_u, id_u, t, dtype, normalized=True)
            loss = loss + self.cca_weight * cca
        if self.sim_weight:
            # exact over the batch with its repeats: distinct items weighted by their counts
            ref = self.h_enc.index_select(0, items_d)
            loss = loss + self.sim_weight * similarity_preserving_loss(mm_i, ref, item_counts, normalized=True)
        return loss

    def inference_embeddings(self):
        return split_users_items(self.forward()[0], self.n_users)
