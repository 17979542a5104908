"""SLMRec (Tao et al., IEEE TMM 2022): "Self-supervised Learning for Multimedia Recommendation".

* Graphs: one LightGCN per view on the sym-normalised user-item graph ``Â`` -- the ID view
  (user and item ID embeddings) and one per modality ``m``, whose item inputs are the projected,
  L2-normalised features ``W_m f̂_i + b_m`` and whose user inputs are the same user ID embeddings:
  ``E_v = mean(E_v^0, Â E_v^0, ..., Â^L E_v^0)``. All views share ``Â`` and are propagated together
  as one ``(n, d (M+1))`` block matrix (exactly the per-view propagation, one sparse product a layer).
* Fusion: ``h = W_o [e_id; e_m1; ...; e_mM] + b_o`` (``concat``; ``mean`` averages the views),
  separate maps for users and items; score ``<h_u, h_i>``.
* Main task: in-batch softmax (InfoNCE) of each user against its positive item over the batch's
  items, on cosines at temperature ``temperature`` (:func:`~recbole_mm.model.loss.info_nce`).
* Self-supervised task, ``ssl_task``:

  - ``FAC`` (fine and coarse modality contrast, the default and MMRec's): the item ID view is carried
    through a chain of spaces ``x_1 = g_1(e_id)``, ``x_k = g_k(x_{k-1})``, and modality ``k``'s item
    view is mapped into space ``k`` by ``h_k`` and contrasted there with ``x_k`` by in-batch InfoNCE on
    dot products at ``ssl_temp`` (:func:`~recbole_mm.model.loss.info_nce_dot`). Modalities in the
    run's order, finest first; the last (coarse, text in the paper) space has ``d/2`` dimensions;
  - ``FD`` (feature dropout): two views of the whole model with independent dropout
    (``dropout_rate``) after every propagation layer;
  - ``FM`` (feature masking): two views, each with the item inputs of one randomly chosen view
    (ID or a modality; two different ones) set to zero; ``FD+FM`` both
    (both augmentations from :mod:`recbole_mm.model.augment`);

  for FD/FM the fused user (item) representations of the batch in the two views are contrasted by
  InfoNCE on cosines at ``ssl_temp``, users and items summed.
* Loss: ``L_main + ssl_alpha L_ssl`` (multi-task training); L2 via the optimiser's ``weight_decay`` (1e-4, as the
  official code and MMRec).

MMRec keeps the official three-space FAC chain for two modalities with the audio contrast commented
out: its text space is reached through the (now uncontrasted) audio map, two stacked linear maps
where here each step is one. MMRec scores with the embeddings of the last training batch (and a
monotone sigmoid); here a fresh pass at inference. MMRec's FD/FM paths read an absent config key
and a third modality (they fail there); here they follow the official code, for any modalities.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_mm.model import augment
from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import ModalityProjector, lightgcn_propagate, spmm, split_users_items
from recbole_mm.model.loss import info_nce, info_nce_dot

SSL_TASKS = ("FAC", "FD", "FM", "FD+FM")


def _xavier_linear(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.xavier_uniform_(layer.weight)
    return layer


class SLMRec(MultimodalRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.POINTWISE  # positives only: train_neg_sample_args: ~

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = self.embedding_size = config["embedding_size"]
        self.n_layers = config["n_layers"]
        self.temperature = config["temperature"]  # main task
        self.ssl_task, self.ssl_alpha, self.ssl_temp = config["ssl_task"], config["ssl_alpha"], config["ssl_temp"]
        self.dropout_rate = config["dropout_rate"]  # FD views
        self.fusion = config["mm_fusion_mode"]
        if self.ssl_task not in SSL_TASKS:
            raise ValueError(f"ssl_task must be one of {SSL_TASKS}, got {self.ssl_task!r}")
        if self.fusion not in ("concat", "mean"):
            raise ValueError(f"mm_fusion_mode must be concat or mean, got {self.fusion!r}")
        self.n_views = len(self.modalities) + 1  # the ID view, then the modalities

        self.init_id_embeddings(d)
        self.projector = ModalityProjector(self.modality_dims(), d)
        for layer in self.projector.proj.values():
            nn.init.xavier_uniform_(layer.weight)
        width = d * self.n_views if self.fusion == "concat" else d
        self.user_out, self.item_out = _xavier_linear(width, d), _xavier_linear(width, d)
        if self.ssl_task == "FAC":
            m = len(self.modalities)
            dims = [d] * (m - 1) + [d // 2 if m > 1 else d]  # fine spaces, then the coarse one
            self.fac_chain = nn.ModuleList(_xavier_linear(a, b) for a, b in zip([d] + dims[:-1], dims))
            self.fac_heads = nn.ModuleDict({name: _xavier_linear(d, k) for name, k in zip(self.modalities, dims)})
        self.adj = self.ui_graph()

    def ego_views(self) -> torch.Tensor:
        """``E^0`` of all views side by side, ``(n_users + n_items, d (M+1))``: user rows repeat the
        user ID embeddings; item rows are the item ID embeddings and each modality's projection."""
        feats = {m: F.normalize(self.modality_feature(m), dim=1) for m in self.modalities}
        projected = self.projector(feats)
        items = torch.cat([self.item_embedding.weight] + [projected[m] for m in self.modalities], dim=1)
        return torch.cat([self.user_embedding.weight.repeat(1, self.n_views), items])

    def propagate_views(self, ego: torch.Tensor, dropout: float = 0.0) -> torch.Tensor:
        """Layer mean of ``Â^l E^0`` (LightGCN), with dropout after each layer when ``dropout > 0``."""
        if dropout == 0.0:
            return lightgcn_propagate(self.adj, ego, self.n_layers)
        layers = [ego]
        for _ in range(self.n_layers):
            h = spmm(self.adj, layers[-1])
            layers.append(augment.feature_dropout(h, dropout) if self.training else h)
        return torch.stack(layers).mean(0)

    def fuse(self, views: torch.Tensor, out: nn.Linear) -> torch.Tensor:
        """``(rows, d (M+1))`` view block -> ``(rows, d)`` final representations."""
        if self.fusion == "mean":
            views = views.view(views.shape[0], self.n_views, -1).mean(1)
        return out(views)

    def view_block(self, views: torch.Tensor, k: int) -> torch.Tensor:
        return views[:, k * self.embedding_size:(k + 1) * self.embedding_size]

    def fac_loss(self, item_views: torch.Tensor) -> torch.Tensor:
        """Fine-and-coarse contrast of the batch items' ID view against each modality view."""
        x, loss = self.view_block(item_views, 0), 0.0
        for k, (step, m) in enumerate(zip(self.fac_chain, self.modalities), start=1):
            x = step(x)
            loss = loss + info_nce_dot(x, self.fac_heads[m](self.view_block(item_views, k)), self.ssl_temp)
        return loss

    def masks(self) -> torch.Tensor:
        """``(2, d (M+1))`` item-input masks of the two FM views: two different views (ID or a
        modality, drawn uniformly by :func:`~recbole_mm.model.augment.choose_modality`) zeroed by
        :func:`~recbole_mm.model.augment.modality_mask` (``zero``), as masks of the view block."""
        views = list(range(self.n_views))
        first = augment.choose_modality(views)
        second = augment.choose_modality([v for v in views if v != first])
        ones = {v: torch.ones(1, self.embedding_size, device=self.device) for v in views}
        return torch.cat([torch.cat(list(augment.modality_mask(ones, k, "zero").values()), dim=1)
                          for k in (first, second)])

    def augmented_loss(self, ego: torch.Tensor, user, item) -> torch.Tensor:
        """FD / FM / FD+FM: InfoNCE between two augmented views of the batch's users and items."""
        dropout = self.dropout_rate if "FD" in self.ssl_task else 0.0
        masks = self.masks() if "FM" in self.ssl_task else None
        fused = []
        for v in range(2):
            x = ego
            if masks is not None:
                x = torch.cat([ego[:self.n_users], ego[self.n_users:] * masks[v]])
            users, items = split_users_items(self.propagate_views(x, dropout), self.n_users)
            fused.append((self.fuse(users[user], self.user_out), self.fuse(items[item], self.item_out)))
        (u1, i1), (u2, i2) = fused
        return info_nce(u1, u2, self.ssl_temp) + info_nce(i1, i2, self.ssl_temp)

    def calculate_loss(self, interaction):
        user, item = interaction[self.USER_ID], interaction[self.ITEM_ID]
        ego = self.ego_views()
        users, items = split_users_items(self.propagate_views(ego), self.n_users)
        main = info_nce(self.fuse(users[user], self.user_out), self.fuse(items[item], self.item_out),
                        self.temperature)
        if self.ssl_task == "FAC":
            ssl = self.fac_loss(items[item])
        else:
            ssl = self.augmented_loss(ego, user, item)
        return main + self.ssl_alpha * ssl

    def inference_embeddings(self):
        users, items = split_users_items(self.propagate_views(self.ego_views()), self.n_users)
        return self.fuse(users, self.user_out), self.fuse(items, self.item_out)
