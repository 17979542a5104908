"""ItemKNNCBF (Dacrema, Cremonesi & Jannach, RecSys 2019): "Are We Really Making Much Progress? A
Worrying Analysis of Recent Neural Recommendation Approaches" -- the content-based item KNN baseline.

No training. Items are compared by their content features ``f_i`` (all modalities side by side,
raw, as MMRec concatenates its visual and textual features) with the shrunk cosine

    s_ij = <f_i, f_j> / (||f_i|| ||f_j|| + shrink),

each item keeps its ``knn_k`` most similar items (row-wise top-k of ``S``, the others set to 0),
and a user's score for item ``i`` sums the similarities from the items ``j`` of her training
history: ``score(u, i) = sum_{j in I_u} s_ji``, i.e. ``R S`` with ``R`` the binary interactions.

As MMRec: the top-k of a row may include the item itself and negative similarities (no
diagonal removal, no threshold). Unlike MMRec, ``S`` is computed block-wise (a block of rows
against all items, top-k kept per block) into a sparse matrix, and ``R S`` only for the users of a
batch, so that no items x items or users x items matrix is ever dense.
"""

from __future__ import annotations

import torch
from recbole.utils import InputType, ModelType
from torch import nn

from recbole_mm.data import graphs
from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import SparseOperator

SCORES_PER_CHUNK = 2**22  # predict(): users per chunk so that a chunk of score rows stays this size


def shrunk_cosine_knn(features: torch.Tensor, k: int, shrink: float, block_size: int | None = None):
    """Top-``k`` of every row of ``S = F F^T / (|f| |f|^T + shrink)``: ``(rows, cols, sims)``, ``n k`` of each.

    Computed ``block_size`` rows at a time (default: :func:`graphs.auto_block_size`), never ``n x n``.
    Rows with zero norm get similarity 0 (``shrink = 0`` would give 0/0).
    """
    n = features.shape[0]
    k = min(k, n)
    block_size = block_size or graphs.auto_block_size(n)
    feats = features.detach().float()
    norms = feats.norm(dim=1)
    feats_t = feats.T.contiguous()
    cols = torch.empty((n, k), dtype=torch.long)
    sims = torch.empty((n, k), dtype=torch.float32)
    with torch.no_grad():
        for start in range(0, n, block_size):
            stop = min(start + block_size, n)
            dots = feats[start:stop] @ feats_t
            denom = norms[start:stop, None] * norms[None, :] + shrink
            block = torch.where(denom > 0, dots / denom.clamp_min(1e-12), torch.zeros_like(dots))
            sims[start:stop], cols[start:stop] = torch.topk(block, k, dim=1)
    rows = torch.arange(n).repeat_interleave(k)
    return rows, cols.reshape(-1), sims.reshape(-1)


def csr_dense_rows(csr: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """``csr[rows]`` as a dense ``(len(rows), n_cols)`` tensor, gathered without a loop over rows."""
    crow, col, val = csr.crow_indices(), csr.col_indices(), csr.values()
    start = crow[rows]
    count = crow[rows + 1] - start
    owner = torch.repeat_interleave(torch.arange(len(rows), device=rows.device), count)
    first = torch.cumsum(count, 0) - count  # where each row's entries begin in the gathered list
    pos = start[owner] + torch.arange(len(owner), device=rows.device) - first[owner]
    out = torch.zeros((len(rows), csr.shape[1]), dtype=val.dtype, device=val.device)
    out[owner, col[pos]] = val[pos]
    return out


class ItemKNNCBF(MultimodalRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.POINTWISE  # nothing is trained: train_neg_sample_args: ~
    type = ModelType.TRADITIONAL  # one pass of the trainer (TraditionalTrainer), like RecBole's ItemKNN

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.knn_k, self.shrink = config["knn_k"], config["shrink"]
        # the trainer's optimizer needs a parameter (RecBole's ItemKNN keeps one too); it never moves
        self.fake_loss = nn.Parameter(torch.zeros(1))
        counts = graphs.user_item_matrix(self.train_users, self.train_items, self.n_users, self.n_items, "none")
        users, items = counts.indices()  # binary R (users x items): repeated interactions count once
        self.history = SparseOperator(graphs.sparse(users, items, torch.ones(len(users)), counts.shape))
        self.sim_t = SparseOperator(self._similarity().t()).to(self.device)  # S^T: R_b S = (S^T R_b^T)^T

    def _similarity(self) -> torch.Tensor:
        """Sparse ``S`` (items x items, cached on disk); the padding item 0 takes no part."""
        features = self.concat_features().detach().float().cpu()
        n = features.shape[0]

        def build():
            rows, cols, sims = shrunk_cosine_knn(features[1:], self.knn_k, self.shrink)
            return graphs.sparse(rows + 1, cols + 1, sims, (n, n))

        key = graphs.graph_cache_key([features], k=self.knn_k, shrink=float(self.shrink), v=1)
        return graphs.cached_graph(self.graph_cache_dir, "itemknncbf", key, build)

    def calculate_loss(self, interaction):
        return torch.zeros((), device=self.device, requires_grad=True)  # nothing to learn

    def user_scores(self, users: torch.Tensor) -> torch.Tensor:
        """``(R S)[users]``: ``(len(users), n_items)`` scores."""
        history = csr_dense_rows(self.history.csr, users)
        return (self.sim_t @ history.T.contiguous()).T

    def full_sort_predict(self, interaction):
        return self.user_scores(interaction[self.USER_ID]).reshape(-1)

    def predict(self, interaction):
        """The same numbers as :meth:`full_sort_predict`: score rows of the batch's distinct users
        (a bounded chunk of users at a time), then the pairs' entries."""
        users, inverse = torch.unique(interaction[self.USER_ID], return_inverse=True)
        items = interaction[self.ITEM_ID]
        out = torch.empty(len(items), device=items.device)
        chunk = max(1, SCORES_PER_CHUNK // self.n_items)
        for start in range(0, len(users), chunk):
            rows = self.user_scores(users[start:start + chunk])
            mask = (inverse >= start) & (inverse < start + chunk)
            out[mask] = rows[inverse[mask] - start, items[mask]]
        return out
