"""Cold-start items: a seeded share of the catalogue taken out of training, and metrics on it.

``cold_items: RATIO`` (config key; default off) picks ``round(RATIO * n)`` of the ``n`` real items at
random with the run's ``seed`` (:func:`pick_cold_items`). Every interaction of those items, in train,
valid or test, becomes a test interaction (:func:`cold_split`): the model never sees a cold item in
training or validation, but the item stays in the vocabulary with its features, so a model whose item
representation comes from content can still score it. "Never sees" includes the negatives and the
validation ranking: new items do not exist yet when a model is trained, so :class:`ExcludingSampler`
never draws a cold item as a negative (otherwise every cold item would be trained as a pure
negative, which pushes its representation away from all users and leaves its content signal as
noise), and :class:`ColdMaskedFullSortEvalDataLoader` leaves them out of the validation ranking
(model selection). The test ranking keeps them.

:func:`restricted_metrics` then measures the test ranking on a subset of the items (the common
cold-start protocol): for each test user, the ground truth is her test items *in the subset*, the
ranking is over the subset only (the other items are left out, as are her masked history items), and
users without a ground-truth item in the subset do not count. ``COLD`` is the subset of cold items,
``WARM`` its complement. Recall@K and NDCG@K are RecBole's definitions (``recbole.evaluator.metrics``).
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.data.dataloader import FullSortEvalDataLoader
from recbole.data.interaction import cat_interactions
from recbole.sampler import Sampler


def cold_ratio(config) -> float:
    """``cold_items`` of ``config`` as a ratio in [0, 1) (``None``/0: off); anything else is an error."""
    value = config["cold_items"]
    if value in (None, False, 0, "None", "none", "~"):
        return 0.0
    try:
        ratio = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"config key 'cold_items' must be a ratio in [0, 1), got {value!r}") from None
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"config key 'cold_items' must be a ratio in [0, 1), got {value!r}")
    return ratio


def pick_cold_items(n_items: int, ratio: float, seed: int) -> torch.Tensor:
    """Sorted internal ids of ``round(ratio * (n_items - 1))`` real items (id 0 is padding), drawn with
    ``seed`` by NumPy's generator: the same seed and catalogue give the same cold items."""
    n_cold = int(round(ratio * (n_items - 1)))
    rng = np.random.default_rng(seed)
    cold = rng.choice(np.arange(1, n_items), size=n_cold, replace=False)
    return torch.from_numpy(np.sort(cold)).long()


def cold_split(datasets, cold: torch.Tensor, iid_field: str):
    """``[train, valid, test]`` with every train/valid interaction of a ``cold`` item moved to test."""
    if len(datasets) != 3:
        raise ValueError(f"cold_items needs a train/valid/test split, got {len(datasets)} parts")
    train, valid, test = datasets
    moved, kept = [test.inter_feat], []
    for part in (train, valid):
        is_cold = torch.isin(part.inter_feat[iid_field], cold)
        moved.append(part.inter_feat[is_cold])
        kept.append(part.copy(part.inter_feat[~is_cold]))
    return [kept[0], kept[1], test.copy(cat_interactions(moved))]


class ExcludingSampler(Sampler):
    """RecBole's :class:`~recbole.sampler.Sampler` (same phases, used ids and distribution) whose draws
    never return an ``excluded`` item: uniform draws come from the other items, popularity draws
    from their interactions only."""

    def __init__(self, sampler: Sampler, excluded: torch.Tensor):
        # share the built sampler's state (used ids of every phase) instead of recounting them
        self.__dict__.update(sampler.__dict__)
        keep = np.ones(self.item_num, dtype=bool)
        keep[0] = False
        keep[np.asarray(excluded, dtype=np.int64)] = False
        self.allowed = np.flatnonzero(keep)
        if not len(self.allowed):
            raise ValueError("cold_items: no item is left to sample negatives from")
        self.set_distribution(self.distribution)  # rebuilds the popularity table without them

    def _uni_sampling(self, sample_num):
        return self.allowed[np.random.randint(0, len(self.allowed), sample_num)]

    def _get_candidates_list(self):
        candidates = np.concatenate([d.inter_feat[self.iid_field].numpy() for d in self.datasets])
        return list(candidates[np.isin(candidates, self.allowed)])


class ColdMaskedFullSortEvalDataLoader(FullSortEvalDataLoader):
    """Full-ranking loader whose ranking leaves the ``excluded`` items out for every user: they join
    each user's masked history in every batch (no per-user copy is stored)."""

    def __init__(self, config, dataset, sampler, excluded: torch.Tensor, shuffle=False):
        self._excluded = torch.as_tensor(excluded, dtype=torch.int64)
        super().__init__(config, dataset, sampler, shuffle=shuffle)

    def collate_fn(self, index):
        batch = super().collate_fn(index)
        if self.is_sequential:
            return batch
        user_df, (history_u, history_i), positive_u, positive_i = batch
        n, k = len(user_df), len(self._excluded)
        history_u = torch.cat([history_u, torch.arange(n).repeat_interleave(k)])
        history_i = torch.cat([history_i, self._excluded.repeat(n)])
        return user_df, (history_u, history_i), positive_u, positive_i


def restricted_metrics(model, test_data, items: torch.Tensor, config) -> dict:
    """Recall@K / NDCG@K (K = ``config['topk']``) of ``model`` on ``test_data`` restricted to ``items``
    (internal ids): see the module docstring. Also returns ``users``, how many users counted."""
    from recbole.evaluator.metrics import NDCG, Recall

    n_items = test_data._dataset.item_num
    device = model.device if isinstance(getattr(model, "device", None), torch.device) else config["device"]
    inside = torch.zeros(n_items, dtype=torch.bool)
    inside[items.long()] = True
    inside[0] = False
    topks = config["topk"] if isinstance(config["topk"], list) else [config["topk"]]
    max_k = max(topks)
    hits, lengths = [], []
    model.eval()
    with torch.no_grad():
        for interaction, history, pos_u, pos_i in test_data:
            scores = model.full_sort_predict(interaction.to(device)).view(-1, n_items).float().cpu()
            scores[:, ~inside] = -torch.inf
            if history is not None:
                scores[history[0], history[1]] = -torch.inf
            truth = torch.zeros_like(scores, dtype=torch.bool)
            keep = inside[pos_i]
            truth[pos_u[keep], pos_i[keep]] = True
            count = truth.sum(1)
            ranked = torch.topk(scores, min(max_k, n_items), dim=1).indices
            hit = torch.gather(truth, 1, ranked)
            counted = count > 0
            hits.append(hit[counted])
            lengths.append(count[counted])
    hit = torch.cat(hits).numpy() if hits else np.zeros((0, max_k), dtype=bool)
    pos_len = torch.cat(lengths).numpy() if lengths else np.zeros(0, dtype=np.int64)
    result = {"users": int(len(pos_len))}
    if not len(pos_len):
        return result
    for name, metric in (("recall", Recall), ("ndcg", NDCG)):
        values = metric(config).metric_info(hit, pos_len).mean(0)
        for k in topks:
            result[f"{name}@{k}"] = round(float(values[k - 1]), config["metric_decimal_place"] or 4)
    return result


def cold_warm_results(model, test_data, config) -> dict | None:
    """``{"cold": {...} or None, "warm": {...}}`` for a run with ``cold_items`` (``None`` without it).

    ``cold`` is ``None`` for a model that cannot score items unseen in training (its class attribute
    ``scores_cold_items`` is not True: ID-only models such as BPR and LightGCN)."""
    cold = getattr(test_data._dataset, "cold_items", None)
    if cold is None:
        return None
    n_items = test_data._dataset.item_num
    warm = torch.ones(n_items, dtype=torch.bool)
    warm[cold] = False
    warm[0] = False
    results = {"warm": restricted_metrics(model, test_data, torch.nonzero(warm).view(-1), config), "cold": None}
    if getattr(type(model), "scores_cold_items", False):
        results["cold"] = restricted_metrics(model, test_data, cold, config)
    return results
