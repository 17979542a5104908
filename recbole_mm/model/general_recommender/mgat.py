"""MGAT (Tao, Wei, Wang, He, Huang & Chua, Information Processing & Management 57(5) 102277, 2020):
"MGAT: Multimodal Graph Attention Network for Recommendation".

One user-item graph per modality m (all the training graph, both directions), each with its own
node features and a gated attention layer; the modalities are then pooled.

* Embedding layer: ``x^0_m = normalize([P_m; tanh(W_m f_m + b_m)])`` -- user preference vectors
  ``P_m`` (``dim_latent`` wide) stacked on the projected item features of modality m (row-wise L2).
* Gated attention aggregation (Sec. 3.2), on ``z = x W_c`` for every edge ``h <- t``:
  score ``s_ht = <z_h, lrelu(z_t)>``, inner-product gate ``g_ht = sigmoid(s_ht / sqrt(|N_t|))``
  (``f_g``), attention ``a_ht = softmax_{t in N(h)}(g_ht s_ht)`` (``f_a`` weighted by the gate),
  neighbourhood ``e_N(h) = normalize(sum_t a_ht z_t + b_c)``.
* Combination (one layer, as MMGCN's element-wise one): ``h = lrelu(e_N)``,
  ``x_hat = lrelu(W_s x + b_s) + e_id`` (``e_id`` the ID embedding shared by all modalities) and
  ``x' = lrelu(W_g h + b_g + x_hat)``; layers ``l >= 2`` repeat it on ``x'`` (no input
  normalisation) and the layers' outputs are concatenated.
* Prediction: ``u* = mean_m x'_m[u]``, ``i* = mean_m x'_m[i]`` (the modalities' pooling), ``y_ui = u*. i*``;
  loss ``-sum_batch log2 sigmoid(y_ui - y_uj)`` with Adam's ``weight_decay`` as the only
  regularisation (``loss_reduction: mean`` gives RecBole's mean BPR instead).

Everything is edge-wise on one :class:`~recbole_mm.model.layers.EdgeGraph` (sampled dot products,
segment softmax, CSR products with autograd through the weights): no dense user x item matrix.

MMRec does not ship MGAT; the reference is the official code (github.com/zltao/MGAT, read, not copied).
Followed from it where the paper is silent or differs:

* its forward returns after the first layer (the second layer's code is dead): ``n_layers: 1``;
* the gate divides by the square root of the degree of the *sending* node ``t`` (``deg[row]`` of the
  source); the attention leaky-ReLU is applied to the sender only; the aggregation's bias is added
  before the L2 normalisation; the GAT's dropout is defined but never applied (none here);
* modalities are *averaged* (the "attention across modalities" the paper motivates is the per-graph
  gated attention; the fusion itself is a mean, as a later paper on MGAT also notes);
* init: Xavier-normal ``P_m``, ``W_c``, ``W_s``, ``W_g`` and ID table; default ``nn.Linear`` for the
  item projection; ``U(+-1/sqrt(d))`` for the aggregation bias;
* optimisation of its README run: Adam, ``lr 3e-5``, ``weight_decay 0.1`` on every parameter, batch
  2048, the loss summed over the batch with a base-2 log (the sum makes the weight decay ~B/ln 2
  times weaker relative to the ranking loss than with a mean);
* one ``dim_latent`` for every modality (the official code uses 256/128/100 for its visual / acoustic
  / textual slots; our modalities have no slots).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_mm.model.abstract_recommender import JointTableRecommender
from recbole_mm.model.layers import EdgeGraph

REDUCTIONS = ("sum", "mean")


def gated_attention(graph: EdgeGraph, z: torch.Tensor, inv_sqrt_deg: torch.Tensor) -> torch.Tensor:
    """MGAT's gated attention weights on the edges ``h <- t`` of ``graph`` for node features ``z``
    (already transformed): ``s = <z_h, lrelu(z_t)>``, ``g = sigmoid(s * inv_sqrt_deg[t])``,
    ``a = softmax over each target h of g * s``. ``inv_sqrt_deg``: per node ``|N|^-1/2``."""
    s = graph.edge_dot(z, F.leaky_relu(z))  # <z_target, lrelu(z_source)>
    gate = torch.sigmoid(s * inv_sqrt_deg[graph.cols])
    return graph.softmax(s * gate)


class GatedGraphLayer(nn.Module):
    """One MGAT layer of one modality: gated attention aggregation, then MMGCN's element-wise
    combination with the node's own features and the shared ID embedding."""

    def __init__(self, in_dim: int, out_dim: int):
        super().__init__()
        self.conv = nn.Parameter(nn.init.xavier_normal_(torch.empty(in_dim, in_dim)))
        bound = 1.0 / math.sqrt(in_dim)
        self.conv_bias = nn.Parameter(torch.empty(in_dim).uniform_(-bound, bound))
        self.self_proj = nn.Linear(in_dim, out_dim)
        self.gate_proj = nn.Linear(in_dim, out_dim)
        nn.init.xavier_normal_(self.self_proj.weight)
        nn.init.xavier_normal_(self.gate_proj.weight)

    def aggregate(self, graph: EdgeGraph, x: torch.Tensor, inv_sqrt_deg: torch.Tensor) -> torch.Tensor:
        """``normalize(sum_t a_ht z_t + b)``, ``z = x W_c``."""
        z = x @ self.conv
        return F.normalize(graph(gated_attention(graph, z, inv_sqrt_deg), z) + self.conv_bias, dim=1)

    def forward(self, graph: EdgeGraph, x: torch.Tensor, id_emb: torch.Tensor, inv_sqrt_deg) -> torch.Tensor:
        h = F.leaky_relu(self.aggregate(graph, x, inv_sqrt_deg))
        x_hat = F.leaky_relu(self.self_proj(x)) + id_emb
        return F.leaky_relu(self.gate_proj(h) + x_hat)


class _ModalityBranch(nn.Module):
    """One modality's graph: user preferences, the item projection and the layer stack."""

    def __init__(self, n_users: int, feat_dim: int, dim: int, dim_latent: int, n_layers: int):
        super().__init__()
        self.preference = nn.Parameter(nn.init.xavier_normal_(torch.empty(n_users, dim_latent)))
        self.mlp = nn.Linear(feat_dim, dim_latent)
        self.layers = nn.ModuleList(GatedGraphLayer(dim_latent if j == 0 else dim, dim) for j in range(n_layers))

    def forward(self, graph, features, id_emb, inv_sqrt_deg) -> torch.Tensor:
        x = F.normalize(torch.cat([self.preference, torch.tanh(self.mlp(features))]), dim=1)
        outputs = []
        for layer in self.layers:
            x = layer(graph, x, id_emb, inv_sqrt_deg)
            outputs.append(x)
        return torch.cat(outputs, dim=1)


class MGAT(JointTableRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        dim, self.n_layers = config["embedding_size"], config["n_layers"]
        self.loss_reduction = config["loss_reduction"]
        if self.n_layers < 1:
            raise ValueError(f"MGAT needs n_layers >= 1, got {self.n_layers}")
        if self.loss_reduction not in REDUCTIONS:
            raise ValueError(f"MGAT loss_reduction must be one of {REDUCTIONS}, got {self.loss_reduction!r}")
        self.graph = EdgeGraph.bipartite(self.train_users, self.train_items, self.n_users, self.n_items)
        degree = self.graph.crow.diff().float()  # symmetric graph: in-degree = out-degree
        self.register_buffer("inv_sqrt_deg", degree.clamp(min=1).pow(-0.5), persistent=False)
        self.branches = nn.ModuleDict({
            m: _ModalityBranch(self.n_users, d, dim, config["dim_latent"], self.n_layers)
            for m, d in self.modality_dims().items()
        })
        n = self.n_users + self.n_items  # rows: users, then items (RecBole ids)
        self.id_embedding = nn.Parameter(nn.init.xavier_normal_(torch.empty(n, dim)))

    def forward(self) -> torch.Tensor:
        reps = [branch(self.graph, self.modality_feature(m), self.id_embedding, self.inv_sqrt_deg)
                for m, branch in self.branches.items()]
        return torch.stack(reps).mean(0)

    def calculate_loss(self, interaction):
        user, pos, neg = interaction[self.USER_ID], interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        table = self.forward()
        u = table[user]
        diff = (u * table[pos + self.n_users]).sum(1) - (u * table[neg + self.n_users]).sum(1)
        log_lik = F.logsigmoid(diff)
        if self.loss_reduction == "sum":  # official: -sum log2 sigmoid
            return -log_lik.sum() / math.log(2.0)
        return -log_lik.mean()
