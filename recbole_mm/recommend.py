"""From a trained checkpoint to recommendations: top-K lists per user and the scoring embeddings.

    python -m recbole_mm.recommend --checkpoint saved/M.pth [--users FILE|all] --topk 50
        --out recs.parquet|recs.csv [--keep-train] [--batch-size N] [--force]
        [--export-embeddings DIR]

Top-K: every user (or the user tokens of FILE, one per line) gets her ``topk`` best items with their
scores, in external ids (tokens), without the items of her training split (``--keep-train`` keeps them).
Users are ranked in batches (``full_sort_predict`` over all items, ``torch.topk``), so this works for
every model that RecBole can evaluate, its built-ins included.

Embeddings: user and item vectors whose dot product is the model's score (``user.npy`` / ``user.ids``,
``item.npy`` / ``item.ids``, one token per line) and, with faiss installed, ``item.faiss``: an exact
inner-product index (``IndexFlatIP``) of the items, for a vector database or a serving stack. A model
whose score is not such a dot product (ItemKNNCBF, DMRL's attention) is refused with a clear error.

From Python: :func:`recommend` (a DataFrame ``user, rank, item, score``) and :func:`scoring_embeddings`.
"""

from __future__ import annotations

import argparse
import inspect
import json
import os
import sys
import tempfile

import numpy as np
import pandas as pd
import scipy.sparse as sp
import torch
from recbole.data.interaction import Interaction

FORMATS = (".parquet", ".csv")
CHECK_USERS = 32  # users whose full_sort_predict scores are compared with the exported dot products


class Loaded:
    """What a checkpoint gives back: ``config``, ``model`` (eval mode), the full ``dataset`` and the
    training split ``train_dataset`` (whose items are excluded from a user's recommendations)."""

    def __init__(self, config, model, dataset, train_dataset, checkpoint=None):
        self.config, self.model, self.dataset, self.train_dataset = config, model.eval(), dataset, train_dataset
        self.checkpoint = checkpoint


def check_checkpoint(path: str, what: str = "--checkpoint") -> dict:
    """The run ``Config`` of the checkpoint at ``path``, read before the (slow) dataset load: a
    missing file, a folder, or a file that is not a checkpoint written by a recbole_mm/RecBole run
    (no pickled ``config`` and ``state_dict``) is one ``ValueError`` naming ``what`` and the file.
    Zip checkpoints are memory-mapped, so the weights are not read twice."""
    import pickle
    import zipfile

    path = os.fspath(path)
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} {path}: is a folder, not a checkpoint file")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} {path}: no such file")
    try:
        # as compat.load_checkpoint (our own pickled Config), memory-mapped
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=zipfile.is_zipfile(path))
    except (pickle.UnpicklingError, EOFError, RuntimeError, zipfile.BadZipFile, AttributeError, ImportError,
            ModuleNotFoundError, UnicodeDecodeError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:200] or type(exc).__name__
        raise ValueError(f"{what} {path}: not a checkpoint saved by a recbole_mm/RecBole run "
                         f"(torch.load: {reason})") from None
    keys = sorted(map(str, checkpoint)) if isinstance(checkpoint, dict) else None
    missing = [k for k in ("config", "state_dict") if keys is None or k not in keys]
    if missing:
        found = f"its keys: {keys[:8]}" if keys is not None else f"it holds a {type(checkpoint).__name__}"
        raise ValueError(f"{what} {path}: not a checkpoint saved by a recbole_mm/RecBole run (no "
                         f"{' / '.join(repr(k) for k in missing)}; {found})")
    return checkpoint["config"]


def load(checkpoint_or_model, what: str = "--checkpoint") -> Loaded:
    """A checkpoint path, the tuple :func:`recbole_mm.quick_start.load_data_and_model` returns, or a
    :class:`Loaded`. A path that is no checkpoint is refused first (:func:`check_checkpoint`)."""
    if isinstance(checkpoint_or_model, Loaded):
        return checkpoint_or_model
    if isinstance(checkpoint_or_model, (str, os.PathLike)):
        path = os.fspath(checkpoint_or_model)
        check_checkpoint(path, what)
        from recbole_mm.quick_start import load_data_and_model

        config, model, dataset, train_data, _, _ = load_data_and_model(path)
        return Loaded(config, model, dataset, train_data._dataset, checkpoint=path)
    if isinstance(checkpoint_or_model, tuple) and len(checkpoint_or_model) == 6:
        config, model, dataset, train_data, _, _ = checkpoint_or_model
        return Loaded(config, model, dataset, train_data._dataset)
    raise TypeError("recommend() takes a checkpoint path, load_data_and_model()'s tuple or a Loaded")


def check_k(value: int, what: str = "--topk") -> int:
    """``value`` if it is a positive integer, else a ``ValueError`` naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive integer, got {value!r}")
    return int(value)


def _device(loaded: Loaded) -> torch.device:
    for tensor in list(loaded.model.parameters()) + list(loaded.model.buffers()):
        return tensor.device
    return torch.device("cpu")


def user_ids(loaded: Loaded, users=None, source: str = "users", lines=None) -> torch.Tensor:
    """Internal ids of the user tokens ``users`` (``None``: every user); an unknown token is an error
    naming ``source`` (the file it came from), its line (``lines``) and the token."""
    dataset = loaded.dataset
    if users is None:
        return torch.arange(1, dataset.user_num)
    return token_ids(dataset, dataset.uid_field, users, source, lines)


def token_ids(dataset, field: str, tokens, source: str, lines=None) -> torch.Tensor:
    """Internal ids of ``tokens`` of ``field``; the first unknown one (or the padding token) is a
    ``ValueError`` naming ``source``, its line in it (``lines``, one per token) and where the
    dataset's ids come from (:func:`_id_hint`)."""
    tokens = pd.Index(np.asarray(list(tokens)).astype(str))
    ids = pd.Index(dataset.field2id_token[field].astype(str)).get_indexer(tokens)
    bad = np.flatnonzero(ids <= 0)
    if len(bad):
        kind = "user" if field == dataset.uid_field else "item"
        where = f"line {lines[bad[0]]}: " if lines is not None else ""
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise ValueError(f"{source}: {where}{kind} id {tokens[bad[0]]!r} is not in dataset "
                         f"'{dataset.dataset_name}'{more}; {_id_hint(dataset, field, kind, tokens[bad[0]])}")
    return torch.from_numpy(ids).long()


def _id_hint(dataset, field: str, kind: str, token: str) -> str:
    """Where the dataset's ids come from: its ``.inter`` files, or the converter's mapping file of
    original ids (``u_id_mapping.tsv``), which also tells when ``token`` is an original id."""
    folder = dataset.config["data_path"]
    examples = ", ".join(repr(str(t)) for t in dataset.field2id_token[field][1:4])
    for name in (f"{kind[0]}_id_mapping.tsv", f"{kind[0]}_id_mapping.csv"):
        path = os.path.join(folder, name)
        if not os.path.isfile(path):
            continue
        try:
            mapping = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
        except (OSError, ValueError):
            break
        if mapping.shape[1] >= 2:
            hit = np.flatnonzero(mapping.iloc[:, 0].to_numpy() == token)
            if len(hit):
                return (f"{token!r} is an original id (column {mapping.columns[0]!r} of {path}), whose {kind} "
                        f"id in the dataset is {mapping.iloc[hit[0], 1]!r}")
        return f"the dataset's {kind} ids (e.g. {examples}) are mapped from the original ones in {path}"
    return (f"its {kind} ids are the {field} tokens of {os.path.join(folder, dataset.dataset_name)}.*.inter "
            f"(e.g. {examples})")


def read_user_file(path: str) -> tuple:
    """``(tokens, line numbers)`` of the user tokens in ``path``, one per line (blank lines skipped)."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"--users {path}: is a folder, not a file of user ids")
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--users {path}: no such file (give a file of user ids, one per line, or 'all')")
    try:
        with open(path, encoding="utf-8") as fh:
            rows = [(line.strip(), n) for n, line in enumerate(fh, 1)]
    except UnicodeDecodeError as exc:
        raise ValueError(f"--users {path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    rows = [r for r in rows if r[0]]
    if not rows:
        raise ValueError(f"--users {path}: no user id in the file")
    return [r[0] for r in rows], [r[1] for r in rows]


def _train_matrix(loaded: Loaded) -> sp.csr_matrix:
    train = loaded.train_dataset.inter_feat
    users, items = train[loaded.dataset.uid_field].numpy(), train[loaded.dataset.iid_field].numpy()
    return sp.csr_matrix((np.ones(len(users), dtype=np.float32), (users, items)),
                         shape=(loaded.dataset.user_num, loaded.dataset.item_num))


def score_batches(loaded: Loaded, uids: torch.Tensor, batch_size: int | None = None, exclude_train: bool = True,
                  show_progress: bool = False):
    """Yield ``(uids, scores)`` per batch of users: ``full_sort_predict`` over all items (on the model's
    device), the padding item and (with ``exclude_train``) the user's training items at ``-inf``."""
    from tqdm.auto import tqdm

    model, dataset = loaded.model, loaded.dataset
    n_items = dataset.item_num
    batch_size = batch_size or max(1, int(loaded.config["eval_batch_size"] or 2**22) // n_items)
    train = _train_matrix(loaded) if exclude_train else None
    device = _device(loaded)
    starts = range(0, len(uids), batch_size)
    with torch.no_grad():
        for start in tqdm(starts, desc="ranking users", unit="batch", disable=not show_progress):
            batch = uids[start:start + batch_size]
            inter = Interaction({dataset.uid_field: batch}).to(device)
            scores = model.full_sort_predict(inter).view(len(batch), n_items).float()  # on the model's device
            scores[:, 0] = -torch.inf
            if train is not None:
                seen = train[batch.numpy()].tocoo()
                rows, cols = (torch.from_numpy(a).long().to(scores.device) for a in (seen.row, seen.col))
                scores[rows, cols] = -torch.inf
            yield batch, scores


def recommend(checkpoint_or_model, users=None, topk: int = 50, exclude_train: bool = True,
              batch_size: int | None = None, show_progress: bool = False, source: str = "users",
              lines=None) -> pd.DataFrame:
    """Top-``topk`` items per user: a DataFrame ``user, rank, item, score`` (tokens, rank from 1).

    ``users``: user tokens (``None``: all users); ``source`` / ``lines``: the file and its lines they
    came from, for the error about an unknown one. ``exclude_train``: leave out each user's training
    items; a user with fewer than ``topk`` rankable items gets fewer rows."""
    topk = check_k(topk, "topk")
    loaded = load(checkpoint_or_model)
    dataset = loaded.dataset
    uids = user_ids(loaded, users, source, lines)
    k = min(topk, dataset.item_num - 1)
    parts = []
    for batch, scores in score_batches(loaded, uids, batch_size, exclude_train, show_progress):
        values, items = torch.topk(scores, k, dim=1)
        parts.append((batch.repeat_interleave(k), items.reshape(-1).cpu(), values.reshape(-1).cpu()))
    user = torch.cat([p[0] for p in parts]).numpy()
    item = torch.cat([p[1] for p in parts]).numpy()
    score = torch.cat([p[2] for p in parts]).numpy()
    rank = np.tile(np.arange(1, k + 1), len(uids))
    keep = np.isfinite(score)  # excluded or padding items that filled a short list
    return pd.DataFrame({
        "user": dataset.field2id_token[dataset.uid_field][user[keep]],
        "rank": rank[keep],
        "item": dataset.field2id_token[dataset.iid_field][item[keep]],
        "score": score[keep],
    })


# -- scoring embeddings ------------------------------------------------------------------------
def _candidates(model):
    """Ways to read ``(users, items)`` off ``model``, most specific first."""
    from recbole_mm.model.abstract_recommender import MultimodalRecommender

    if isinstance(model, MultimodalRecommender):
        yield "inference_embeddings()", model.inference_embeddings
        return
    # RecBole's graph models (LightGCN, NGCF, SGL, ...): forward() returns the propagated tables
    params = [p for p in inspect.signature(model.forward).parameters.values() if p.default is p.empty]
    if not params:
        yield "forward()", model.forward
    if isinstance(getattr(model, "user_embedding", None), torch.nn.Embedding) and \
            isinstance(getattr(model, "item_embedding", None), torch.nn.Embedding):  # BPR and other MF
        yield "user_embedding/item_embedding", lambda: (model.user_embedding.weight, model.item_embedding.weight)


def scoring_embeddings(checkpoint_or_model):
    """``(users (n_users, d), items (n_items, d))`` float32 CPU tensors, row = internal id (row 0 is
    padding), whose dot products are the model's full-ranking scores: checked against
    ``full_sort_predict`` on a sample of users. A model scored otherwise is a ``ValueError``."""
    loaded = load(checkpoint_or_model)
    model, dataset = loaded.model, loaded.dataset
    name = type(model).__name__
    sample = torch.arange(1, dataset.user_num)[:CHECK_USERS]
    device = _device(loaded)
    with torch.no_grad():
        reference = model.full_sort_predict(Interaction({dataset.uid_field: sample}).to(device))
        reference = reference.view(len(sample), -1).float().cpu()
        tried = []
        for how, get in _candidates(model):
            try:
                out = get()
            except NotImplementedError:
                tried.append(f"{how} is not implemented")
                continue
            if not (isinstance(out, tuple) and len(out) == 2 and all(torch.is_tensor(t) for t in out)):
                tried.append(f"{how} does not return (users, items)")
                continue
            users, items = (t.detach().float().cpu() for t in out)
            if users.shape[0] != dataset.user_num or items.shape[0] != dataset.item_num or \
                    users.shape[1] != items.shape[1]:
                tried.append(f"{how} gives shapes {tuple(users.shape)}, {tuple(items.shape)}")
                continue
            dots = users[sample] @ items.T
            scale = reference.abs().max().clamp_min(1e-6)
            if torch.allclose(dots, reference, rtol=1e-4, atol=1e-4 * float(scale)):
                return users, items
            tried.append(f"the dot products of {how} differ from its scores")
    raise ValueError(f"model {name}: its score is not a dot product of user and item embeddings "
                     f"({'; '.join(tried) or 'no user/item embeddings found'}), so there are no vectors to export")


def export_embeddings(checkpoint_or_model, out_dir: str, force: bool = False, embeddings=None) -> dict:
    """Write ``user.npy``/``user.ids``, ``item.npy``/``item.ids``, ``embeddings.json`` and (faiss
    installed) ``item.faiss`` into ``out_dir`` in one rename; refuses an existing ``out_dir`` without
    ``force``. ``embeddings``: :func:`scoring_embeddings`' result when already computed. Returns the
    files written."""
    from recbole_mm.data.graphs import faiss_available
    from recbole_mm.io import atomic_save_npy, atomic_write_text, staged_output_dir, write_ids

    loaded = load(checkpoint_or_model)
    dataset = loaded.dataset
    users, items = embeddings if embeddings is not None else scoring_embeddings(loaded)
    users, items = users[1:].numpy(), items[1:].numpy()  # without padding: row r is the token on line r
    written = ["user.npy", "user.ids", "item.npy", "item.ids", "embeddings.json"]
    with staged_output_dir(out_dir, force=force) as stage:
        atomic_save_npy(os.path.join(stage, "user.npy"), users)
        write_ids(os.path.join(stage, "user.ids"), dataset.field2id_token[dataset.uid_field][1:])
        atomic_save_npy(os.path.join(stage, "item.npy"), items)
        write_ids(os.path.join(stage, "item.ids"), dataset.field2id_token[dataset.iid_field][1:])
        if faiss_available():
            import faiss

            index = faiss.IndexFlatIP(items.shape[1])
            index.add(np.ascontiguousarray(items, dtype=np.float32))
            faiss.write_index(index, os.path.join(stage, "item.faiss"))
            written.append("item.faiss")
        meta = {"model": type(loaded.model).__name__, "dataset": dataset.dataset_name, "dim": int(items.shape[1]),
                "users": int(users.shape[0]), "items": int(items.shape[0]), "score": "dot product (user . item)",
                "checkpoint": loaded.checkpoint, "files": written}
        atomic_write_text(os.path.join(stage, "embeddings.json"), json.dumps(meta, indent=2) + "\n")
    return {"dir": os.path.abspath(out_dir), "files": written}


# -- output ------------------------------------------------------------------------------------
def check_target(path: str, force: bool, what: str = "--out") -> None:
    """Refuse an output file that cannot be written as asked: ``path`` is a folder, exists (without
    ``force``), or its folder is missing, a file or not writable (a typo is not a new folder)."""
    if os.path.isdir(path):
        raise IsADirectoryError(f"{what} {path}: is a folder; name the file to write")
    if os.path.exists(path) and not force:
        raise FileExistsError(f"{what} {path} already exists; pass --force to overwrite it")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.exists(folder):
        raise FileNotFoundError(f"{what} {path}: folder {folder} does not exist; create it first")
    if not os.path.isdir(folder):
        raise NotADirectoryError(f"{what} {path}: {folder} is a file, not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise PermissionError(f"{what} {path}: folder {folder} is not writable")


def check_output(path: str, force: bool, what: str = "--out") -> str:
    """The format of ``path`` (by its extension), after :func:`check_target`."""
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise ValueError(f"{what} {path}: unknown format '{ext}', use one of {', '.join(FORMATS)}")
    check_target(path, force, what)
    return ext


def write_table(frame: pd.DataFrame, path: str, force: bool = False) -> None:
    """``frame`` as Parquet or CSV (by extension), through a temporary file and one rename."""
    from recbole_mm.io import _publish

    ext = check_output(path, force)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=ext)
    os.close(fd)
    try:
        if ext == ".parquet":
            frame.to_parquet(tmp, index=False)
        else:
            frame.to_csv(tmp, index=False)
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="python -m recbole_mm.recommend", description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True, help="a checkpoint saved by a run (saved/<Model>-<date>.pth)")
    parser.add_argument("--users", default="all", help="a file of user tokens, one per line, or 'all' (default)")
    parser.add_argument("--topk", type=int, default=50)
    parser.add_argument("--out", default=None, help="recs.parquet or recs.csv: user, rank, item, score")
    parser.add_argument("--keep-train", action="store_true", help="do not leave out the users' training items")
    parser.add_argument("--batch-size", type=int, default=None,
                        help="users per ranking batch (default: eval_batch_size // items, RecBole's rule)")
    parser.add_argument("--export-embeddings", metavar="DIR", default=None,
                        help="also write user/item vectors (.npy + .ids) and a FAISS index of the items")
    parser.add_argument("--force", action="store_true", help="overwrite --out / --export-embeddings")
    args = parser.parse_args(argv)
    if not args.out and not args.export_embeddings:
        raise ValueError("nothing to do: give --out and/or --export-embeddings")
    check_k(args.topk, "--topk")
    if args.batch_size is not None:
        check_k(args.batch_size, "--batch-size")
    return args


def _main(argv):
    args = parse_args(argv)
    if args.out:
        check_output(args.out, args.force)  # before the (slow) load
    if args.export_embeddings and os.path.exists(args.export_embeddings) and not args.force:
        raise FileExistsError(f"--export-embeddings {args.export_embeddings} already exists; pass --force to "
                              "overwrite it")
    users, lines = (None, None) if args.users == "all" else read_user_file(args.users)
    loaded = load(args.checkpoint)
    # every check that can fail runs before the first file is written: nothing is left half done
    embeddings = scoring_embeddings(loaded) if args.export_embeddings else None
    frame = None
    if args.out:
        frame = recommend(loaded, users, args.topk, exclude_train=not args.keep_train, batch_size=args.batch_size,
                          show_progress=True, source=f"--users {args.users}", lines=lines)
    if frame is not None:
        write_table(frame, args.out, force=args.force)
        print(f"wrote {len(frame)} recommendations for {frame['user'].nunique()} users to {args.out}")
    if args.export_embeddings:
        done = export_embeddings(loaded, args.export_embeddings, force=args.force, embeddings=embeddings)
        print(f"wrote {', '.join(done['files'])} to {done['dir']}")
    return 0


def main(argv=None) -> int:
    from recbole_mm.cli import run_main

    return run_main(_main, sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
