"""Pictures of a trained model and of benchmark runs (PNG, matplotlib).

    python -m recbole_mm.plot embeddings --checkpoint saved/M.pth [--color popularity|FIELD]
        [--features MODALITY] [--method pca|tsne] [--seed 2020] --out map.png [--force]
    python -m recbole_mm.plot curves --runs OUT/runs.jsonl --out curves.png [--force]
    python -m recbole_mm.plot leaderboard --runs OUT/runs.jsonl [--metric recall@20] --out board.png [--force]

``embeddings``: two 2-D maps side by side, the model's learned item embeddings (the vectors it scores
with) and the raw item features (every modality L2-normalised and concatenated, or ``--features``
one of them), reduced by PCA (default; fast) or PCA to 50 dimensions then t-SNE (``--method tsne``),
both seeded. Points are coloured by popularity (training interactions per item, log scale; items
without any, e.g. ``cold_items``, are drawn grey) or by a categorical item field (the ten commonest
values, the rest as "other"). ``curves``: valid Recall@20 per epoch of ``benchmarks/bench.py``'s
``runs.jsonl`` (the drawing bench.py writes as its ``curves.png``). ``leaderboard``: mean test metric per model over its seeds
(± std when there are several), best on top.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

from recbole_mm.io import json_record

MAX_CATEGORIES = 10
KINDS = ("embeddings", "curves", "leaderboard")


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise ValueError("plots need matplotlib, which is not installed: pip install matplotlib") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _check_out(path: str, force: bool) -> None:
    from recbole_mm.recommend import check_target

    if not path.lower().endswith(".png"):
        raise ValueError(f"--out {path}: plots are written as PNG, name it *.png")
    check_target(path, force)


def _save(draw, path: str, force: bool) -> str:
    """``draw(tmp_path)`` into a temporary file beside ``path``, then one rename (never half a PNG)."""
    from recbole_mm.io import _publish

    _check_out(path, force)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".png")
    os.close(fd)
    try:
        draw(tmp)
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


# -- item maps ----------------------------------------------------------------------------------
def project_2d(vectors, method: str = "pca", seed: int = 2020) -> np.ndarray:
    """``(n, 2)`` coordinates of ``vectors`` by sklearn's PCA, or PCA to 50 dimensions then t-SNE."""
    from sklearn.decomposition import PCA

    x = np.asarray(vectors, dtype=np.float32)
    if method == "pca":
        return PCA(n_components=2, random_state=seed).fit_transform(x)
    if method != "tsne":
        raise ValueError(f"--method must be pca or tsne, got {method!r}")
    from sklearn.manifold import TSNE

    if x.shape[1] > 50:
        x = PCA(n_components=min(50, len(x)), random_state=seed).fit_transform(x)
    return TSNE(n_components=2, init="pca", random_state=seed, perplexity=min(30.0, (len(x) - 1) / 3)).fit_transform(x)


def item_colours(loaded, color: str = "popularity"):
    """``("popularity", training degree per item)`` or ``("category", value per item)`` (no padding)."""
    dataset = loaded.dataset
    if color == "popularity":
        items = loaded.train_dataset.inter_feat[dataset.iid_field].numpy()
        return "popularity", np.bincount(items, minlength=dataset.item_num)[1:]
    item_feat = getattr(dataset, "item_feat", None)
    if item_feat is None or color not in item_feat:
        fields = [] if item_feat is None else [f for f in item_feat.columns if f != dataset.iid_field]
        raise ValueError(f"--color: {color!r} is not 'popularity' or an item field of dataset "
                         f"'{dataset.dataset_name}' (its item fields: {fields})")
    values = item_feat[color].numpy()[1:]
    if values.ndim > 1:  # token_seq: the first token
        values = values[:, 0]
    if color in dataset.field2id_token:
        values = dataset.field2id_token[color][values]
    return "category", np.asarray(values).astype(str)


def raw_features(loaded, features: str | None = None) -> tuple:
    """``(label, (n_items - 1, d) array)``: one modality, or all L2-normalised side by side."""
    dataset = loaded.dataset
    available = list(getattr(dataset, "item_features", {}) or {})
    if not available:
        raise ValueError(f"dataset '{dataset.dataset_name}' has no item features to map")
    names = [features] if features else available
    missing = [n for n in names if n not in available]
    if missing:
        raise ValueError(f"--features: modality {missing[0]!r} is not loaded (modalities: {available})")
    blocks = [F.normalize(dataset.item_features[n][1:].float(), dim=1) for n in names]
    return " + ".join(names), torch.cat(blocks, 1).numpy()


def _scatter(ax, xy, kind, values, plt):
    if kind == "popularity":
        zero = values == 0
        if zero.any():
            ax.scatter(xy[zero, 0], xy[zero, 1], s=6, c="lightgrey",
                       label=f"no training interaction ({int(zero.sum())})")
            ax.legend(loc="lower right", fontsize=8, markerscale=2)
        points = ax.scatter(xy[~zero, 0], xy[~zero, 1], s=6, c=np.log10(values[~zero]), cmap="viridis")
        return points
    uniques, counts = np.unique(values, return_counts=True)
    top = list(uniques[np.argsort(-counts, kind="stable")][:MAX_CATEGORIES])
    cmap = plt.get_cmap("tab10")
    other = ~np.isin(values, top)
    if other.any():
        ax.scatter(xy[other, 0], xy[other, 1], s=6, c="lightgrey", label="other")
    for n, value in enumerate(top):
        sel = values == value
        ax.scatter(xy[sel, 0], xy[sel, 1], s=6, color=cmap(n % 10), label=str(value))
    ax.legend(fontsize=7, markerscale=2, loc="best")
    return None


def plot_embeddings(checkpoint_or_model, out: str, color: str = "popularity", features: str | None = None,
                    method: str = "pca", seed: int = 2020, force: bool = False) -> str:
    """Learned item embeddings next to raw features, in 2-D, coloured by popularity or an item field."""
    from recbole_mm.recommend import load, scoring_embeddings

    plt = _pyplot()
    _check_out(out, force)
    loaded = load(checkpoint_or_model)
    learned = scoring_embeddings(loaded)[1][1:].numpy()
    label, raw = raw_features(loaded, features)
    kind, values = item_colours(loaded, color)
    maps = [project_2d(learned, method, seed), project_2d(raw, method, seed)]
    model, dataset = type(loaded.model).__name__, loaded.dataset.dataset_name
    titles = [f"{model}: learned item embeddings ({learned.shape[1]}-d)", f"raw features: {label} ({raw.shape[1]}-d)"]

    def draw(path):
        fig, axes = plt.subplots(1, 2, figsize=(12, 5.5))
        points = None
        for ax, xy, title in zip(axes, maps, titles):
            points = _scatter(ax, xy, kind, values, plt)
            ax.set_title(title, fontsize=10)
            ax.set_xlabel(f"{method.upper()} 1")
            ax.set_ylabel(f"{method.upper()} 2")
        if points is not None:
            fig.colorbar(points, ax=list(axes), shrink=0.8, label="log10(training interactions)")
        what = "popularity" if kind == "popularity" else color
        fig.suptitle(f"{dataset}: {len(values)} items, {method.upper()} map, coloured by {what}")
        fig.savefig(path, dpi=120, format="png")
        plt.close(fig)

    return _save(draw, out, force)


# -- benchmark runs -----------------------------------------------------------------------------
def read_runs(path: str, fields=("model",)) -> list:
    """``(line number, row)`` of each row of a ``benchmarks/bench.py`` ``runs.jsonl`` (one JSON object
    per line); a line that is not a JSON object, or lacks one of ``fields``, is an error naming the
    file and line."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"--runs {path}: is a folder; give bench.py's OUT/runs.jsonl")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--runs {path}: no such file")
    rows = []
    with open(path, encoding="utf-8", errors="replace") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            rows.append((n, json_record(line, f"{path}: line {n}", fields, kind="an object (a bench.py run)",
                                        source="a benchmarks/bench.py runs.jsonl?")))
    if not rows:
        raise ValueError(f"{path}: no runs in the file")
    return rows


def _number(path: str, n: int, field: str, value) -> float:
    """``value`` of ``field`` on line ``n`` as a float (NaN included: a run that had none), else an
    error naming them."""
    try:
        if isinstance(value, (bool, str)):
            raise TypeError
        return float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{path}: line {n}: field {field!r} is {value!r}, not a number") from None


def draw_curves(rows, path: str, title: str) -> None:
    """One line per run: ``row["curve"]`` (valid Recall@20 per epoch; ``None`` entries skipped),
    labelled ``model (seed s)``; written as a PNG to ``path`` (benchmarks/bench.py draws with it too)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for r in rows:
        ys = [y for y in r["curve"] if y is not None]
        ax.plot(range(len(ys)), ys, label=f"{r['model']} (seed {r['seed']})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("valid Recall@20")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120, format="png")
    plt.close(fig)


def plot_curves(runs: str, out: str, title: str | None = None, force: bool = False) -> str:
    numbered = read_runs(runs, ("model", "seed", "curve"))
    for n, r in numbered:
        if not isinstance(r["curve"], list):
            raise ValueError(f"{runs}: line {n}: field 'curve' is {r['curve']!r}, not a list of per-epoch values")
        for y in r["curve"]:
            if y is not None:
                _number(runs, n, "curve", y)
    rows = [r for _, r in numbered]
    _pyplot()
    return _save(lambda path: draw_curves(rows, path, title or "valid Recall@20 per epoch"), out, force)


def plot_leaderboard(runs: str, out: str, metric: str = "recall@20", title: str | None = None,
                     force: bool = False) -> str:
    """Horizontal bars: mean test ``metric`` per model over its seeds, ± std where there are several."""
    scores = {}
    for n, r in read_runs(runs):
        test = r.get("test_result") if isinstance(r.get("test_result"), dict) else {}
        value = r.get(metric, test.get(metric))
        if value is None:
            raise ValueError(f"{runs}: line {n}: no {metric!r} (--metric)")
        scores.setdefault(str(r["model"]), []).append(_number(runs, n, metric, value))
    order = sorted(scores, key=lambda m: np.mean(scores[m]))
    means = [np.mean(scores[m]) for m in order]
    stds = [np.std(scores[m], ddof=1) if len(scores[m]) > 1 else 0.0 for m in order]
    plt = _pyplot()

    def draw(path):
        fig, ax = plt.subplots(figsize=(7, 0.45 * len(order) + 1.5))
        ax.barh(order, means, xerr=stds, color="tab:blue", alpha=0.8, capsize=3)
        for y, (m, s) in enumerate(zip(means, stds)):
            ax.text(m + s, y, f" {m:.4f}", va="center", fontsize=8)
        ax.set_xlabel(f"test {metric}" + (" (mean ± std over seeds)" if any(stds) else ""))
        ax.set_xlim(0, max(m + s for m, s in zip(means, stds)) * 1.15)
        ax.set_title(title or f"test {metric} by model")
        ax.grid(axis="x", alpha=0.3)
        fig.tight_layout()
        fig.savefig(path, dpi=120, format="png")
        plt.close(fig)

    return _save(draw, out, force)


def _main(argv):
    parser = argparse.ArgumentParser(prog="python -m recbole_mm.plot", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="what", required=True)
    emb = sub.add_parser("embeddings", help="2-D map of learned item embeddings next to raw features")
    emb.add_argument("--checkpoint", required=True)
    emb.add_argument("--color", default="popularity", help="popularity (default) or a categorical item field")
    emb.add_argument("--features", default=None, metavar="MODALITY", help="raw-feature panel: this modality only")
    emb.add_argument("--method", default="pca", choices=("pca", "tsne"))
    emb.add_argument("--seed", type=int, default=2020)
    for name, helptext in (("curves", "valid Recall@20 per epoch of a bench.py runs.jsonl"),
                           ("leaderboard", "mean test metric per model of a bench.py runs.jsonl")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--runs", required=True, help="benchmarks/bench.py's OUT/runs.jsonl")
        p.add_argument("--title", default=None)
        if name == "leaderboard":
            p.add_argument("--metric", default="recall@20")
    for p in sub.choices.values():
        p.add_argument("--out", required=True, help="a .png file")
        p.add_argument("--force", action="store_true", help="overwrite --out")
    if argv and not argv[0].startswith("-") and argv[0] not in KINDS:  # argparse would print its usage too
        raise ValueError(f"plot kind {argv[0]!r} is unknown; use one of {', '.join(KINDS)}")
    args = parser.parse_args(argv)
    _check_out(args.out, args.force)
    if args.what == "embeddings":
        path = plot_embeddings(args.checkpoint, args.out, args.color, args.features, args.method, args.seed, args.force)
    elif args.what == "curves":
        path = plot_curves(args.runs, args.out, args.title, args.force)
    else:
        path = plot_leaderboard(args.runs, args.out, args.metric, args.title, args.force)
    print(f"wrote {path}")
    return 0


def main(argv=None) -> int:
    from recbole_mm.cli import run_main

    return run_main(_main, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
