"""Cold-start items: a seeded share of the catalogue taken out of training, and metrics on it.

``cold_items: RATIO`` (config key; default off) picks ``round(RATIO * n)`` of the ``n`` real items at
random with the run's ``seed`` (:func:`pick_cold_items`). Every interaction of those items, in train,
valid or test, becomes a test interaction (:func:`cold_split`): the model never sees a cold item in
training or validation, but the item stays in the vocabulary with its features, so a model whose item
representation comes from content can still score it.

:func:`restricted_metrics` then measures the test ranking on a subset of the items (the common
cold-start protocol): for each test user, the ground truth is her test items *in the subset*, the
ranking is over the subset only (the other items are left out, as are her masked history items), and
users without a ground-truth item in the subset do not count. ``COLD`` is the subset of cold items,
``WARM`` its complement. Recall@K and NDCG@K are RecBole's definitions (``recbole.evaluator.metrics``).
"""

from __future__ import annotations

import numpy as np
import torch
from recbole.data.interaction import cat_interactions


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
