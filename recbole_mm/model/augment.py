"""Reusable augmentations for contrastive multimodal models (views of features and graphs).

Each function is small, stateless and draws its randomness from a passed ``torch.Generator``
(``generator=None``: the global RNG of the tensor's device, so seeded runs repeat). With a
generator, numbers are drawn on the generator's device and moved, so one seed gives the same
views on every device.

* :func:`choose_modality` -- draw one modality name with given probabilities (MMGCL's ``p_m``).
* :func:`modality_mask` -- a view with one modality's features replaced: zeros, or a random
  re-initialisation of the same scale (MMGCL's modality masking, SLMRec's feature masking).
* :func:`edge_keep_mask` / :func:`edge_dropout` / :func:`modality_edge_dropout` -- independent
  edge dropout on a symmetric user-item :class:`~recbole_mm.model.layers.SparseOperator`, one
  independent draw per modality view (MMGCL's modality edge dropout, SGL's ED), re-normalised
  on the kept degrees or rescaled by ``1 / (1 - rate)``.
* :func:`feature_dropout` -- inverted dropout of entries (SLMRec's FD, BM3's target views).
* :func:`uniform_noise` -- SimGCL / QRec's ``e + sign(e) * normalize(U(0, 1)) * eps``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from recbole_mm.model.layers import SparseOperator

MASK_MODES = ("zero", "random")


def _rand(shape, generator: torch.Generator | None, device, normal: bool = False) -> torch.Tensor:
    """``U(0, 1)`` (or ``N(0, 1)``) numbers of ``shape`` on ``device``, from ``generator`` if given."""
    draw = torch.randn if normal else torch.rand
    if generator is None:
        return draw(shape, device=device)
    return draw(shape, generator=generator, device=generator.device).to(device)


def choose_modality(names, probs=None, generator: torch.Generator | None = None) -> str:
    """One of ``names``, drawn with probabilities ``probs`` (a list aligned to ``names`` or a
    ``{name: p}`` dict; ``None``: uniform). The probabilities are renormalised to sum to one."""
    names = list(names)
    if probs is None:
        weights = torch.ones(len(names))
    elif isinstance(probs, dict):
        weights = torch.tensor([float(probs[n]) for n in names])
    else:
        weights = torch.tensor([float(p) for p in probs])
    if len(weights) != len(names) or (weights < 0).any() or weights.sum() <= 0:
        raise ValueError(f"choose_modality: need one non-negative probability per name {names}, got {probs}")
    cumulative = torch.cumsum(weights / weights.sum(), 0)
    u = _rand((), generator, "cpu")  # one U(0, 1) draw: the first name whose cumulative share exceeds it
    index = min(int(torch.searchsorted(cumulative, u, right=True)), len(names) - 1)
    return names[index]


def modality_mask(features: dict, name: str, mode: str = "random", generator: torch.Generator | None = None) -> dict:
    """A copy of ``features`` (``{modality: (n, d)}``) with modality ``name`` masked.

    ``zero``: all zeros. ``random``: a fresh random initialisation, ``N(0, s^2)`` with ``s`` the
    (detached) standard deviation of the masked matrix, so the view keeps the input's scale
    (MMGCL: "replace [...] a specific modality with randomly initialised embeddings at the input
    layer"). Other modalities are the same tensors (not copied).
    """
    if mode not in MASK_MODES:
        raise ValueError(f"modality_mask: mode must be one of {MASK_MODES}, got {mode!r}")
    if name not in features:
        raise KeyError(f"modality_mask: no modality {name!r} in {list(features)}")
    x = features[name]
    if mode == "zero":
        masked = torch.zeros_like(x)
    else:
        masked = _rand(x.shape, generator, x.device, normal=True).to(x.dtype) * x.detach().std()
    return {m: (masked if m == name else f) for m, f in features.items()}


def edge_keep_mask(n_edges: int, rate: float, generator: torch.Generator | None = None, device=None) -> torch.Tensor:
    """``(n_edges,)`` booleans: each edge kept independently with probability ``1 - rate``."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"edge dropout rate must be in [0, 1), got {rate}")
    return _rand((n_edges,), generator, device) >= rate


def _undirected_index(graph: SparseOperator):
    """For each stored entry of a symmetric graph (in :meth:`SparseOperator.edges` order), the id of
    its undirected edge ``{r, c}`` (both directions share one id); cached on the operator."""
    cache = getattr(graph, "_undirected_ids", None)
    if cache is None or cache[0].device != graph.device:
        rows, cols, _ = graph.edges()
        n = graph.shape[0]
        key = torch.minimum(rows, cols) * n + torch.maximum(rows, cols)
        _, inverse = torch.unique(key, return_inverse=True)
        cache = graph._undirected_ids = (inverse, int(inverse.max()) + 1 if len(inverse) else 0)
    return cache


def edge_dropout(graph: SparseOperator, rate: float, generator: torch.Generator | None = None,
                 renormalize: bool = True, symmetric: bool = True) -> SparseOperator:
    """``graph`` (a symmetric, e.g. user-item, adjacency) with each undirected edge dropped with
    probability ``rate`` (both directions together; dropped entries stay stored as zeros).

    ``renormalize=True``: the kept edges get LightGCN's ``1 / sqrt(d'_r d'_c)`` on the kept (binary)
    degrees ``d'`` -- the re-normalised Laplacian of the dropped graph (SGL, MMGCL's code); the
    graph is taken as binary before normalisation. ``False``: the stored values times
    ``keep / (1 - rate)`` (SelfCF's rescaling). ``symmetric=False`` drops every stored entry
    independently (the two directions of an edge apart: SelfCF's sparse dropout of the adjacency).
    """
    rows, cols, values = graph.edges()
    if symmetric:
        ids, n_undirected = _undirected_index(graph)
        keep = edge_keep_mask(n_undirected, rate, generator, values.device)[ids].to(values.dtype)
    else:
        keep = edge_keep_mask(len(values), rate, generator, values.device).to(values.dtype)
    if not renormalize:
        return graph.reweighted(values * keep / (1.0 - rate))
    deg = torch.zeros(graph.shape[0], device=values.device, dtype=values.dtype).index_add_(0, rows, keep)
    inv = torch.where(deg > 0, deg.clamp(min=1e-12).pow(-0.5), torch.zeros_like(deg))
    return graph.reweighted(keep * inv[rows] * inv[cols])


def modality_edge_dropout(graph: SparseOperator, names, rate: float, generator: torch.Generator | None = None,
                          renormalize: bool = True) -> dict:
    """``{name: edge_dropout(graph, rate)}``: one independent draw per modality view ``names``."""
    return {name: edge_dropout(graph, rate, generator, renormalize) for name in names}


def feature_dropout(x: torch.Tensor, rate: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """Inverted dropout: each entry zeroed with probability ``rate``, the rest scaled by ``1 / (1 - rate)``."""
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"feature dropout rate must be in [0, 1), got {rate}")
    if rate == 0.0:
        return x
    keep = _rand(x.shape, generator, x.device) >= rate
    return x * keep.to(x.dtype) / (1.0 - rate)


def uniform_noise(e: torch.Tensor, eps: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """SimGCL / QRec noise: ``e + sign(e) * normalize(U(0, 1)) * eps``, the noise row L2-normalised
    (each row moves by exactly ``eps`` into its own orthant)."""
    noise = F.normalize(_rand(e.shape, generator, e.device).to(e.dtype), dim=-1)
    return e + torch.sign(e) * noise * eps
