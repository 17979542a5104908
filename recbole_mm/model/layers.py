"""Shared layers: graph propagation, modality projection and fusion."""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

FUSIONS = ("mean", "sum", "concat", "gate", "attention", "cross_attention", "non_invasive")
COMBINES = ("mean", "linear")  # how cross_attention merges its per-modality outputs


class _FixedSpMM(torch.autograd.Function):
    """``M @ X`` for a fixed sparse ``M``: backward is ``M^T @ grad`` with a stored CSR transpose.

    torch's COO ``sparse.mm`` backward transposes and coalesces every call; keeping CSR copies of
    M and M^T makes a LightGCN layer forward+backward several times faster on CPU.
    """

    @staticmethod
    def forward(ctx, op, x):
        ctx.op = op
        return op.csr @ x

    @staticmethod
    def backward(ctx, grad):
        return None, ctx.op.csr_t @ grad


class SparseOperator(nn.Module):
    """A fixed (non-learned) sparse graph used for propagation; build once, multiply many times.

    A module, so that a model's graphs follow ``model.to(device)`` (and ``.float()`` ...) with its
    parameters. The CSR matrices are plain attributes moved by :meth:`_apply`, not buffers: they
    stay out of checkpoints (they are rebuilt from the data) and out of DDP's buffer broadcast,
    which cannot send sparse tensors.
    """

    def __init__(self, coo: torch.Tensor, symmetric: bool = False):
        super().__init__()
        coo = coo.coalesce()
        self.shape = tuple(coo.shape)
        self.symmetric = symmetric
        with warnings.catch_warnings():  # CSR support is flagged beta; it is what we want here
            warnings.simplefilter("ignore")
            self.csr = coo.to_sparse_csr()
            self._csr_t = None if symmetric else coo.t().coalesce().to_sparse_csr()

    @property
    def csr_t(self) -> torch.Tensor:
        """``M^T`` as CSR (``M`` itself when symmetric: one copy on the device)."""
        return self.csr if self.symmetric else self._csr_t

    def _apply(self, fn, recurse=True):
        self.csr = fn(self.csr)
        if self._csr_t is not None:
            self._csr_t = fn(self._csr_t)
        return super()._apply(fn, recurse)

    @property
    def device(self) -> torch.device:
        return self.csr.device

    def edges(self):
        """``(rows, cols, values)`` in row-major order (that of the coalesced COO it was built from)."""
        rows = getattr(self, "_rows", None)  # a fixed pattern: expanded once (per-batch dropout calls this)
        if rows is None or rows.device != self.device:
            rows = self._rows = torch.repeat_interleave(torch.arange(self.shape[0], device=self.device),
                                                        self.csr.crow_indices().diff())
        return rows, self.csr.col_indices(), self.csr.values()

    def extra_repr(self) -> str:
        return f"shape={self.shape}, nnz={self.csr.values().numel()}, symmetric={self.symmetric}"

    def _transpose_layout(self):
        """``(cols, order, t_crow, t_cols)``: ``M``'s column indices in CSR order, for each entry of ``M^T``
        in CSR order the position of its entry in ``M``, and ``M^T``'s row pointers and column indices
        (cached: a fixed pattern)."""
        cache = getattr(self, "_t_layout", None)
        if cache is None or cache[0].device != self.device:
            rows, cols, _ = self.edges()
            order = torch.argsort(cols * self.shape[0] + rows, stable=True)
            t_crow = torch.zeros(self.shape[1] + 1, dtype=torch.long, device=self.device)
            t_crow[1:] = torch.cumsum(torch.bincount(cols, minlength=self.shape[1]), 0)
            cache = self._t_layout = (cols, order, t_crow, rows[order])
        return cache

    def reweighted(self, values: torch.Tensor) -> "SparseOperator":
        """The same sparsity pattern with new entry values (in :meth:`edges` order; zeros stay stored).

        No sorting or coalescing, only a gather for the transpose: what per-batch edge dropout needs
        (SelfCF draws a new dropped graph for every batch; rebuilding it from COO took half an epoch).
        """
        cols, order, t_crow, t_cols = self._transpose_layout()
        out = SparseOperator.__new__(SparseOperator)
        nn.Module.__init__(out)
        out.shape, out.symmetric = self.shape, False
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out.csr = torch.sparse_csr_tensor(self.csr.crow_indices(), cols, values, self.shape)
            out._csr_t = torch.sparse_csr_tensor(t_crow, t_cols, values[order], self.shape[::-1])
        return out

    def __matmul__(self, x: torch.Tensor) -> torch.Tensor:
        return _FixedSpMM.apply(self, x)


def spmm(graph, h: torch.Tensor) -> torch.Tensor:
    """``graph @ h`` for a :class:`SparseOperator` or a torch sparse tensor."""
    return graph @ h if isinstance(graph, SparseOperator) else torch.sparse.mm(graph, h)


def propagate(graph, h: torch.Tensor, n_layers: int) -> torch.Tensor:
    """``S^L h``: ``n_layers`` rounds of sparse message passing, last layer returned."""
    for _ in range(n_layers):
        h = spmm(graph, h)
    return h


class _EdgeSpMM(torch.autograd.Function):
    """``S @ x`` for ``S`` given as an edge list whose values carry a gradient (a learned graph).

    Forward and the ``x`` gradient run on CSR matrices (built once per call); the value gradient is
    ``dL/ds_rc = <dL/dy_r, x_c>``, one gather-dot over the edges. Far cheaper on CPU than
    gather + ``index_add`` over edges x dims, whose backward scatters again.
    """

    @staticmethod
    def forward(ctx, rows, cols, values, n, x):
        ctx.save_for_backward(rows, cols, values, x)
        ctx.n = n
        return _csr(rows, cols, values, n) @ x

    @staticmethod
    def backward(ctx, grad):
        rows, cols, values, x = ctx.saved_tensors
        grad_values = grad_x = None
        if ctx.needs_input_grad[2]:
            grad_values = (grad[rows] * x[cols]).sum(1)
        if ctx.needs_input_grad[4]:
            grad_x = _csr(cols, rows, values, ctx.n) @ grad
        return None, None, grad_values, None, grad_x


def _csr(rows, cols, values, n):
    coo = torch.sparse_coo_tensor(torch.stack([rows, cols]), values.detach(), (n, n)).coalesce()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return coo.to_sparse_csr()


def edge_propagate(rows, cols, values, h: torch.Tensor, n_layers: int) -> torch.Tensor:
    """``S^L h`` for a graph given as an edge list, differentiable w.r.t. the edge ``values``.

    Used where the graph itself is learned (LATTICE): ``(S h)_r = sum_{(r,c)} s_rc h_c``; duplicate
    edges add up. With ``values`` not requiring a gradient, prefer a :class:`SparseOperator`
    built once.
    """
    for _ in range(n_layers):
        h = _EdgeSpMM.apply(rows, cols, values, h.shape[0], h)
    return h


def lightgcn_propagate(adj, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """LightGCN (He et al., SIGIR 2020, Eq. 8): ``mean(E^0, Â E^0, ..., Â^L E^0)``."""
    # a running sum, not stack + mean: no (L+1) x N x d copy, nor its backward (a fixed cost per batch)
    h, total = ego, ego
    for _ in range(n_layers):
        h = spmm(adj, h)
        total = total + h
    return total / (n_layers + 1)


def refined_propagate(adj, ego: torch.Tensor, n_layers: int) -> torch.Tensor:
    """Layer-refined propagation (LayerGCN; COHESION's composite graph): ``sum_{l=1..L} E^l`` with
    ``E^{l+1} = cos(A E^l, E^0) * A E^l`` (row-wise cosine)."""
    # cos(h, e) = <h, e/|e|> / |h|: the ego norms once per forward, not once per layer (half the
    # elementwise work of F.cosine_similarity's forward and backward, which dominate this model)
    ego_unit = ego / ego.norm(dim=1, keepdim=True).clamp_min(1e-8)
    h, out = ego, None
    for _ in range(n_layers):
        h = adj @ h
        cos = (h * ego_unit).sum(1, keepdim=True) / h.norm(dim=1, keepdim=True).clamp_min(1e-8)
        h = cos * h
        out = h if out is None else out + h
    return out


class _RowNormalize(torch.autograd.Function):
    """``y = x / max(||x||_2, eps)`` per row, saving only ``y`` and the norms for backward.

    ``F.normalize`` keeps its input for the backward pass as well as handing its output to the next
    layer, two full copies of a node table; the gradient needs only the output:
    ``dx = (g - y <g, y>) / ||x||`` where ``||x|| > eps``, ``g / eps`` where the norm was clamped.
    """

    @staticmethod
    def forward(ctx, x, eps):
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True).clamp_min_(eps)
        y = x / norm
        ctx.save_for_backward(y, norm)
        ctx.eps = eps
        return y

    @staticmethod
    def backward(ctx, grad):
        y, norm = ctx.saved_tensors
        dot = torch.linalg.vecdot(grad, y, dim=1).unsqueeze(1) * (norm > ctx.eps)
        return torch.addcmul(grad, y, dot, value=-1.0).div_(norm), None


def normalize_rows(x: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """``F.normalize(x, dim=1)`` for a 2-d ``x`` that keeps one copy, not two, for backward (a
    graph model's all-node input tables: 0.26 GB each on an Elec-sized graph at width 256)."""
    if not (torch.is_grad_enabled() and x.requires_grad):
        return F.normalize(x, dim=1, eps=eps)
    return _RowNormalize.apply(x, eps)


def recompute(fn, *args):
    """``fn(*args)``, keeping only ``args`` for the backward pass and running ``fn`` again there
    (``torch.utils.checkpoint``, RNG state replayed: the same numbers). For cheap element-wise work
    over all nodes (a sampled Gaussian, a KL term, a product of experts) whose intermediates would
    otherwise stay alive, one full table each, until backward."""
    if torch.is_grad_enabled() and any(isinstance(a, torch.Tensor) and a.requires_grad for a in args):
        return checkpoint(fn, *args, use_reentrant=False)
    return fn(*args)


def first_occurrence(ids: torch.Tensor) -> torch.Tensor:
    """Row index of each distinct value's first occurrence in ``ids``, in sorted value order
    (deterministic, unlike a scatter with repeated indices)."""
    _, inverse, counts = torch.unique(ids, return_inverse=True, return_counts=True)
    order = torch.argsort(inverse, stable=True)
    return order[torch.cumsum(counts, 0) - counts]


def split_users_items(h: torch.Tensor, n_users: int):
    return h[:n_users], h[n_users:]


def take_rows(table: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``table[index]`` for a batch of row ids, as an embedding lookup: the same rows and gradient,
    but its backward is a sorted accumulation where ``table[index]``'s is an ``index_put_`` with
    accumulate -- on CPU about a third of the gather's forward+backward cost (2048 of 1858 rows)."""
    return F.embedding(index, table)


class ModalityProjector(nn.Module):
    """One linear map per modality, ``d_m -> dim`` (optionally followed by an activation)."""

    def __init__(self, dims: dict, dim: int, activation: str = None):
        super().__init__()
        self.proj = nn.ModuleDict({name: nn.Linear(d, dim) for name, d in dims.items()})
        self.act = {"tanh": torch.tanh, "sigmoid": torch.sigmoid, "leaky_relu": nn.functional.leaky_relu,
                    None: None}[activation]

    def forward(self, features: dict) -> dict:
        out = {}
        for name, layer in self.proj.items():
            h = layer(features[name])
            out[name] = self.act(h) if self.act is not None else h
        return out

    def difference(self, first: dict, second: dict) -> dict:
        """``{m: P_m(first) - P_m(second)}`` in one projection of ``first - second``.

        Exact for the linear (no activation) projector, whose bias cancels; a pairwise (BPR) term on
        projected features thus costs one feature-sized matmul per pair instead of two.
        """
        if self.act is not None:
            raise ValueError("difference() needs a linear projector (activation=None)")
        return {name: nn.functional.linear(first[name] - second[name], layer.weight) for name, layer in self.proj.items()}


class Fusion(nn.Module):
    """Fuse M same-sized representations ``(N, d)`` into one ``(N, d)``.

    * ``mean`` / ``sum``: parameter-free;
    * ``concat``: ``W [x_1; ...; x_M]`` (a linear layer over the concatenation);
    * ``gate``: ``sum_m sigmoid(W_m x_m) * x_m`` (element-wise gates, one per modality);
    * ``attention``: ``sum_m a_m x_m`` with ``a = softmax_m(q^T tanh(W x_m + b))`` per row
      (MGCN's modality attention; coarse-grained attention in the survey's terms);
    * ``cross_attention`` (CMBF, Chen et al., Sensors 2021; fine-grained): each input attends over
      the others, ``z_m = x_m + MHA(q = x_m, k = v = {x_j : j != m})`` (``torch.nn.MultiheadAttention``,
      ``heads`` heads of scaled dot-product attention, its own in/out projections), then
      ``combine``: ``mean_m z_m`` or ``W [z_1; ...; z_M]`` (``linear``). Needs M >= 2;
    * ``non_invasive`` (NOVA, Liu et al., AAAI 2021): **the first input is the ID branch** ``x_0``,
      the others ``x_1..x_M`` side information. Per row, a set of M + 1 tokens ``t = 0..M`` with
      queries/keys from the fused ``F_0 = x_0``, ``F_t = x_0 + x_t`` (NOVA's additive fusion) and
      values from the ID alone, ``V_t = U_t x_0`` (one bias-free map per token: a set with a single
      ID would otherwise give equal values and a constant output);
      ``y = x_0 + mean_t MHA(q = F, k = F, v = V)_t``. Side information only decides how the ID
      views are mixed; it never enters the value stream (``x_0 = 0`` gives a side-independent
      output). Needs M >= 1.

    Only ``concat`` takes inputs of different sizes (``concat_width`` = their total width).

    ``last_weights`` keeps the latest attention weights (``attention``: ``(N, M)``;
    ``cross_attention`` ``(N, M, M)`` with a zero diagonal; ``non_invasive`` ``(N, M+1, M+1)``;
    averaged over heads) for inspection.
    """

    def __init__(self, mode: str, dim: int, n_inputs: int, heads: int = 1, combine: str = "mean",
                 concat_width: int | None = None):
        super().__init__()
        if mode not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {mode!r}")
        self.mode = mode
        if mode == "concat":  # concat_width: the inputs' total width when they differ in size
            self.linear = nn.Linear(concat_width or dim * n_inputs, dim)
        elif mode == "gate":
            self.gates = nn.ModuleList(nn.Linear(dim, dim) for _ in range(n_inputs))
        elif mode == "attention":
            self.key = nn.Linear(dim, dim)
            self.query = nn.Linear(dim, 1, bias=False)
        elif mode in ("cross_attention", "non_invasive"):
            if n_inputs < 2:
                what = "two modalities" if mode == "cross_attention" else "the ID input and one side input"
                raise ValueError(f"fusion {mode} needs at least {what}, got {n_inputs} input(s)")
            if dim % heads:
                raise ValueError(f"fusion {mode}: {heads} heads do not divide the dimension {dim}")
            self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
            if mode == "cross_attention":
                if combine not in COMBINES:
                    raise ValueError(f"cross_attention combine must be one of {COMBINES}, got {combine!r}")
                self.combine = combine
                self.linear = nn.Linear(dim * n_inputs, dim) if combine == "linear" else None
                # a query never attends to its own modality (True = not allowed)
                self.register_buffer("self_mask", torch.eye(n_inputs, dtype=torch.bool), persistent=False)
            else:
                self.value_maps = nn.Parameter(torch.empty(n_inputs, dim, dim))  # U_t, applied as x_0 U_t
                for u in self.value_maps:
                    nn.init.xavier_uniform_(u)
        self.last_weights = None

    def forward(self, inputs) -> torch.Tensor:
        inputs = list(inputs)
        if self.mode == "mean":
            return torch.stack(inputs).mean(0)
        if self.mode == "sum":
            return torch.stack(inputs).sum(0)
        if self.mode == "concat":
            return self.linear(torch.cat(inputs, dim=-1))
        if self.mode == "gate":
            return sum(torch.sigmoid(g(x)) * x for g, x in zip(self.gates, inputs))
        stacked = torch.stack(inputs, dim=1)  # (N, M, d)
        if self.mode == "cross_attention":
            out, weights = self.attn(stacked, stacked, stacked, attn_mask=self.self_mask)
            self.last_weights = weights.detach()
            z = stacked + out
            return z.mean(1) if self.linear is None else self.linear(z.flatten(1))
        if self.mode == "non_invasive":
            ident = stacked[:, :1]  # (N, 1, d): x_0
            fused = torch.cat([ident, ident + stacked[:, 1:]], dim=1)  # F_t
            values = torch.einsum("nd,tde->nte", stacked[:, 0], self.value_maps)  # V_t = x_0 U_t
            out, weights = self.attn(fused, fused, values)
            self.last_weights = weights.detach()
            return stacked[:, 0] + out.mean(1)
        weights = torch.softmax(self.query(torch.tanh(self.key(stacked))), dim=1)  # (N, M, 1)
        self.last_weights = weights.detach().squeeze(-1)
        return (weights * stacked).sum(1)

    @classmethod
    def from_config(cls, config, dim: int, n_inputs: int, default: str = "sum", mode: str | None = None,
                    concat_width: int | None = None) -> "Fusion":
        """The layer a model's ``fusion`` / ``fusion_heads`` / ``fusion_combine`` keys describe
        (``mode`` given: that operator instead of the ``fusion`` key's)."""
        return cls(mode or config["fusion"] or default, dim, n_inputs, heads=config["fusion_heads"] or 1,
                   combine=config["fusion_combine"] or "mean", concat_width=concat_width)


def sinusoidal_encoding(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Fixed positional code (Vaswani et al. 2017; USERec's user encoding):
    ``PE(p, 2j) = sin(p / 10000^(2j/d))``, ``PE(p, 2j+1) = cos(p / 10000^(2j/d))``."""
    positions = positions.float().unsqueeze(1)
    j = torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device)
    angles = positions * torch.pow(10000.0, -j / dim)
    pe = torch.zeros(positions.shape[0], dim, device=positions.device)
    pe[:, 0::2] = torch.sin(angles)
    pe[:, 1::2] = torch.cos(angles)[:, : dim // 2]
    return pe


class SampledAttention(nn.Module):
    """USERec's random-sampling attention: each user attends over itself and ``C`` sampled items.

    ``G = [h_u; h_i1..h_iC]``, ``Q = G W_Q``, ``K = G W_K``, ``V = K``,
    ``G' = G + alpha softmax(Q K^T / sqrt(d)) V``; the user's slot of ``G'`` is returned.
    Vectorised over the batch with ``bmm``.
    """

    def __init__(self, dim: int, alpha: float):
        super().__init__()
        self.q = nn.Linear(dim, dim, bias=False)
        self.k = nn.Linear(dim, dim, bias=False)
        self.alpha = alpha
        self.scale = dim ** -0.5

    def forward(self, users: torch.Tensor, sampled_items: torch.Tensor) -> torch.Tensor:
        """``users`` (B, d), ``sampled_items`` (B, C, d) -> updated users (B, d)."""
        G = torch.cat([users.unsqueeze(1), sampled_items], dim=1)
        K = self.k(G)
        attn = torch.softmax(torch.bmm(self.q(G[:, :1]), K.transpose(1, 2)) * self.scale, dim=-1)  # user row
        return users + self.alpha * torch.bmm(attn, K).squeeze(1)


class _PatternSpMM(torch.autograd.Function):
    """``S @ x`` for ``S`` on an :class:`EdgeGraph` pattern with per-step weights ``values``.

    Forward wraps the (target-sorted) weights in CSR as they are -- no sort, no coalesce; the ``x``
    gradient uses ``S^T`` from the stored transpose permutation; the weight gradient is
    ``dL/ds_ts = <dL/dy_t, x_s>``, one gather-dot over the edges.
    """

    @staticmethod
    def forward(ctx, graph, values, x):
        ctx.graph = graph
        ctx.save_for_backward(values, x)
        return graph.csr(values.detach()) @ x

    @staticmethod
    def backward(ctx, grad):
        values, x = ctx.saved_tensors
        g = ctx.graph
        grad = grad.contiguous()
        grad_values = grad_x = None
        if ctx.needs_input_grad[1]:
            grad_values = g.sddmm(grad, x.detach())  # <dL/dy_t, x_s> per edge
        if ctx.needs_input_grad[2]:
            grad_x = g.csr(values.detach(), transpose=True) @ grad
        return None, grad_values, grad_x


class _EdgeDot(torch.autograd.Function):
    """``<x_target, y_source>`` per edge of an :class:`EdgeGraph` (its ``sddmm``), with the backward
    written out as two CSR products, ``dL/dx = S_g y`` and ``dL/dy = S_g^T x`` (``S_g``: the edge
    gradients on the pattern). torch's own ``sampled_addmm`` backward is ~3.5x slower on CPU
    (lfm2k's 88k edges x 256 dims, MGAT's attention scores)."""

    @staticmethod
    def forward(ctx, graph, x, y):
        ctx.graph = graph
        ctx.save_for_backward(x, y)
        return graph.sddmm(x, y)

    @staticmethod
    def backward(ctx, grad):
        x, y = ctx.saved_tensors
        graph, grad = ctx.graph, grad.contiguous()
        grad_x = graph.csr(grad) @ y if ctx.needs_input_grad[1] else None
        grad_y = graph.csr(grad, transpose=True) @ x if ctx.needs_input_grad[2] else None
        return None, grad_x, grad_y


class EdgeGraph(nn.Module):
    """A fixed set of directed edges ``target <- source`` on ``n`` nodes whose weights are recomputed
    every step (GRCN's refined user-item graph): edge-wise scores, a softmax over each target's
    edges and propagation, all differentiable w.r.t. the weights and never an ``n x n`` matrix.

    Edges are stored once in target-major order (``rows`` = targets, ``cols`` = sources; duplicates
    dropped) with CSR row pointers and the permutation to the transpose's order, so a product only
    wraps the weights in CSR. Index tensors are non-persistent buffers: they follow ``.to()`` and
    stay out of checkpoints.
    """

    def __init__(self, rows, cols, n: int):
        super().__init__()
        rows, cols = torch.as_tensor(rows, dtype=torch.long), torch.as_tensor(cols, dtype=torch.long)
        keys = torch.unique(rows * n + cols)  # sorted: target-major, then source
        rows, cols = keys // n, keys % n
        self.n = n
        perm = torch.argsort(cols * n + rows)  # edge order of S^T (source-major)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)
        self.register_buffer("crow", self._pointers(rows, n), persistent=False)
        self.register_buffer("perm_t", perm, persistent=False)
        self.register_buffer("cols_t", rows[perm], persistent=False)
        self.register_buffer("crow_t", self._pointers(cols, n), persistent=False)

    @staticmethod
    def _pointers(ids: torch.Tensor, n: int) -> torch.Tensor:
        counts = torch.bincount(ids, minlength=n)
        return torch.cat([counts.new_zeros(1), counts.cumsum(0)])

    @property
    def n_edges(self) -> int:
        return self.rows.numel()

    def extra_repr(self) -> str:
        return f"n={self.n}, edges={self.n_edges}"

    def csr(self, values: torch.Tensor, transpose: bool = False) -> torch.Tensor:
        """``S`` (or ``S^T``) as a CSR tensor with edge weights ``values`` (in edge order)."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if transpose:
                return torch.sparse_csr_tensor(self.crow_t, self.cols_t, values[self.perm_t], (self.n, self.n),
                                               check_invariants=False)
            return torch.sparse_csr_tensor(self.crow, self.cols, values, (self.n, self.n), check_invariants=False)

    def sddmm(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``<x_target, y_source>`` for every edge, differentiable: ``(x y^T)`` sampled at the pattern.

        torch's sampled dense-dense product never materialises the two ``(edges, d)`` gathers; on
        lfm2k's 90k edges x 128 dims it is ~30x faster than gather-multiply-sum on CPU.
        """
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pattern = torch.sparse_csr_tensor(self.crow, self.cols, x.new_zeros(self.n_edges), (self.n, self.n),
                                              check_invariants=False)
            return torch.sparse.sampled_addmm(pattern, x, y.T, beta=0.0).values()

    def edge_dot(self, x: torch.Tensor, y: torch.Tensor = None) -> torch.Tensor:
        """``<x_target, y_source>`` for every edge (``y`` defaults to ``x``): :meth:`sddmm` with the
        gradient written out as two CSR products (:class:`_EdgeDot`)."""
        return _EdgeDot.apply(self, x, x if y is None else y)

    def softmax(self, scores: torch.Tensor) -> torch.Tensor:
        """Softmax of edge scores over each target's edges (GAT-style attention), with segment
        reductions over the sorted rows (deterministic on every device). Equals
        ``torch_geometric.utils.softmax(scores, rows)``."""
        lengths = self.crow.diff()
        shift = torch.segment_reduce(scores.detach(), "max", lengths=lengths, unsafe=True)
        e = (scores - shift[self.rows]).exp()
        return e / torch.segment_reduce(e, "sum", lengths=lengths, unsafe=True)[self.rows]

    def forward(self, values: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """``S x`` with ``S[t, s] = values[e]`` for edge ``e = (t, s)``: ``(S x)_t = sum_s s_ts x_s``."""
        return _PatternSpMM.apply(self, values, x)

    @classmethod
    def bipartite(cls, users, items, n_users: int, n_items: int) -> "EdgeGraph":
        """Both directions of the user-item edges on ``n_users + n_items`` nodes (items offset by
        ``n_users``): the user rows come first, then the item rows."""
        users, items = torch.as_tensor(users, dtype=torch.long), torch.as_tensor(items, dtype=torch.long) + n_users
        return cls(torch.cat([users, items]), torch.cat([items, users]), n_users + n_items)


class AggregateCombine(nn.Module):
    """One MMGCN layer (Wei et al., ACM MM 2019) of one modality on a fixed graph ``A``.

    * aggregation (Eq. 1-2): ``h = leaky_relu(A x W_1)``; with ``A = D^{-1} A`` (row-normalised)
      this is the mean over a node's neighbours, with the binary ``A`` their sum;
    * combination (Eq. 4-7): ``x_hat = leaky_relu(W_2 x) + e_id`` (Eq. 5) and either
      ``leaky_relu(W_3 [h; x_hat])`` (concatenation, Eq. 6) or ``leaky_relu(W_3 h + x_hat)``
      (element-wise, Eq. 7).

    ``W_1`` maps ``in_dim -> in_dim``, ``W_2`` and ``W_3`` map to ``out_dim`` (the ID size). Init as
    the official code / MMRec: Xavier-normal ``W_1``, ``W_2`` (and ``W_3`` when ``xavier_combine``,
    which they do for the first layer only; later layers keep ``nn.Linear``'s default). The
    concatenation is computed as two products with the halves of ``W_3`` (the same parameters),
    so backward keeps ``h`` and ``x_hat`` once instead of also their concatenation.
    """

    def __init__(self, in_dim: int, out_dim: int, concat: bool = True, xavier_combine: bool = True):
        super().__init__()
        self.concat = concat
        self.conv = nn.Parameter(nn.init.xavier_normal_(torch.empty(in_dim, in_dim)))
        self.self_proj = nn.Linear(in_dim, out_dim)
        nn.init.xavier_normal_(self.self_proj.weight)
        self.combine = nn.Linear(in_dim + out_dim if concat else in_dim, out_dim)
        if xavier_combine:
            nn.init.xavier_normal_(self.combine.weight)

    def forward(self, graph, x: torch.Tensor, id_emb: torch.Tensor) -> torch.Tensor:
        # in-place activations on fresh products (nothing else holds them; leaky ReLU's backward
        # needs only its output's sign): on an Elec-sized graph each saved copy is 0.26 GB per layer
        def act(t):
            return nn.functional.leaky_relu(t, inplace=True)

        h = act(spmm(graph, x @ self.conv))
        x_hat = act(self.self_proj(x)) + id_emb
        if self.concat:  # W_3 [h; x_hat] = W_3^h h + W_3^x x_hat: no concatenated copy kept for backward
            w_h, w_x = self.combine.weight.split([h.shape[1], x_hat.shape[1]], dim=1)
            return act(torch.addmm(F.linear(x_hat, w_x, self.combine.bias), h, w_h.t()))
        return act(self.combine(h) + x_hat)


def split_factors(x: torch.Tensor, n_factors: int) -> torch.Tensor:
    """``(..., D)`` -> ``(..., K, D / K)``: the K disentangled chunks of a representation."""
    return x.view(*x.shape[:-1], n_factors, x.shape[-1] // n_factors)


class FactorModalityAttention(nn.Module):
    """DMRL's per-factor modality attention and preference (the disentangled-factor block).

    Inputs are factorised representations: the user ``u`` ``(..., K, f)`` and ``M`` item-side ones
    ``xs`` (item ID first, then the modalities) of the same shape. One attention net (``W_1``:
    ``(M + 1) f -> M``, tanh, ``W_2``: ``M -> M`` without bias, softmax) is shared by all factors.
    Its input is the L2-normalised concatenation ``z = [u_k; x_1k; ...; x_Mk]``; because
    ``W_1 z / ||z|| = (W_1^u u_k + sum_m W_1^m x_mk) / sqrt(||u_k||^2 + sum_m ||x_mk||^2)``, the
    user and item halves are computed separately, so full ranking never builds the concatenation
    for every (user, item) pair (only ``B x N x K x M`` attention logits).

    ``forward(u, xs)`` scores aligned rows (``u`` and ``xs`` both ``(R, K, f)``) -> ``(R,)``;
    ``forward(u, xs, all_pairs=True)`` scores ``B`` users against ``N`` items -> ``(B, N)``.
    ``attention(...)`` returns the weights ``a`` (``(R, K, M)`` or ``(B, N, K, M)``).
    """

    def __init__(self, factor_size: int, n_sources: int, dropout: float = 0.0):
        super().__init__()
        self.factor_size, self.n_sources = factor_size, n_sources
        self.hidden = nn.Linear((n_sources + 1) * factor_size, n_sources)  # W_1, b_1
        self.out = nn.Linear(n_sources, n_sources, bias=False)  # W_2
        self.dropout = nn.Dropout(dropout)

    def _halves(self, u, xs):
        w = self.hidden.weight.split(self.factor_size, dim=1)  # W_1^u, W_1^1, ..., W_1^M
        user_part = u @ w[0].T
        item_part = sum(x @ wm.T for x, wm in zip(xs, w[1:]))
        return user_part, u.square().sum(-1), item_part, sum(x.square().sum(-1) for x in xs)

    def attention(self, u, xs, all_pairs: bool = False):
        user_part, user_sq, item_part, item_sq = self._halves(u, xs)
        if all_pairs:  # (B, 1, K, .) against (1, N, K, .)
            user_part, user_sq = user_part.unsqueeze(1), user_sq.unsqueeze(1)
            item_part, item_sq = item_part.unsqueeze(0), item_sq.unsqueeze(0)
        norm = (user_sq + item_sq).sqrt().clamp_min(1e-12).unsqueeze(-1)  # F.normalize's eps
        logits = self.out(self.dropout(torch.tanh((user_part + item_part) / norm + self.hidden.bias)))
        return logits.softmax(-1)

    def forward(self, u, xs, all_pairs: bool = False):
        weights = self.attention(u, xs, all_pairs)
        if all_pairs:
            dots = torch.stack([torch.einsum("bkf,nkf->bnk", u, x) for x in xs], dim=-1)
        else:
            dots = torch.stack([(u * x).sum(-1) for x in xs], dim=-1)
        return (weights * F.softplus(dots)).sum((-1, -2))
