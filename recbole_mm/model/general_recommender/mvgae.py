"""MVGAE (Yi & Chen, IEEE TMM 2021): "Multi-Modal Variational Graph Auto-Encoder for Recommendation Systems".

One variational graph encoder per modality and one collaborative encoder; each maps the user-item
graph to a Gaussian ``N(mu, diag(sigma^2))`` per node (users and items), the Gaussians are fused by a
product of experts, and a sample of the fused Gaussian is decoded into user-item preferences.

* Encoder input (per modality ``m``): ``x = normalize([p_u; W_m f_i])`` -- a user table ``p`` and the
  item features ``f`` projected to ``latent_size``; the collaborative encoder's "features" are an
  item table. Rows L2-normalised.
* Graph convolution ``conv(x) = dropout(normalize(D^-1 (A + I) x W + b))`` (mean over a node and its
  neighbours, dropout 0.1 in training); a hidden layer is ``x <- lrelu(G lrelu(conv(x)))``
  (``n_layers`` of them), then the two heads
  ``mu = G_mu lrelu(conv_mu(x)) + lrelu(L_mu x)``, ``log sigma^2 = G_s lrelu(conv_s(x)) + lrelu(L_s x)``.
* Product of experts: precisions add, ``1/sigma^2 = sum_m 1/sigma_m^2`` and
  ``mu = sigma^2 sum_m mu_m / sigma_m^2`` -- first over the modalities, then with the collaborative
  expert (:func:`~recbole_mm.model.loss.product_of_experts`).
* Reparameterisation in training only: ``z = mu + 0.1 eps sigma`` (``log sigma^2`` clamped at 10);
  at inference ``z = mu`` (deterministic).
* Loss (the ELBO: reconstruction + KL), for the fused Gaussian and for every single expert:
  ``-sum_b log2 sigmoid(s(u_b, i_b) - max_j s(u_b, j))`` with ``s(u, i) = <z_u, z_i>`` and ``j`` over
  the row's own sampled negatives (one per row in RecBole's pairwise batches: plain BPR in log2; the
  original code takes the max over each user's own negatives), plus ``beta`` x
  :func:`~recbole_mm.model.loss.gaussian_kl` over all nodes.

Following MMRec's version (the one we compare against) in the KL weight ``beta``. Deliberate
differences, each behind a flag that restores MMRec:

* MMRec takes, for each user, the hardest of *all the batch's* negatives (``negatives:
  batch_hardest``): with a 2,048-row batch that is nearly the best-scored item of the catalogue,
  often another positive. lfm2k test Recall@20 at 40 epochs: 0.2428 with it, 0.3722 with each
  row's own negative (the default; benchmarks/README, "MVGAE's defaults");
* MMRec hard-codes the original code's "amazon" branch, a sigmoid on ``z`` before the decoder and
  as the final representation (``sigmoid_embeddings: True``); the original code uses it for its
  Amazon data only, and on lfm2k it costs most of the accuracy (0.1265 at 30 epochs with it and
  MMRec's negatives); the default is the original's other branch, raw ``z``;
* the user tables ``p`` and the collaborative item table (Xavier-normal init) train, as in the
  paper; MMRec stores them as plain tensors, so they stay at their init (``train_embeddings: False``);
* MMRec also puts the decoder's scores through a sigmoid, ``s = sigmoid(<z_u, z_i>)``
  (``score_sigmoid: True``); with sigmoid embeddings ``<z_u, z_i>`` is about ``d/4``, both sigmoids
  saturate, the gradient vanishes and neither MMRec nor this code learns (lfm2k: valid Recall@20
  ~0.01 after two epochs, the same loss to 5 digits); the original code's raw scores are the default;
* MMRec looks the decoder's items up with unshifted item ids in the joint (users, then items) node
  table, i.e. scores users against *user* rows ``z[item_id]``; here items are the item rows
  (``mmrec_node_indexing: True`` reproduces MMRec).

MMRec also scores with the fused representation of the last training batch (dropout on); here a
fresh eval-mode pass. MMRec's unused ``concate=False`` branches (whose linear layers get no
gradient) are left out.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn

from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import normalize_rows, recompute, split_users_items
from recbole_mm.model.loss import gaussian_kl, product_of_experts

MAX_LOGVAR = 10.0  # clamp of log sigma^2 in sampling and in the KL term (official code)


class _MeanConv(nn.Module):
    """``dropout(normalize(S x W + b))`` with ``S = D^-1 (A + I)`` (PyG mean aggregation with self-loops)."""

    def __init__(self, d_in: int, d_out: int, dropout: float):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(d_in, d_out))
        self.bias = nn.Parameter(torch.empty(d_out))
        nn.init.xavier_normal_(self.weight)
        bound = 1.0 / math.sqrt(d_in)
        nn.init.uniform_(self.bias, -bound, bound)
        self.dropout = dropout

    def forward(self, graph, x):
        h = F.normalize(graph @ (x @ self.weight) + self.bias, dim=-1)
        return F.dropout(h, self.dropout, self.training)


def _linear(d_in: int, d_out: int) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.xavier_normal_(layer.weight)
    return layer


class _GaussianEncoder(nn.Module):
    """One expert: user table + projected item inputs -> graph convolutions -> ``(mu, log sigma^2)``."""

    def __init__(self, n_users: int, d_in: int, latent: int, dim: int, n_layers: int, dropout: float,
                 trainable: bool):
        super().__init__()
        preference = nn.init.xavier_normal_(torch.empty(n_users, latent))
        if trainable:
            self.preference = nn.Parameter(preference)
        else:
            self.register_buffer("preference", preference)
        self.mlp = _linear(d_in, latent)
        dims = [latent] + [dim] * n_layers
        self.convs = nn.ModuleList(_MeanConv(dims[k], dim, dropout) for k in range(n_layers))
        self.gates = nn.ModuleList(_linear(dim, dim) for _ in range(n_layers))
        self.heads = nn.ModuleDict({
            name: nn.ModuleDict({"conv": _MeanConv(dim, dim, dropout), "gate": _linear(dim, dim),
                                 "skip": _linear(dim, dim)})
            for name in ("mu", "logvar")
        })

    def forward(self, graph, item_inputs):
        # leaky ReLUs in place on fresh products: each all-node table is then kept once for
        # backward (by the activation and the next layer together), not twice
        def act(t):
            return F.leaky_relu(t, inplace=True)

        x = normalize_rows(torch.cat([self.preference, self.mlp(item_inputs)]))
        for conv, gate in zip(self.convs, self.gates):
            x = act(gate(act(conv(graph, x))))
        return tuple(h["gate"](act(h["conv"](graph, x))) + act(h["skip"](x)) for h in self.heads.values())


def _fuse(*gaussians):
    """Product of experts of ``(mu_1, logvar_1, ..., mu_M, logvar_M)``."""
    return product_of_experts(torch.stack(gaussians[0::2]), torch.stack(gaussians[1::2]))


class MVGAE(MultimodalRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        dim, latent = config["embedding_size"], config["latent_size"]
        self.n_layers = config["n_layers"]
        if self.n_layers < 1:
            raise ValueError(f"MVGAE needs n_layers >= 1 (the heads read a hidden layer), got {self.n_layers}")
        self.beta = config["beta"]  # KL weight
        self.noise_scale = config["noise_scale"]  # scale of the reparameterisation noise (0.1 officially)
        self.sigmoid_embeddings = config["sigmoid_embeddings"]
        self.mmrec_node_indexing = config["mmrec_node_indexing"]
        self.score_sigmoid = config["score_sigmoid"]
        self.negatives = config["negatives"]
        if self.negatives not in ("batch_hardest", "own"):
            raise ValueError(f"MVGAE negatives must be batch_hardest or own, got {self.negatives!r}")
        trainable, dropout = config["train_embeddings"], config["conv_dropout"]

        collaborative = nn.init.xavier_normal_(torch.empty(self.n_items, dim))
        if trainable:
            self.collaborative = nn.Parameter(collaborative)
        else:
            self.register_buffer("collaborative", collaborative)
        self.experts = nn.ModuleDict({
            m: _GaussianEncoder(self.n_users, d, latent, dim, self.n_layers, dropout, trainable)
            for m, d in self.modality_dims().items()
        })
        self.cf_expert = _GaussianEncoder(self.n_users, dim, latent, dim, self.n_layers, dropout, trainable)
        self.adj = self.ui_graph(normalization="rw", self_loops=True)

    def encode(self):
        """The fused Gaussian and the experts' ones (modalities in order, then the collaborative)."""
        experts = [self.branch(self.experts[m], self.adj, self.modality_feature(m)) for m in self.modalities]
        experts.append(self.branch(self.cf_expert, self.adj, self.collaborative))
        # element-wise over all nodes: recomputed in backward rather than kept (same numbers)
        mm = recompute(_fuse, *[t for gaussian in experts[:-1] for t in gaussian])
        fused = recompute(_fuse, *mm, *experts[-1])
        return fused, experts

    def sample(self, mu, logvar):
        """``mu + noise_scale * eps * sigma`` in training, ``mu`` otherwise."""
        if not self.training:
            return mu
        std = logvar.clamp(max=MAX_LOGVAR).mul(0.5).exp()
        return mu + torch.randn_like(mu) * self.noise_scale * std

    def reconstruction_loss(self, z, user, pos, neg):
        """``-sum_b log2 sigmoid(s(u, pos) - max_j s(u, neg_j))``; ``s`` = dot product (sigmoid-ed: MMRec)."""
        if self.sigmoid_embeddings:
            z = torch.sigmoid(z)
        users, items = split_users_items(z, self.n_users)
        if self.mmrec_node_indexing:
            items = z
        u = users[user]
        pos_score = (u * items[pos]).sum(1)
        if self.negatives == "own":  # each row's own sampled negative (plain BPR)
            neg_score = (u * items[neg]).sum(1)
        else:  # the hardest of the batch's negatives, per user (MMRec)
            neg_score = (u @ items[neg].T).amax(1)
        if self.score_sigmoid:
            pos_score, neg_score = torch.sigmoid(pos_score), torch.sigmoid(neg_score)
        return -F.logsigmoid(pos_score - neg_score).sum() / math.log(2.0)

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        fused, experts = self.encode()
        loss = 0.0
        for mu, logvar in [fused, *experts]:
            # the all-node sample and KL terms are recomputed in backward (noise replayed)
            loss = loss + recompute(self.elbo_term, mu, logvar, user, pos, neg)
        return loss

    def elbo_term(self, mu, logvar, user, pos, neg):
        """One Gaussian's reconstruction loss of a sample plus ``beta`` x its KL term."""
        return self.reconstruction_loss(self.sample(mu, logvar), user, pos, neg) \
            + self.beta * gaussian_kl(mu, logvar, MAX_LOGVAR)

    def inference_embeddings(self):
        mu = self.encode()[0][0]
        return split_users_items(torch.sigmoid(mu) if self.sigmoid_embeddings else mu, self.n_users)
