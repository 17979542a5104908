"""USERec (PRAI 2025, 38(12)): multimodal recommendation with user semantic embedding refinement.

Every component is a config switch, so the paper's ablations are one flag each (the yaml
switches ``user_pe`` and ``sampled_attention`` off: measured on lfm2k and Baby, benchmarks/README.md):

* ``user_pe`` / ``item_pe``: fixed sinusoidal code of the id (times ``pe_scale``) added to the
  trainable embedding (users only in the paper; ``item_pe`` is the "PE on both sides" ablation);
  ``pe_order: shuffled`` codes a seeded permutation of the ids (no id-order information);
* ``prune``: LightGCN over a degree-sensitively pruned user-item graph resampled every epoch
  (keep ``keep_ratio`` = ρ_p of the edges, p ∝ 1/sqrt(d_u d_i)); the full graph at inference;
* ``behaviour_graph``: each modality projected by its own linear layer, concatenated (then mapped
  to the embedding size) and propagated over the co-interaction item-item graph ``S_u``;
  ``behaviour_norm`` L2-normalises the result before it is added (unscaled, its scale can
  swamp the ID embeddings; chosen on lfm2k valid, benchmarks/README.md);
* per-modality KNN similarity graphs, mixed with ``modality_weights``, enhance the item IDs;
* ``sampled_attention``: each user attends over itself and ``n_samples`` (C) random items
  (weighted residual ``attention_alpha``); at inference the sample is drawn from a fixed seed, so
  scores are reproducible;
* loss: BPR + ``cl_weight`` x InfoNCE between two dropout views (``cl_dropout``, τ = ``cl_temperature``)
  of the final representations of the batch's distinct users and items + ``reg_weight`` x L2.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import ModalityProjector, SampledAttention, first_occurrence, lightgcn_propagate
from recbole_mm.model.layers import propagate, sinusoidal_encoding, split_users_items
from recbole_mm.model.loss import bpr_l2, info_nce


class USERec(MultimodalRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = self.embedding_size = config["embedding_size"]
        self.n_ui_layers, self.n_ii_layers = config["n_ui_layers"], config["n_ii_layers"]
        self.reg_weight, self.cl_weight = config["reg_weight"], config["cl_weight"]
        self.cl_dropout, self.cl_temperature = config["cl_dropout"], config["cl_temperature"]  # the two views
        # the paper's components, each a switch (its ablations), with their settings
        self.user_pe, self.item_pe = config["user_pe"], config["item_pe"]
        self.prune, self.keep_ratio = config["prune"], config["keep_ratio"]
        self.behaviour_graph, self.behaviour_norm = config["behaviour_graph"], config["behaviour_norm"]
        self.sampled_attention, self.n_samples = config["sampled_attention"], config["n_samples"]
        self.init_id_embeddings(d)
        # pe_scale multiplies the fixed codes (1 = the paper's formula); the codes have unit-size
        # entries while Xavier-initialised embeddings start ~20x smaller, so the scale sets how much
        # of the initial user representation is position rather than learned preference
        scale = config["pe_scale"]
        # a dataset's id order can encode its interactions, test ones included (Amazon Baby's MMRec ids
        # were assigned in interaction order), and a code of the raw index hands that order to the
        # model; ``pe_order: shuffled`` codes a fixed seeded permutation of the ids instead
        if config["pe_order"] not in ("index", "shuffled"):
            raise ValueError(f"pe_order: {config['pe_order']!r} (expected index or shuffled)")
        generator = torch.Generator().manual_seed(config["seed"])

        def positions(n):
            return torch.randperm(n, generator=generator) if config["pe_order"] == "shuffled" else torch.arange(n)

        self.register_buffer("user_code", scale * sinusoidal_encoding(positions(self.n_users), d), persistent=False)
        self.register_buffer("item_code", scale * sinusoidal_encoding(positions(self.n_items), d), persistent=False)

        self.sim_graph = self.mixed_knn_graph(config["knn_k"], config["modality_weights"])
        if self.behaviour_graph:
            hidden = config["modality_hidden"]
            self.projector = ModalityProjector(self.modality_dims(), hidden)
            self.behaviour_out = nn.Linear(hidden * len(self.modalities), d)
            self.co_graph = self.co_interaction_graph(config["behaviour_k"])
        if self.sampled_attention:
            self.attention = SampledAttention(d, config["attention_alpha"])
        self.full_adj = self.ui_graph()
        self.train_adj = self.full_adj
        self._eval_generator_seed = config["seed"]

    def pre_epoch_processing(self):
        if not self.prune:
            return
        self.train_adj = self.pruned_ui_graph(self.keep_ratio)

    def propagate_all(self, adj):
        """Graph part: ``(users (n_users, d), items (n_items, d))`` before sampled attention."""
        users = self.user_embedding.weight + (self.user_code if self.user_pe else 0)
        items = self.item_embedding.weight + (self.item_code if self.item_pe else 0)
        users, item_ui = split_users_items(lightgcn_propagate(adj, torch.cat([users, items]), self.n_ui_layers),
                                           self.n_users)
        item_final = item_ui + propagate(self.sim_graph, self.item_embedding.weight, self.n_ii_layers)
        if self.behaviour_graph:
            projected = self.projector({m: self.modality_feature(m) for m in self.modalities})
            E = self.behaviour_out(torch.cat([projected[m] for m in self.modalities], dim=1))
            H = propagate(self.co_graph, E, self.n_ii_layers)
            item_final = item_final + (F.normalize(H, dim=1) if self.behaviour_norm else H)
        return users, item_final

    def _attend(self, user_rows: torch.Tensor, items: torch.Tensor, generator=None) -> torch.Tensor:
        if not self.sampled_attention:
            return user_rows
        idx = torch.randint(1, self.n_items, (user_rows.shape[0], self.n_samples), generator=generator,
                            device=items.device)
        return self.attention(user_rows, items[idx])

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items = self.propagate_all(self.train_adj if self.prune else self.full_adj)
        u = self._attend(users[user], items)
        loss = bpr_l2(u, items[pos], items[neg], self.reg_weight)
        if self.cl_weight:
            # two dropout views of the batch's distinct users and items (as SGL/SimGCL: a repeated
            # row is not its own negative, and the logits shrink to distinct x distinct)
            drop = lambda x: F.dropout(x, self.cl_dropout, training=True)  # noqa: E731
            u_d = u[first_occurrence(user)]  # u rows differ per occurrence (sampled attention)
            p_d = items[torch.unique(pos)]
            loss = loss + self.cl_weight * (info_nce(drop(u_d), drop(u_d), self.cl_temperature)
                                            + info_nce(drop(p_d), drop(p_d), self.cl_temperature))
        return loss

    def inference_embeddings(self):
        users, items = self.propagate_all(self.full_adj)
        generator = torch.Generator(device=items.device).manual_seed(self._eval_generator_seed)
        return self._attend(users, items, generator=generator), items
