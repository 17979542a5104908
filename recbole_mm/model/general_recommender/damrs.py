"""DA-MRS (Xu, Li, Xie, Lin, Liu, Xia, Kang & Lin, KDD 2024): "Improving Multi-modal Recommender
Systems by Denoising and Aligning Multi-modal Content and User Feedback", on a LightGCN backbone
(DA-MRS+LightGCN, as MMRec's ``damrs.py``). The blocks, named as in the paper (its equation numbers
are not cited: the paper's full text was not at hand; the formulas are those of the official code):

* Denoised item-item graphs (DIIG): a pair of items may be linked only if, in *every*
  modality, its cosine similarity is at least that modality's mean cosine over all item pairs
  (consistent content across modalities); each modality then keeps its top-``knn_k`` such
  neighbours (binary, ``D^-1/2 A D^-1/2`` with row degrees). A behaviour graph joins them:
  co-interaction counts ``R^T R`` off the diagonal, pairs with at least ``behaviour_min_count``
  common users, top-``behaviour_k`` per item, plus self-loops (binary, same normalisation; the
  official ``build_iib_graph.py --topk=2`` / ``item_graph_dict_2.npy``, built here from the
  training split, sparse and cached). Item ID embeddings propagate ``n_mm_layers`` times over each
  graph (branches ``h_b``); their mean is added to the LightGCN item output (scores: ``u . (i + h)``).
* Denoised BPR (denoising user feedback): with ``s_b = sigmoid(u . norm(h_b[i]))`` over the branches,
  a positive pair weighs ``w+ = mean_b s_b * exp(-var_b s_b)^2`` and a negative one (taken as a
  missed positive) ``w- = max_b s_b - n_bar`` where ``mean_b s_b < n_bar``, else 0 (both clamped
  to [0, 1], no gradient): ``L = -mean(w+ ln sig(y_pos - y_neg) + w- ln sig(y_neg - y_pos))``.
* Alignment guided by user preference (AU): symmetric Bernoulli KL between
  ``sigmoid(u . norm(i_cf))`` and ``sigmoid(u . norm(mean_b h_b[i]))`` over the batch's unique users x
  unique items; computed as ``(sig(a) - sig(b)) (a - b)``, which equals ``KL(p||q) + KL(q||p)``.
* Alignment guided by graded item relations (AI): per branch, softmax of cosines to all
  items; the top ``n_positives`` of (sum of all branches' + the own branch's) probabilities are
  strong positives, the next ``n_positives`` of the own branch weak ones;
  ``-ln(S_strong / S_all) - ln(S_weak / (S_all - S_strong))`` with ``S = sum exp(cos / temperature)``.
* Loss: ``L_BPR + neighbor_weight * L_AI + kl_weight * L_AU`` (no L2 term, as MMRec).

Details as MMRec's code: ``n_bar`` is one scalar, the mean over the whole batch and all branches;
the probabilities include the item itself; the mean cosine includes the diagonal; the ID tables are
Xavier-initialised. Differences from MMRec, none changing the numbers on lfm2k (all three graphs
checked edge for edge against MMRec's builders, the loss against its formulas): any number of modalities (two in MMRec; all
branches enter every mean, each branch counts twice in its own positive ranking); ``ln sigmoid``
is ``logsigmoid`` (MMRec's ``log(sigmoid)`` turns -inf for large margins); a neighbour survives the
consistency mask by ``sim >= mean`` and ranks among survivors only (MMRec zeroes non-survivors, so
a negative surviving cosine could lose to a masked 0 when a modality's mean cosine is < 0); the
padding item takes part in no graph and no softmax; behaviour-graph ties go to the smaller item id.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from recbole.utils import InputType
from torch import nn
from torch.utils.checkpoint import checkpoint

from recbole_mm.data import graphs
from recbole_mm.model.abstract_recommender import MultimodalRecommender
from recbole_mm.model.layers import lightgcn_propagate, propagate, split_users_items


# -- generic blocks (shared candidates) --------------------------------------------------------
def consistent_knn_graphs(features: list, k: int, block_size: int = None) -> list:
    """DA-MRS's denoised item-item graphs: one ``(n, n)`` sparse graph per feature matrix.

    Pair ``(i, j)`` is eligible iff ``cos_m(i, j) >= mean_m`` for every modality ``m``, with
    ``mean_m`` the mean cosine over all ``n^2`` pairs (``||sum_i x_i||^2 / n^2`` for unit rows, no
    ``n x n`` matrix). Each graph keeps every row's top-``k`` eligible pairs by its own modality's
    cosine (fewer if fewer are eligible), binary, normalised ``d_i^-1/2 d_j^-1/2`` by row degrees
    (MMRec's normalisation of this non-symmetric graph). Computed in row blocks.
    """
    normed = [F.normalize(f.detach().float(), dim=1) for f in features]
    n = normed[0].shape[0]
    means = [(x.sum(0) @ x.sum(0)) / n ** 2 for x in normed]
    k = min(k, n)
    block_size = block_size or max(1, graphs.auto_block_size(n) // (len(normed) + 1))
    rows, cols = [[] for _ in normed], [[] for _ in normed]
    with torch.no_grad():
        for start in range(0, n, block_size):
            sims = [x[start:start + block_size] @ x.T for x in normed]
            eligible = torch.stack([s >= mu for s, mu in zip(sims, means)]).all(0)
            for m, s in enumerate(sims):
                val, idx = s.masked_fill(~eligible, -float("inf")).topk(k, dim=1)
                r, c = torch.nonzero(val > -float("inf"), as_tuple=True)
                rows[m].append(r + start)
                cols[m].append(idx[r, c])
    out = []
    for r, c in zip(rows, cols):
        r, c = torch.cat(r), torch.cat(c)
        out.append(graphs.sparse(r, c, graphs.normalize_edges(r, c, torch.ones(len(r)), n), (n, n)))
    return out


def behaviour_graph(users, items, n_users: int, n_items: int, k: int, min_count: int) -> torch.Tensor:
    """DA-MRS's item-item behaviour graph (the official ``item_graph_dict``): top-``k`` co-interaction
    neighbours (``R^T R`` off the diagonal, ties to the smaller id) with at least ``min_count``
    common users, plus a self-loop on every item but the padding id 0; binary, row-degree
    ``D^-1/2 A D^-1/2``. (Thresholding after the top-``k`` keeps the same pairs as before it.)"""
    counts = graphs.co_interaction_graph(users, items, n_users, n_items, k, normalization="none")
    keep = counts.values() >= min_count
    loops = torch.arange(1, n_items)
    r = torch.cat([counts.indices()[0][keep], loops])
    c = torch.cat([counts.indices()[1][keep], loops])
    return graphs.sparse(r, c, graphs.normalize_edges(r, c, torch.ones(len(r)), n_items), (n_items, n_items))


def symmetric_bernoulli_kl(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``KL(p||q) + KL(q||p)`` of Bernoullis ``p = sig(a)``, ``q = sig(b)`` given by logits,
    elementwise: ``(p - q)(a - b)`` (exact, finite for any logits)."""
    return (torch.sigmoid(a) - torch.sigmoid(b)) * (a - b)


class _GradedNeighbourLoss(torch.autograd.Function):
    """Forward as the formula of :func:`graded_neighbour_loss`; backward in one pass over ``(B, n)``:
    ``dL/dcos_j = e_j / t * (c_S + c_s [j strong] + c_w [j weak])`` with the row coefficients
    ``c_x = dL/dS_x``, instead of autograd's chain of exp, division, two gathers and a sum over the
    same matrix (DA-MRS's epoch is dominated by these (batch items x catalogue) matrices)."""

    @staticmethod
    def forward(ctx, cos, strong, weak, temperature):
        e = torch.exp(cos / temperature)
        total, s_strong, s_weak = e.sum(1), e.gather(1, strong).sum(1), e.gather(1, weak).sum(1)
        rest = total - s_strong
        r_strong, r_weak = s_strong / total + 1e-9, s_weak / rest + 1e-9
        ctx.save_for_backward(e, strong, weak, total, s_strong, s_weak, rest, r_strong, r_weak)
        ctx.temperature = temperature
        return (-torch.log(r_strong) - torch.log(r_weak)).mean()

    @staticmethod
    def backward(ctx, grad):
        e, strong, weak, total, s_strong, s_weak, rest, r_strong, r_weak = ctx.saved_tensors
        scale = grad / (e.shape[0] * ctx.temperature)  # the mean over rows and d(cos / t)
        # L = -ln(S_s / S + eps) - ln(S_w / (S - S_s) + eps) per row
        c_total = (s_strong / total.square() / r_strong + s_weak / rest.square() / r_weak) * scale
        c_strong = (-1.0 / (total * r_strong) - s_weak / rest.square() / r_weak) * scale
        c_weak = -1.0 / (rest * r_weak) * scale
        g = e * c_total.unsqueeze(1)
        g.scatter_add_(1, strong, e.gather(1, strong) * c_strong.unsqueeze(1))
        g.scatter_add_(1, weak, e.gather(1, weak) * c_weak.unsqueeze(1))
        return g, None, None, None


def graded_neighbour_loss(cos: torch.Tensor, strong: torch.Tensor, weak: torch.Tensor,
                          temperature: float) -> torch.Tensor:
    """DA-MRS's AI term from cosines ``(B, n)`` to all candidates and the index sets ``(B, P)`` of the
    strong and weak positives (disjoint, as :func:`graded_positives` draws them):
    ``mean(-ln(S_s/S + 1e-9) - ln(S_w/(S - S_s) + 1e-9))``,
    ``S_x = sum_{j in x} exp(cos_j / temperature)`` (the 1e-9 as the official code)."""
    if torch.is_grad_enabled() and cos.requires_grad:
        return _GradedNeighbourLoss.apply(cos, strong, weak, temperature)
    e = torch.exp(cos / temperature)
    total, s_strong, s_weak = e.sum(1), e.gather(1, strong).sum(1), e.gather(1, weak).sum(1)
    return (-torch.log(s_strong / total + 1e-9) - torch.log(s_weak / (total - s_strong) + 1e-9)).mean()


def graded_positives(probs: list, n_positives: int):
    """For each branch ``b``: strong positives = top ``P`` of ``sum(probs) + probs[b]``; weak ones =
    the top ``P`` of ``probs[b]`` among the rest (DA-MRS's pseudo-labels). ``[(strong, weak)]``."""
    total = probs[0] + probs[1] if len(probs) > 1 else probs[0].clone()  # in place, not stack().sum(0):
    for p in probs[2:]:  # the same sums in the same order, without a copy of every (B, n) matrix
        total += p
    out = []
    for p in probs:
        strong = (total + p).topk(n_positives, dim=1).indices
        weak = p.scatter(1, strong, -float("inf")).topk(n_positives, dim=1).indices
        out.append((strong, weak))
    return out


def feedback_weights(pos_scores: torch.Tensor, neg_scores: torch.Tensor):
    """DA-MRS's denoised-BPR weights from the branches' logits ``(n_branches, B)`` of the positive and
    negative items: ``w+ = clamp(mean s * exp(-var s)^2)``, ``w- = clamp(max s - n_bar)`` where
    ``mean s < n_bar`` (``s = sigmoid`` of the positive logits, ``n_bar`` the mean of all negative
    ones' sigmoids, one scalar; unbiased variance over branches), no gradient."""
    with torch.no_grad():
        s = torch.sigmoid(pos_scores)
        mean = s.mean(0)
        w_pos = (mean * torch.exp(-s.var(0)) ** 2).clamp(0, 1)
        n_bar = torch.sigmoid(neg_scores).mean()
        w_neg = ((s.max(0).values - n_bar) * (mean < n_bar)).clamp(0, 1)
    return w_pos, w_neg


# -- the model ----------------------------------------------------------------------------------
class DAMRS(MultimodalRecommender):
    scores_cold_items = True  # items are scored from their content features (cold_items)
    input_type = InputType.PAIRWISE

    def __init__(self, config, dataset):
        super().__init__(config, dataset)
        self.embedding_size = config["embedding_size"]
        self.n_ui_layers, self.n_mm_layers = config["n_ui_layers"], config["n_mm_layers"]
        self.kl_weight, self.neighbor_weight = config["kl_weight"], config["neighbor_weight"]
        self.n_positives, self.temperature = config["n_positives"], config["temperature"]
        self.ai_chunk_rows = int(config["ai_chunk_rows"] or 0)
        if self.ai_chunk_rows < 0:
            raise ValueError(f"DAMRS ai_chunk_rows must be >= 0 (0: all rows at once), got {self.ai_chunk_rows}")

        self.init_id_embeddings(self.embedding_size)
        self.adj = self.ui_graph()
        self.modal_graphs = nn.ModuleDict(zip(self.modalities, self._consistent_graphs(config["knn_k"])))
        self.behaviour = self._operator(self._behaviour_coo(config["behaviour_k"], config["behaviour_min_count"]))

    # graphs (built on CPU from the features / training split, cached on disk)
    def _consistent_graphs(self, k: int) -> list:
        feats = [self.modality_feature(m).detach().float().cpu()[1:] for m in self.modalities]
        n = self.n_items

        def build_all():
            inner = consistent_knn_graphs(feats, k)
            # stacked into one (M n, n) graph so that one cache entry holds all modalities
            idx = torch.cat([g.indices() + torch.tensor([[m * n + 1], [1]]) for m, g in enumerate(inner)], 1)
            return graphs.sparse(idx[0], idx[1], torch.cat([g.values() for g in inner]), (len(inner) * n, n))

        key = graphs.graph_cache_key(feats, k=k, v=1)
        stacked = graphs.cached_graph(self.graph_cache_dir, "damrs-diig", key, build_all).coalesce()
        idx, val = stacked.indices(), stacked.values()
        out = []
        for m in range(len(feats)):
            sel = (idx[0] >= m * n) & (idx[0] < (m + 1) * n)
            out.append(self._operator(graphs.sparse(idx[0][sel] - m * n, idx[1][sel], val[sel], (n, n))))
        return out

    def _behaviour_coo(self, k: int, min_count: int) -> torch.Tensor:
        users, items = self.train_users, self.train_items

        def build():
            return behaviour_graph(users.numpy(), items.numpy(), self.n_users, self.n_items, k, min_count)

        key = graphs.graph_cache_key([users, items], k=k, min_count=min_count, n_items=self.n_items, v=1)
        return graphs.cached_graph(self.graph_cache_dir, "damrs-iib", key, build)

    def forward(self):
        """LightGCN users/items and the item branches ``[h_modality..., h_behaviour]``."""
        users, items = split_users_items(lightgcn_propagate(self.adj, self.id_embeddings(), self.n_ui_layers),
                                         self.n_users)
        ego = self.item_embedding.weight
        branches = [propagate(g, ego, self.n_mm_layers) for g in (*self.modal_graphs.values(), self.behaviour)]
        return users, items, branches

    def calculate_loss(self, interaction):
        user = interaction[self.USER_ID]
        pos, neg = interaction[self.ITEM_ID], interaction[self.NEG_ITEM_ID]
        users, items, branches = self.forward()
        content = torch.stack(branches).mean(0)
        batch_users, batch_items = torch.unique(user), torch.unique(torch.cat([pos, neg]))

        ai = self._item_relation_loss(branches, batch_items)

        # AU: user-preference alignment of the collaborative and content item views
        u = users[batch_users]
        au = symmetric_bernoulli_kl(u @ F.normalize(items[batch_items], dim=1).T,
                                    u @ F.normalize(content[batch_items], dim=1).T).mean()

        # denoised BPR
        u = users[user]
        branch_scores = [torch.stack([(u * F.normalize(h[i], dim=1)).sum(1) for h in branches]) for i in (pos, neg)]
        w_pos, w_neg = feedback_weights(*branch_scores)
        fused = items + content
        margin = (u * fused[pos]).sum(1) - (u * fused[neg]).sum(1)
        bpr = -(F.logsigmoid(margin) * w_pos + F.logsigmoid(-margin) * w_neg).mean()
        return bpr + self.neighbor_weight * ai + self.kl_weight * au

    def _item_relation_loss(self, branches, batch_items):
        """L_AI over the batch's items; candidates = the real items (columns shifted by the padding id).
        Its ``(batch items, n_items)`` cosines per branch dominate memory on large catalogues: with
        ``ai_chunk_rows: C`` the rows go C at a time, each chunk recomputed in the backward pass
        (``torch.utils.checkpoint``), so at most C rows are held: the same loss up to float
        summation order."""
        candidates = [F.normalize(h[1:], dim=1) for h in branches]
        n_pos = min(self.n_positives, (self.n_items - 1) // 2)

        def rows_loss(rows):
            cos = [F.normalize(h[rows], dim=1) @ c.T for h, c in zip(branches, candidates)]
            labels = graded_positives([torch.softmax(c.detach(), dim=1) for c in cos], n_pos)
            return torch.stack([graded_neighbour_loss(c, s, w, self.temperature)
                                for c, (s, w) in zip(cos, labels)]).mean()

        chunk = self.ai_chunk_rows
        if not chunk or len(batch_items) <= chunk:
            return rows_loss(batch_items)
        total = 0.0
        for rows in batch_items.split(chunk):  # row blocks of the batch, not single items
            if torch.is_grad_enabled():
                total = total + checkpoint(rows_loss, rows, use_reentrant=False) * len(rows)
            else:
                total = total + rows_loss(rows) * len(rows)
        return total / len(batch_items)

    def inference_embeddings(self):
        with torch.no_grad():
            users, items, branches = self.forward()
        return users, items + torch.stack(branches).mean(0)
