"""Feature-quality protocols (AlignRec's intermediate metrics): is a feature set useful for
recommendation, judged without training a recommender?

    python -m recbole_mm.feature_quality --dataset NAME --data_path DIR [--features MOD ...]
        [--add fused=fused_feat.npy] [--k 10] [--split test|valid] [--out OUT.md] [--key=value ...]

For every feature set — each modality alone, all modalities concatenated (each L2-normalised),
and, with three or more modalities (with two, masking one leaves the other alone), all-but-one
("masked") — on the dataset's test split (``--split valid``: on the validation split, so that
feature settings such as AlignRec's stage-1 options can be chosen without looking at test):

* **zero-shot**: a user is the mean of the normalised features of their training items; items
  are ranked by cosine to it;
* **item-CF**: an item-item KNN graph of the features (top-``k`` cosine) used as an item-based
  recommender, ``score(u, i) = sum_{j in train(u)} S_ji``.

Ranking excludes each user's training items (and, on the test split, validation items under the
default ``test_mask: train_valid``); the table reports Recall/NDCG@{10,20}. All vectorised: users are
scored in batches with one matrix product.
"""

from __future__ import annotations

import argparse
import sys

import torch
import torch.nn.functional as F

from recbole_mm.data import graphs

TOPK = (10, 20)


def ranking_metrics(scores: torch.Tensor, positives: torch.Tensor, ks=TOPK) -> dict:
    """Summed Recall@k / NDCG@k of a batch: ``scores`` (B, n) with excluded items at -inf,
    ``positives`` (B, n) boolean test items. Users without positives must be dropped before."""
    top = torch.topk(scores, max(ks), dim=1).indices
    hits = positives.gather(1, top).float()
    n_pos = positives.sum(1).float()
    discounts = 1.0 / torch.log2(torch.arange(2, max(ks) + 2, dtype=torch.float32))
    out = {}
    for k in ks:
        out[f"recall@{k}"] = float((hits[:, :k].sum(1) / n_pos).sum())
        dcg = (hits[:, :k] * discounts[:k]).sum(1)
        ideal = torch.cumsum(discounts[:k], 0)[(n_pos.clamp(max=k) - 1).long()]
        out[f"ndcg@{k}"] = float((dcg / ideal).sum())
    return out


def _user_matrix(dataset, n_users, n_items) -> torch.Tensor:
    return graphs.user_item_matrix(*graphs.interaction_edges(dataset), n_users, n_items, normalization="none")


def evaluate_features(features: torch.Tensor, train_R, exclude_R, test_R, k_neighbours: int = 10,
                      batch_users: int = 2048) -> dict:
    """Zero-shot and item-CF metrics of one ``(n_items, d)`` feature matrix (row 0 = padding)."""
    normed = F.normalize(features.float(), dim=1)
    normed[0] = 0
    user_profile = torch.sparse.mm(train_R, normed)  # sum of the user's items; cosine ignores the 1/n
    n_items = features.shape[0]
    St = graphs.item_knn_graph(features, k_neighbours, normalization="none", weighted=True).t().coalesce()
    test = test_R.to_dense() > 0 if test_R.shape[0] * test_R.shape[1] <= 2e8 else None
    has_test = torch.zeros(test_R.shape[0], dtype=torch.bool)
    has_test[test_R.indices()[0]] = True
    users = torch.nonzero(has_test).view(-1)
    batch_users = max(1, min(batch_users, 2**24 // n_items))  # B x n_items score blocks of <= 64 MB
    keys = [f"{m}@{k}" for m in ("recall", "ndcg") for k in TOPK]
    totals = {"zero-shot": dict.fromkeys(keys, 0.0), "item-CF": dict.fromkeys(keys, 0.0)}
    for start in range(0, len(users), batch_users):
        batch = users[start:start + batch_users]
        mask = exclude_R.index_select(0, batch).to_dense() > 0
        mask[:, 0] = True
        positives = test[batch] if test is not None else test_R.index_select(0, batch).to_dense() > 0
        zs = F.normalize(user_profile[batch], dim=1) @ normed.T
        history = train_R.index_select(0, batch).to_dense()
        cf = torch.sparse.mm(St, history.T).T  # score(u, i) = sum_j R_uj S_ji
        for name, scores in (("zero-shot", zs), ("item-CF", cf)):
            scores = scores.masked_fill(mask, -float("inf"))
            for key, value in ranking_metrics(scores, positives).items():
                totals[name][key] += value
    return {name: {k: v / len(users) for k, v in metrics.items()} for name, metrics in totals.items()}


def feature_sets(item_features: dict, selected=None, added=()) -> dict:
    """``{label: (n_items, d) tensor}``: each modality, their concatenation, all-but-one, and then
    each ``added`` feature set (e.g. stage-1 output) on its own -- a candidate to compare against
    the raw modalities, so it never enters their concatenation or masked sets."""
    added = list(added)
    names = [n for n in (selected or item_features) if n not in added]
    unknown = [n for n in names + added if n not in item_features]
    if unknown:
        raise ValueError(f"--features names {unknown}; the dataset has {list(item_features)}")
    sets = {n: item_features[n] for n in names}
    if len(names) > 1:
        concat = lambda keep: torch.cat([F.normalize(item_features[n].float(), dim=1) for n in keep], dim=1)  # noqa: E731
        sets["concat(" + "+".join(names) + ")"] = concat(names)
        if len(names) > 2:
            for masked in names:
                sets[f"masked -{masked}"] = concat([n for n in names if n != masked])
    sets.update((n, item_features[n]) for n in added)
    return sets


def run(dataset_name: str, data_path: str, features=None, k: int = 10, overrides=None, extra=None,
        split: str = "test") -> str:
    from recbole_mm.checks import check_splits, positive_int

    if split not in ("test", "valid"):
        raise ValueError(f"split must be 'test' or 'valid', not {split!r}")
    positive_int("--k (item-CF neighbours)", k)
    from recbole_mm.config import Config
    from recbole_mm.data import create_dataset

    config_dict = {"data_path": data_path, "state": "WARNING", **(overrides or {})}
    config = Config("BPR", dataset_name, config_dict=config_dict)
    dataset = create_dataset(config)
    if extra:  # extra feature files, e.g. AlignRec's stage-1 output: {name: path}
        from recbole_mm.data.features import parse_modalities

        for spec in parse_modalities(extra, dataset.dataset_path):
            dataset.load_modality(spec)
    if not dataset.item_features:
        raise ValueError(f"dataset '{dataset_name}' ({dataset.dataset_path}) has no item modalities to score: "
                         "list them under `modalities:` in its yaml, or pass --add NAME=FILE")
    built = dataset.build()
    check_splits(dataset, built)  # an empty split would divide by zero users
    train, valid, test = built
    n_users, n_items = dataset.user_num, dataset.item_num
    train_R = _user_matrix(train, n_users, n_items)
    exclude_R = train_R
    mask = config["test_mask"] or "train_valid"
    if split == "valid":  # as RecBole's valid evaluation: only training items are excluded
        test_R, mask = _user_matrix(valid, n_users, n_items), "train"
    else:
        if mask == "train_valid":
            exclude_R = (train_R + _user_matrix(valid, n_users, n_items)).coalesce()
        test_R = _user_matrix(test, n_users, n_items)
    rows = []
    for label, feats in feature_sets(dataset.item_features, features, added=extra or ()).items():
        result = evaluate_features(feats, train_R, exclude_R, test_R, k_neighbours=k)
        for protocol, metrics in result.items():
            rows.append((label, protocol, metrics))
    header = "| features | protocol | " + " | ".join(f"{m}@{t}" for m in ("recall", "ndcg") for t in TOPK) + " |"
    lines = [f"Feature quality on {dataset_name} ({split} split, {mask} masking, item-CF k={k})", "",
             header, "|" + "---|" * (2 + 2 * len(TOPK))]
    for label, protocol, metrics in rows:
        cells = [f"{metrics[f'{m}@{t}']:.4f}" for m in ("recall", "ndcg") for t in TOPK]
        lines.append(f"| {label} | {protocol} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_mm.feature_quality", description=__doc__.split("\n\n")[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data_path", required=True)
    parser.add_argument("--features", nargs="+", default=None,
                        help="modalities to score and combine (default: all but the --add files)")
    parser.add_argument("--k", type=int, default=10, help="neighbours of the item-CF KNN graph")
    parser.add_argument("--split", choices=("test", "valid"), default="test",
                        help="score on this split (valid: for choosing feature settings without test)")
    parser.add_argument("--out", default=None, help="also write the markdown table here")
    parser.add_argument("--add", nargs="+", default=[], metavar="NAME=FILE",
                        help="also score these feature files (relative to the dataset folder), each on "
                             "its own, e.g. fused=fused_feat.npy")
    args, extra = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    overrides = dict(item[2:].split("=", 1) for item in extra if item.startswith("--") and "=" in item)
    extra = dict(item.split("=", 1) for item in args.add)
    table = run(args.dataset, args.data_path, args.features, args.k, overrides, extra, split=args.split)
    if args.out:
        from recbole_mm.io import atomic_write_text

        atomic_write_text(args.out, table)
    print(table)
    return table


if __name__ == "__main__":
    from recbole_mm.cli import run_main

    raise SystemExit(run_main(main))
