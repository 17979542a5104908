"""PGL (Yu, Tan, Lu & Bao, AAAI 2025): "Mind Individual Information! Principal Graph Learning for
Multimedia Recommendation".

* Representations: per modality ``m`` a user preference table ``P_m`` (Xavier) and item features
  ``normalize(W_m f_m + b_m)`` of the (fine-tuned) raw features; users ``[P_1; ...; P_M]``, items
  ``[x_1; ...; x_M]`` side by side (``M x embedding_size`` wide).
* Latent item-item graph: each modality's top-``knn_k`` KNN graph of the raw features, binary,
  sym-normalised, mixed with ``modality_weights`` and frozen (FREEDOM's); ``h = S^{n_mm_layers} x``.
* Principal graph learning: training propagates (LightGCN, mean of layers 0..``n_ui_layers``) over a
  principal subgraph ``Â_p`` of the user-item graph, inference over the complete ``Â``;
  items get ``+ h``. Two extraction operators (``principal_mode``):

  - ``local`` (local-aware, MMRec's default): a fresh degree-sensitive sample of ``local_keep_ratio``
    of the edges every epoch, p ∝ 1/sqrt(d_u d_i), re-normalised;
  - ``global`` (global-aware): a truncated SVD of ``Â``, computed once (cached on disk). Following
    the official code: with ``k = svd_rank`` singular triplets and ``q = int(principal_fraction k)``,
    ``Â_p = sum_{i<q} s_i s_{k-q+i} u_i v_i^T`` (top-``q`` directions weighted by the product of the
    top and the bottom ``q`` singular values), entries below ``principal_threshold`` in magnitude
    dropped. ``Â = [[0, R̃], [R̃^T, 0]]`` has the singular values of ``R̃ = D_u^-1/2 R D_i^-1/2`` each
    twice, with vectors ``[u; ±v]/sqrt2``, so the same matrix is ``[[0, B], [B^T, 0]]`` with
    ``B = sum_{j<q/2} σ_j σ_{(k-q)/2+j} u_j v_j^T`` from ``ceil(k/2)`` triplets of the (smaller)
    ``R̃``, built in user blocks: never dense (:func:`principal_ui_graph`; exact for even ``k``, ``q``).
* Loss: BPR + ``reg_weight`` x self-contrast, the mean of InfoNCE(drop(u), drop(u)) over the batch
  users and InfoNCE(drop(i), drop(i)) over the positives (two dropout masks, temperature
  ``cl_temperature``).

Followed from MMRec (``src/models/pgl.py``, the official code): the above, including the spectral
product weighting and the 1e-3 threshold. Differences: the SVD is ARPACK's (scipy) on ``R̃`` instead of
sparsesvd on ``Â``; ``ceil`` instead of ``int`` edges kept; its
``mm_image_weight`` (image 0.1, text 0.9) is ``modality_weights``; its ``mode`` is ``principal_mode`` (a
``--mode=`` flag would be read as an abbreviation of ``--model``). ``reg_weight`` defaults to MMRec's 0
(the official logs use 0.05).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F
from recbole.utils import InputType
from scipy.sparse.linalg import svds
from torch import nn

from recbole_mm.data import graphs
from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import ModalityProjector, lightgcn_propagate, propagate, split_users_items
from recbole_mm.model.loss import bpr_loss, info_nce

MODES = ("local", "global")


def top_singular_triplets(matrix: sp.spmatrix, rank: int, seed: int = 0):
    """The ``rank`` largest singular triplets ``(U (m, r), s (r,) descending, V (n, r))`` of a sparse
    matrix (ARPACK via :func:`scipy.sparse.linalg.svds`, float64, a seeded start vector: the same
    numbers every call). ``rank`` must be below ``min(matrix.shape)``."""
    matrix = sp.csr_matrix(matrix, dtype=np.float64)
    if not 0 < rank < min(matrix.shape):
        raise ValueError(f"truncated SVD: rank {rank} must be in [1, {min(matrix.shape) - 1}] for shape {matrix.shape}")
    v0 = np.random.default_rng(seed).standard_normal(min(matrix.shape))
    u, s, vt = svds(matrix, k=rank, v0=v0)
    order = np.argsort(-s, kind="stable")
    return u[:, order], s[order], vt[order].T


def principal_ui_graph(users, items, n_users: int, n_items: int, rank: int, fraction: float = 0.25,
                       threshold: float = 1e-3, block_size: int = None) -> torch.Tensor:
    """PGL's global-aware principal subgraph of the sym-normalised user-item graph ``Â``, as a sparse
    symmetric ``(n_users + n_items)^2`` tensor ``[[0, B], [B^T, 0]]`` (users first).

    With ``q = int(fraction rank)`` and ``s`` the top-``rank`` singular values of ``Â`` (those of
    ``R̃ = D_u^-1/2 R D_i^-1/2``, each twice): ``sum_{i<q} s_i s_{rank-q+i} u_i v_i^T`` of ``Â``, i.e.
    ``B = sum_{j<q//2} σ_j σ_{(rank-q)//2+j} u_j v_j^T`` over ``R̃``'s triplets; entries with
    ``|B_ui| < threshold`` are dropped. ``B`` is evaluated in user blocks (``block_size x n_items``),
    never whole.
    """
    users, items = torch.as_tensor(users, dtype=torch.long), torch.as_tensor(items, dtype=torch.long)
    q = int(fraction * rank)
    pairs, offset = q // 2, (rank - q) // 2
    if pairs < 1:
        raise ValueError(f"principal graph: int({fraction} x svd_rank {rank}) leaves no singular pair; raise svd_rank")
    R = graphs.user_item_matrix(users, items, n_users, n_items).coalesce()
    (rows, cols), vals = R.indices().numpy(), R.values().double().numpy()
    u, s, v = top_singular_triplets(sp.csr_matrix((vals, (rows, cols)), shape=(n_users, n_items)),
                                    offset + pairs)
    left = torch.from_numpy(u[:, :pairs] * (s[:pairs] * s[offset:offset + pairs]))
    right_t = torch.from_numpy(v[:, :pairs].T.copy())
    block_size = block_size or graphs.auto_block_size(n_items, budget_mb=64)
    parts_r, parts_c, parts_v = [], [], []
    for start in range(0, n_users, block_size):
        block = left[start:start + block_size] @ right_t
        r, c = torch.nonzero(block.abs() >= threshold, as_tuple=True)
        parts_r.append(r + start)
        parts_c.append(c)
        parts_v.append(block[r, c].float())
    r, c, val = torch.cat(parts_r), torch.cat(parts_c) + n_users, torch.cat(parts_v)
    n = n_users + n_items
    return graphs.sparse(torch.cat([r, c]), torch.cat([c, r]), torch.cat([val, val]), (n, n))


class PGL(MultimodalRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        d = self.embedding_size = config["embedding_size"]
        self.n_ui_layers, self.n_mm_layers = config["n_ui_layers"], config["n_mm_layers"]
        self.reg_weight, self.dropout, self.cl_temperature = (config["reg_weight"], config["dropout"],
                                                              config["cl_temperature"])
        self.mode, self.keep_ratio = config["principal_mode"], config["local_keep_ratio"]
        if self.mode not in MODES:
            raise ValueError(f"PGL: principal_mode must be one of {MODES}, got {self.mode!r}")

        self.user_prefs = nn.ModuleDict({m: nn.Embedding(self.n_users, d) for m in self.modalities})
        for table in self.user_prefs.values():
            nn.init.xavier_uniform_(table.weight)
        self.features = self.feature_tables(trainable=config["train_features"])
        self.projector = ModalityProjector(self.modality_dims(), d)

        self.mm_graph = self.mixed_knn_graph(config["knn_k"], config["modality_weights"])
        self.full_adj = self.ui_graph()
        self.train_adj = self.full_adj
        if self.mode == "global":
            self.train_adj = self._operator(self._principal_coo(config), symmetric=True)

    def _principal_coo(self, config) -> torch.Tensor:
        rank = config["svd_rank"] or self.embedding_size
        options = dict(rank=rank, fraction=config["principal_fraction"], threshold=config["principal_threshold"])
        users, items = self.train_users, self.train_items

        def build():
            return principal_ui_graph(users, items, self.n_users, self.n_items, **options)

        key = graphs.graph_cache_key([users, items], n_users=self.n_users, n_items=self.n_items, v=1, **options)
        return graphs.cached_graph(self.graph_cache_dir, "pgl_principal", key, build)

    def pre_epoch_processing(self):
        """Local-aware extraction: a new degree-sensitive edge sample per epoch (global: fixed)."""
        if self.mode == "local":
            self.train_adj = self.pruned_ui_graph(self.keep_ratio)

    def item_representations(self) -> torch.Tensor:
        projected = self.projector({m: t.weight for m, t in self.features.items()})
        return torch.cat([F.normalize(projected[m], dim=1) for m in self.modalities], dim=1)

    def forward(self, adj):
        items = self.item_representations()
        users = torch.cat([self.user_prefs[m].weight for m in self.modalities], dim=1)
        h = propagate(self.mm_graph, items, self.n_mm_layers)
        users, items = split_users_items(lightgcn_propagate(adj, torch.cat([users, items]), self.n_ui_layers),
                                         self.n_users)
        return users, items + h

    def self_contrast(self, x: torch.Tensor) -> torch.Tensor:
        """InfoNCE between two dropout views of the same rows (positives: the same row)."""
        return info_nce(F.dropout(x, self.dropout, self.training), F.dropout(x, self.dropout, self.training),
                        self.cl_temperature)

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items = self.forward(self.train_adj)
        u, p = users[user], items[pos]
        loss = bpr_loss((u * p).sum(1), (u * items[neg]).sum(1))
        if self.reg_weight:
            loss = loss + self.reg_weight * (self.self_contrast(u) + self.self_contrast(p)) / 2
        return loss

    def inference_embeddings(self):
        return self.forward(self.full_adj)
