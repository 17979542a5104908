"""Graph building blocks: user-item Laplacian, degree-sensitive pruning, item-item KNN and
co-interaction graphs, user-user co-occurrence graphs, all sparse and vectorised, with an on-disk cache.

Conventions: graphs are ``torch.sparse_coo_tensor`` (coalesced, float32); a user-item edge list is
two LongTensors ``(users, items)`` of internal ids (RecBole's, padding id 0 included in the
counts so that tensors index directly by id).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from logging import getLogger

import numpy as np
import scipy.sparse as sp
import torch
import torch.nn.functional as F

NORMALIZATIONS = ("sym", "rw", "none")


# -- basics -----------------------------------------------------------------------------------
def sparse(rows, cols, values, shape) -> torch.Tensor:
    """A coalesced float32 sparse COO tensor."""
    idx = torch.stack([torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)])
    vals = torch.as_tensor(values, dtype=torch.float32)
    return torch.sparse_coo_tensor(idx, vals, tuple(shape), check_invariants=False).coalesce()


def normalize_edges(rows, cols, values, n_rows, n_cols=None, mode: str = "sym"):
    """Edge weights of ``D_r^{-1/2} A D_c^{-1/2}`` (sym) or ``D_r^{-1} A`` (rw); degrees = weighted sums.

    For a square graph (``n_cols`` None) row and column degrees are the same vector (the graph is
    taken as given: symmetric inputs stay symmetric). Zero-degree nodes get weight 0, not inf.
    """
    if mode not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {mode!r}")
    values = torch.as_tensor(values, dtype=torch.float32)
    if mode == "none":
        return values
    rows = torch.as_tensor(rows, dtype=torch.long)
    cols = torch.as_tensor(cols, dtype=torch.long)
    rows, cols = rows.to(values.device), cols.to(values.device)
    row_deg = torch.zeros(n_rows, device=values.device).index_add_(0, rows, values)
    if mode == "rw":
        inv = torch.where(row_deg > 0, 1.0 / row_deg, torch.zeros_like(row_deg))
        return inv[rows] * values
    col_deg = row_deg if n_cols is None else torch.zeros(n_cols, device=values.device).index_add_(0, cols, values)
    r_inv = torch.where(row_deg > 0, row_deg.pow(-0.5), torch.zeros_like(row_deg))
    c_inv = torch.where(col_deg > 0, col_deg.pow(-0.5), torch.zeros_like(col_deg))
    return r_inv[rows] * values * c_inv[cols]


def interaction_edges(dataset):
    """``(users, items)`` LongTensors of a (training) dataset's interactions."""
    inter = dataset.inter_feat
    return inter[dataset.uid_field].long().clone(), inter[dataset.iid_field].long().clone()


# -- user-item graph ----------------------------------------------------------------------------
def edge_norm_values(users, items, n_users, n_items) -> torch.Tensor:
    """``1 / (sqrt(d_u) sqrt(d_i))`` for every user-item edge (LightGCN's edge weight)."""
    ones = torch.ones(len(users))
    return normalize_edges(users, items, ones, n_users, n_items, mode="sym")


def bipartite_norm_adj(users, items, n_users, n_items, normalization: str = "sym",
                       self_loops: bool = False) -> torch.Tensor:
    """Normalised ``A = [[0, R], [R^T, 0]]`` (plus ``I`` with ``self_loops``), ``(n_users+n_items)^2``.

    ``sym``: ``D^{-1/2} A D^{-1/2}`` (LightGCN Eq. 7); ``rw``: ``D^{-1} A`` (LATTICE's ``D^{-1}(A+I)``).
    """
    users = torch.as_tensor(users, dtype=torch.long)
    items = torch.as_tensor(items, dtype=torch.long)
    n = n_users + n_items
    rows = torch.cat([users, items + n_users])
    cols = torch.cat([items + n_users, users])
    if self_loops:
        rows = torch.cat([rows, torch.arange(n)])
        cols = torch.cat([cols, torch.arange(n)])
    values = normalize_edges(rows, cols, torch.ones(len(rows)), n, mode=normalization)
    return sparse(rows, cols, values, (n, n))


def user_item_matrix(users, items, n_users, n_items, normalization: str = "sym") -> torch.Tensor:
    """``R`` as a sparse ``(n_users, n_items)`` tensor: ``sym`` = ``D_u^{-1/2} R D_i^{-1/2}`` (the
    user-item block of LightGCN's adjacency), ``rw`` = ``D_u^{-1} R`` (mean over a user's items),
    ``none`` = binary. Used to lift item representations to users (MGCN, LGMRec, AlignRec).
    """
    users = torch.as_tensor(users, dtype=torch.long)
    items = torch.as_tensor(items, dtype=torch.long)
    values = normalize_edges(users, items, torch.ones(len(users)), n_users, n_items, mode=normalization)
    return sparse(users, items, values, (n_users, n_items))


def degree_sensitive_prune(users, items, n_users, n_items, keep_ratio: float, generator=None):
    """Keep ``ceil(keep_ratio |E|)`` edges sampled without replacement with probability
    ``p_e ∝ 1 / (sqrt(d_u) sqrt(d_i))`` (FREEDOM Sec. 3.2; USERec), so edges between high-degree
    nodes are dropped first. Returns the kept ``(users, items)``.
    """
    if not 0.0 < keep_ratio <= 1.0:
        raise ValueError(f"keep_ratio must be in (0, 1], got {keep_ratio}")
    n_keep = math.ceil(keep_ratio * len(users))
    if n_keep >= len(users):
        return users, items
    weights = edge_norm_values(users, items, n_users, n_items)
    kept = torch.multinomial(weights, n_keep, replacement=False, generator=generator)
    return users[kept], items[kept]


# -- item-item graphs ---------------------------------------------------------------------------
def auto_block_size(n: int, budget_mb: int = 256) -> int:
    """Rows per similarity block so that one ``block x n`` float32 block fits in ``budget_mb``."""
    return int(max(1, min(n, budget_mb * 2**20 // (4 * max(n, 1)))))


KNN_BACKENDS = ("torch", "faiss", "auto")
FAISS_MIN_ITEMS = 50_000  # below this the two are equally fast (measured: benchmarks/README.md)


def faiss_available() -> bool:
    try:
        import faiss  # noqa: F401
    except ImportError:
        return False
    return True


def knn_indices(features: torch.Tensor, k: int, block_size: int = None, include_self: bool = True,
                backend: str = "torch"):
    """Indices ``(n, k)`` and cosine similarities of every row's top-``k`` neighbours.

    ``torch``: computed block-wise without gradients: peak memory ``O(block_size * n + n * k)``,
    never an n x n matrix; the default block holds 256 MB of similarities (:func:`auto_block_size`).
    ``faiss``: exact inner-product search (``IndexFlatIP``) on the normalised rows, ~20% faster at
    200k items and lighter on memory (optional ``faiss-cpu``). ``auto``: faiss when installed and
    ``n >= FAISS_MIN_ITEMS``. Both are exact; they can only differ in the order of tied neighbours.
    """
    n = features.shape[0]
    k = min(k, n if include_self else n - 1)
    if backend not in KNN_BACKENDS:
        raise ValueError(f"knn backend '{backend}' is not one of {KNN_BACKENDS}")
    if backend == "auto":
        backend = "faiss" if n >= FAISS_MIN_ITEMS and faiss_available() else "torch"
    if backend == "faiss":
        return _faiss_knn(features, k, include_self)
    block_size = block_size or auto_block_size(n)
    cols = torch.empty((n, k), dtype=torch.long, device=features.device)
    sims = torch.empty((n, k), dtype=torch.float32, device=features.device)
    with torch.no_grad():
        normed = F.normalize(features.detach().float(), dim=1)
        normed_t = normed.T.contiguous()  # (d, n): a contiguous right operand is ~7% faster per block
        # one block buffer reused by every block: a fresh block_size x n tensor per block costs a
        # page fault per 4 KB page (about a third of the build time on CPU)
        buffer = torch.empty((block_size, n), dtype=normed.dtype, device=normed.device)
        for start in range(0, n, block_size):
            stop = min(start + block_size, n)
            block = torch.mm(normed[start:stop], normed_t, out=buffer[: stop - start])
            if not include_self:
                block[torch.arange(stop - start), torch.arange(start, stop)] = -float("inf")
            val, idx = torch.topk(block, k, dim=1)
            cols[start:stop], sims[start:stop] = idx, val
    return cols, sims


def _faiss_knn(features: torch.Tensor, k: int, include_self: bool):
    import faiss

    normed = F.normalize(features.detach().float().cpu(), dim=1).numpy()
    index = faiss.IndexFlatIP(normed.shape[1])
    index.add(normed)
    extra = 0 if include_self else 1
    sims, cols = index.search(normed, k + extra)
    cols, sims = torch.from_numpy(cols), torch.from_numpy(sims)
    if not include_self:  # drop each row's own index (or, if a duplicate outranks it, the last hit)
        is_self = cols == torch.arange(len(cols)).unsqueeze(1)
        is_self[:, -1] |= ~is_self.any(1)
        keep = ~is_self
        cols, sims = cols[keep].view(-1, k), sims[keep].view(-1, k)
    return cols.to(features.device), sims.to(features.device)


def knn_edges(features: torch.Tensor, k: int, block_size: int = None, include_self: bool = True,
              backend: str = "torch"):
    """Top-``k`` cosine neighbour edges ``(rows, cols, sims)``, ``n*k`` of them (see :func:`knn_indices`)."""
    cols, sims = knn_indices(features, k, block_size=block_size, include_self=include_self, backend=backend)
    rows = torch.arange(features.shape[0], device=features.device).repeat_interleave(cols.shape[1])
    return rows, cols.reshape(-1), sims.reshape(-1)


def learned_knn_edges(features: torch.Tensor, k: int, normalization: str | None = None):
    """Differentiable top-``k`` cosine graph of ``features`` (n, d) as an edge list ``(rows, cols, values)``
    (LATTICE's and MICRO's learned item graphs).

    Neighbours (self included) are found without gradient, block-wise (:func:`knn_indices`); the kept
    edges' cosines are recomputed with gradient, so ``values`` is differentiable w.r.t. ``features`` as a
    dense ``topk(sim)`` would be on its kept entries. ``normalization``: ``None`` (raw cosines) or a mode
    of :func:`normalize_edges` (``sym``: ``D^-1/2 S D^-1/2`` with weighted degrees).
    """
    nbr, _ = knn_indices(features, k)
    rows = torch.arange(features.shape[0], device=features.device).repeat_interleave(nbr.shape[1])
    cols = nbr.reshape(-1)
    normed = F.normalize(features, dim=1)
    # index_select, not normed[cols]: the backward of advanced indexing (index_put_ with accumulate)
    # is not deterministic on CPU with several threads when indices repeat; index_select's is
    sims = (normed.index_select(0, rows) * normed.index_select(0, cols)).sum(1)
    if normalization is None:
        return rows, cols, sims
    return rows, cols, normalize_edges(rows, cols, sims, features.shape[0], mode=normalization)


def knn_graph(features: torch.Tensor, k: int, normalization: str = "sym", weighted: bool = False,
              block_size: int = None, include_self: bool = True, backend: str = "torch") -> torch.Tensor:
    """Item-item KNN graph from one modality's features (FREEDOM: binary, sym; LATTICE: weighted).

    ``weighted`` keeps the cosine similarities as edge weights, otherwise every kept edge is 1.
    """
    rows, cols, sims = knn_edges(features, k, block_size=block_size, include_self=include_self, backend=backend)
    values = sims if weighted else torch.ones_like(sims)
    n = features.shape[0]
    return sparse(rows, cols, normalize_edges(rows, cols, values, n, mode=normalization), (n, n))


def item_knn_graph(features: torch.Tensor, k: int, normalization: str = "sym", weighted: bool = False,
                   backend: str = "torch"):
    """:func:`knn_graph` over RecBole's item ids: row 0 (padding) takes no part, shape stays n x n."""
    n = features.shape[0]
    inner = knn_graph(features[1:].float(), k, normalization=normalization, weighted=weighted, backend=backend)
    idx = inner.indices() + 1
    return sparse(idx[0], idx[1], inner.values(), (n, n))


def weighted_sum(graphs, weights) -> torch.Tensor:
    """``sum_m w_m S_m`` of same-shaped sparse graphs (FREEDOM Eq. 3 / LATTICE's modality mix)."""
    total = None
    for graph, weight in zip(graphs, weights):
        term = graph * float(weight)
        total = term if total is None else total + term
    return total.coalesce()


def _topk_per_row(matrix: sp.csr_matrix, k: int):
    """Largest ``k`` entries of each row of a CSR matrix, vectorised: ``(rows, cols, values)``."""
    matrix = matrix.tocsr()
    counts = np.diff(matrix.indptr)
    rows = np.repeat(np.arange(matrix.shape[0]), counts)
    order = np.lexsort((matrix.indices, -matrix.data, rows))  # ties: the smaller column first
    rank = np.arange(len(order)) - np.repeat(matrix.indptr[:-1], counts)
    keep = order[rank < k]
    return rows[keep], matrix.indices[keep], matrix.data[keep]


def binary_interactions(users, items, n_users: int, n_items: int) -> sp.csr_matrix:
    """SciPy CSR ``R`` (users x items), 1 where a user interacted with an item (duplicates count once)."""
    users, items = np.asarray(users), np.asarray(items)
    R = sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)), shape=(n_users, n_items))
    R.data[:] = 1.0
    return R


def co_interaction_graph(users, items, n_users, n_items, k: int, normalization: str = "sym",
                         block_size: int = 8192) -> torch.Tensor:
    """Behaviour item-item graph: ``R^T R`` (co-interaction counts) without the diagonal, top-``k``
    per item, normalised. Built in item blocks so ``R^T R`` is never held whole.
    """
    R = binary_interactions(users, items, n_users, n_items)
    RT = R.T.tocsr()
    parts = []
    for start in range(0, n_items, block_size):
        stop = min(start + block_size, n_items)
        block = (RT[start:stop] @ R).tocoo()
        off_diag = block.row + start != block.col
        block = sp.csr_matrix((block.data[off_diag], (block.row[off_diag], block.col[off_diag])), shape=block.shape)
        r, c, v = _topk_per_row(block, k)
        parts.append((r + start, c, v))
    rows = np.concatenate([p[0] for p in parts])
    cols = np.concatenate([p[1] for p in parts])
    vals = np.concatenate([p[2] for p in parts]).astype(np.float32)
    rows, cols = torch.from_numpy(rows).long(), torch.from_numpy(cols).long()
    values = normalize_edges(rows, cols, torch.from_numpy(vals), n_items, mode=normalization)
    return sparse(rows, cols, values, (n_items, n_items))


# -- user-user graphs ---------------------------------------------------------------------------
USER_GRAPH_NORMALIZATIONS = ("none", "softmax", "mean", "sym", "rw")


def _row_blocks(cost: np.ndarray, budget: int):
    """``(start, stop)`` runs of consecutive rows whose summed ``cost`` stays within ``budget``
    (a row costlier than the budget is a block of its own)."""
    before = np.cumsum(cost) - cost
    block = (before // max(budget, 1)).astype(np.int64)
    cuts = np.concatenate([[0], np.flatnonzero(np.diff(block)) + 1, [len(cost)]])
    return [(int(a), int(b)) for a, b in zip(cuts[:-1], cuts[1:]) if b > a]


def user_cooccurrence_counts(users, items, n_users, n_items, k: int, budget: int = 2**23):
    """Every user's top-``k`` co-occurring users: ``(rows, cols, counts)``, ``counts[e]`` the number of
    training items user ``rows[e]`` shares with ``cols[e]`` (``R R^T`` off the diagonal, zeros left out).

    Sorted by row, then count descending, ties broken by the smaller user id. ``R R^T`` is computed
    sparse in blocks of users whose products (the summed degrees of their items, a bound on a
    block's entries) stay within ``budget``, so it is never held whole (never dense).
    """
    R = binary_interactions(users, items, n_users, n_items)
    RT = R.T.tocsr()
    cost = R @ np.diff(RT.indptr).astype(np.float64)  # products per user row of R R^T
    parts = []
    for start, stop in _row_blocks(cost, budget):
        block = (R[start:stop] @ RT).tocoo()
        off_diag = block.row + start != block.col
        block = sp.csr_matrix((block.data[off_diag], (block.row[off_diag], block.col[off_diag])), shape=block.shape)
        r, c, v = _topk_per_row(block, k)
        parts.append((r + start, c, v))
    if not parts:
        empty = torch.zeros(0, dtype=torch.long)
        return empty, empty, torch.zeros(0)
    rows, cols, counts = (np.concatenate([p[i] for p in parts]) for i in range(3))
    return torch.from_numpy(rows).long(), torch.from_numpy(cols).long(), torch.from_numpy(counts.astype(np.float32))


def row_softmax(rows, values, n_rows: int) -> torch.Tensor:
    """``exp(v_e) / sum_{e' in row(e)} exp(v_e')`` per row of an edge list (stable: row max subtracted)."""
    rows = torch.as_tensor(rows, dtype=torch.long)
    values = torch.as_tensor(values, dtype=torch.float32)
    row_max = torch.full((n_rows,), -float("inf")).scatter_reduce(0, rows, values, "amax")
    e = torch.exp(values - row_max[rows])
    return e / torch.zeros(n_rows).index_add_(0, rows, e)[rows]


def normalize_user_graph(graph: torch.Tensor, normalization: str = "softmax") -> torch.Tensor:
    """A co-occurrence count graph with its edge weights: ``none`` the counts; ``softmax`` a softmax
    over each user's neighbour counts (DualGNN's ``softmax`` aggregation); ``mean`` ``1/|N(u)|``;
    ``sym`` / ``rw`` as :func:`normalize_edges` (counts as weights)."""
    if normalization not in USER_GRAPH_NORMALIZATIONS:
        raise ValueError(f"user graph normalization must be one of {USER_GRAPH_NORMALIZATIONS}, got {normalization!r}")
    graph = graph.coalesce()
    (rows, cols), values, n = graph.indices(), graph.values(), graph.shape[0]
    if normalization == "softmax":
        values = row_softmax(rows, values, n)
    elif normalization == "mean":
        values = normalize_edges(rows, cols, torch.ones_like(values), n, mode="rw")
    else:
        values = normalize_edges(rows, cols, values, n, mode=normalization)
    return sparse(rows, cols, values, graph.shape)


def user_cooccurrence_graph(users, items, n_users, n_items, k: int, normalization: str = "none",
                            budget: int = 2**23) -> torch.Tensor:
    """User-user co-occurrence graph (DualGNN Sec. III-C; DRAGON's user-user graph): each user's
    top-``k`` users by number of co-interacted training items (:func:`user_cooccurrence_counts`),
    ``(n_users, n_users)``, weights per :func:`normalize_user_graph`. Not symmetric (top-k per row).
    """
    rows, cols, counts = user_cooccurrence_counts(users, items, n_users, n_items, k, budget=budget)
    graph = sparse(rows, cols, counts, (n_users, n_users))
    return graph if normalization == "none" else normalize_user_graph(graph, normalization)


def padded_user_graph(graph: torch.Tensor, k: int, aggregation: str = "softmax", generator=None) -> torch.Tensor:
    """The per-epoch user graph of the official DualGNN / DRAGON code (their ``topk_sample``).

    ``graph``: top-``k`` co-occurrence counts (:func:`user_cooccurrence_graph`, ``none``). A user with
    ``0 < n < k`` neighbours gets its list padded to ``k`` entries: entry ``j >= n`` repeats one of the
    ``j`` entries before it, drawn uniformly (a Pólya urn: repeated neighbours are likelier to repeat
    again). The ``k`` entries then get ``softmax`` weights over their counts, or ``mean`` ``1/k`` each;
    a repeated neighbour's weights add up. Users without neighbours keep an empty row. Vectorised
    over users (one draw per padding position).
    """
    if aggregation not in ("softmax", "mean"):
        raise ValueError(f"user graph aggregation must be softmax or mean, got {aggregation!r}")
    graph = graph.coalesce()
    (rows, cols), counts, n = graph.indices(), graph.values(), graph.shape[0]
    degree = torch.bincount(rows, minlength=n)
    if len(rows) and int(degree.max()) > k:
        raise ValueError(f"padded_user_graph: the graph has more than k={k} neighbours per user")
    users = torch.nonzero(degree).squeeze(1)
    deg = degree[users]
    offset = (torch.cumsum(degree, 0) - degree)[users]
    position = torch.arange(k)
    slots = torch.where(position < deg.unsqueeze(1), offset.unsqueeze(1) + position, 0)
    for j in range(1, k):
        pad = deg <= j
        if pad.any():
            draw = torch.randint(0, j, (int(pad.sum()),), generator=generator)
            slots[pad, j] = slots[pad].gather(1, draw.unsqueeze(1)).squeeze(1)
    if aggregation == "softmax":
        weights = torch.softmax(counts[slots], dim=1)
    else:
        weights = torch.full(slots.shape, 1.0 / k)
    return sparse(users.repeat_interleave(k), cols[slots].reshape(-1), weights.reshape(-1), (n, n))


# -- cache --------------------------------------------------------------------------------------
def graph_cache_key(tensors, **options) -> str:
    """Content hash of the input tensors plus the build options."""
    digest = hashlib.sha1()
    for tensor in tensors:
        array = np.ascontiguousarray(torch.as_tensor(tensor).detach().cpu().numpy())
        digest.update(str(array.shape).encode())
        digest.update(str(array.dtype).encode())
        digest.update(array.tobytes())
    digest.update(json.dumps(options, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:20]


def cached_graph(cache_dir, name: str, key: str, build):
    """Load graph ``name`` with content ``key`` from ``cache_dir`` or ``build()`` and store it.

    ``cache_dir`` None disables caching. Files are written atomically (temporary file + rename).
    """
    if not cache_dir:
        return build()
    path = os.path.join(cache_dir, f"{name}-{key}.pt")
    if os.path.isfile(path):
        try:
            data = torch.load(path, weights_only=True)
            return torch.sparse_coo_tensor(
                data["indices"], data["values"], tuple(data["shape"]), check_invariants=True
            ).coalesce()
        except Exception as exc:  # a corrupt cache entry is rebuilt, not fatal
            getLogger().warning("graph cache %s unreadable (%s); rebuilding", path, exc)
    graph = build().coalesce()
    os.makedirs(cache_dir, exist_ok=True)
    tmp = f"{path}.tmp-{os.getpid()}"
    torch.save({"indices": graph.indices(), "values": graph.values(), "shape": list(graph.shape)}, tmp)
    os.replace(tmp, path)
    return graph
