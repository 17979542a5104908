"""MMGCN (Wei, Wang, Nie, He, Hong & Chua, ACM MM 2019): "MMGCN: Multi-modal Graph Convolution
Network for Personalized Recommendation of Micro-video".

One user-item GCN per modality m, all on the same training graph:

* input: ``x^0 = normalize([P_m; F_m W_m])`` -- user preference vectors ``P_m`` stacked on the
  item features (projected to ``dim_latent`` by a linear map, or fed raw for ``raw_modalities``);
* ``n_layers`` aggregation + combination layers (:class:`~recbole_mm.model.layers.AggregateCombine`):
  ``h = leaky_relu(A x W_1)`` with ``A = D^{-1} A_ui`` (mean aggregation, Eq. 1-2), then
  ``x_hat = leaky_relu(W_2 x) + e_id`` (Eq. 5, the ID embedding shared by all modalities) and
  ``x' = leaky_relu(W_3 [h; x_hat])`` (concatenation, Eq. 6) or ``leaky_relu(W_3 h + x_hat)``
  (element-wise, Eq. 7);
* prediction (Eq. 8): ``y_ui = u* . i*`` with ``u*``, ``i*`` pooled over the modalities' last layers;
* loss (Eq. 9): BPR + ``reg_weight`` x mean squares of the batch's ID rows and of the preferences.

What MMRec (our reference for accuracy) does, followed here where the paper differs or is silent:

* it passes ``concate='False'`` -- a non-empty string, hence the concatenation combination (Eq. 6);
* it always stacks 3 layers (its ``n_layers`` is unused): ``n_layers: 3``;
* final representations are *averaged* over modalities (the paper sums them; ``pooling: mean``);
* its ID embeddings and user preferences are plain tensors, not parameters: they stay at their
  random Xavier-normal init and the L2 term has no gradient. Here they train as the paper intends
  (``train_embeddings: True``, the default: it learns faster and further on lfm2k);
  ``train_embeddings: False`` reproduces MMRec;
* its text slot is fed raw (no projection), its image slot through a 256-wide linear map
  (``raw_modalities: [text]``, ``dim_latent: 256``).
"""

from __future__ import annotations

import torch
from recbole.utils import InputType
from torch import nn

from recbole_mm.model.abstract_recommender import JointTableRecommender
from recbole_mm.model.layers import AggregateCombine, normalize_rows
from recbole_mm.model.loss import pair_rows_l2

AGGREGATIONS = {"mean": "rw", "sum": "none"}  # -> ui_graph normalisation


class _ModalityGCN(nn.Module):
    """One modality's branch: preferences, optional projection, the layer stack."""

    def __init__(self, n_users: int, feat_dim: int, dim: int, dim_latent, n_layers: int, concat: bool,
                 trainable: bool):
        super().__init__()
        width = dim_latent or feat_dim
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, width)), requires_grad=trainable)
        self.mlp = nn.Linear(feat_dim, dim_latent) if dim_latent else None
        self.layers = nn.ModuleList(
            AggregateCombine(width if j == 0 else dim, dim, concat=concat, xavier_combine=j == 0)
            for j in range(n_layers)
        )

    def forward(self, graph, features: torch.Tensor, id_emb: torch.Tensor) -> torch.Tensor:
        items = self.mlp(features) if self.mlp is not None else features
        x = normalize_rows(torch.cat([self.preference, items]))
        for layer in self.layers:
            x = layer(graph, x, id_emb)
        return x


class MMGCN(JointTableRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        dim = config["embedding_size"]
        self.reg_weight, self.n_layers = config["reg_weight"], config["n_layers"]
        self.pooling = config["pooling"]
        if self.pooling not in ("mean", "sum"):
            raise ValueError(f"MMGCN pooling must be 'mean' or 'sum', got {self.pooling!r}")
        if config["aggregation"] not in AGGREGATIONS:
            raise ValueError(f"MMGCN aggregation must be one of {sorted(AGGREGATIONS)}, got {config['aggregation']!r}")
        if config["combination"] not in ("concat", "element"):
            raise ValueError(f"MMGCN combination must be 'concat' or 'element', got {config['combination']!r}")
        if self.n_layers < 1:
            raise ValueError(f"MMGCN needs n_layers >= 1, got {self.n_layers}")
        trainable = bool(config["train_embeddings"])
        raw = set(config["raw_modalities"] or ())

        self.adj = self.ui_graph(normalization=AGGREGATIONS[config["aggregation"]])
        self.branches = nn.ModuleDict({
            m: _ModalityGCN(self.n_users, d, dim, None if m in raw else config["dim_latent"], self.n_layers,
                            config["combination"] == "concat", trainable)
            for m, d in self.modality_dims().items()
        })
        n = self.n_users + self.n_items  # rows: users, then items (RecBole ids)
        self.id_embedding = nn.Parameter(nn.init.xavier_normal_(torch.empty(n, dim)), requires_grad=trainable)

    def forward(self) -> torch.Tensor:
        reps = torch.stack([self.branch(branch, self.adj, self.modality_feature(m), self.id_embedding)
                            for m, branch in self.branches.items()])
        return reps.mean(0) if self.pooling == "mean" else reps.sum(0)  # Eq. 8

    def regularizer(self, user, pos, neg) -> torch.Tensor:
        """MMRec's L2: mean squares of the batch's ID rows (users counted once per pair) and of the
        preference tables; constant (no gradient) when the embeddings are not trained."""
        reg = pair_rows_l2(self.id_embedding, user, pos, neg, self.n_users)
        return reg + sum(branch.preference.pow(2).mean() for branch in self.branches.values())
