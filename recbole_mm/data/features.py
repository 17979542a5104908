"""Read, validate and align item feature files.

A dataset names its modalities in its yaml::

    modalities:
      text: text_feat.npy                      # row r <-> item token "r" (MMRec convention)
      image: {file: image_feat.npy, ids: image_feat.ids}   # row r <-> token on line r of the id file

Which item a row belongs to, in order of precedence:

1. ``ids:`` given for the modality: a text file with one item token per line, line r for row r;
2. a file ``<stem>.ids`` beside ``<stem>.npy`` (what our converters and encoders write);
3. otherwise row r belongs to the item whose token is the integer ``r``.

Every error names the file, and the row and/or item token at fault.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from logging import getLogger
from typing import Optional

import numpy as np
import pandas as pd

MISSING_POLICIES = ("mean", "zero", "neighbour", "error")


class FeatureError(ValueError):
    """A feature file or its id mapping is malformed."""


@dataclass
class ModalitySpec:
    name: str
    path: str
    ids_path: Optional[str] = None


def parse_modalities(spec, base_dir: str) -> list:
    """Turn the ``modalities`` config value into :class:`ModalitySpec` objects (paths resolved)."""
    if spec is None:
        return []
    if not isinstance(spec, dict):
        raise FeatureError(f"config key 'modalities' must map a modality name to a file, got {spec!r}")
    out = []
    for name, value in spec.items():
        if isinstance(value, str):
            file, ids = value, None
        elif isinstance(value, dict) and "file" in value:
            file, ids = value["file"], value.get("ids")
        else:
            raise FeatureError(
                f"config key 'modalities.{name}' must be a file name or {{file: ..., ids: ...}}, got {value!r}"
            )
        path = file if os.path.isabs(file) else os.path.join(base_dir, file)
        if ids is None:
            sidecar = os.path.splitext(path)[0] + ".ids"
            ids = sidecar if os.path.isfile(sidecar) else None
        elif not os.path.isabs(ids):
            ids = os.path.join(base_dir, ids)
        out.append(ModalitySpec(str(name), path, ids))
    return out


def read_feature_matrix(path: str, modality: str = "") -> np.ndarray:
    """Load a 2-D float feature matrix (``.npy``) and check it is finite."""
    label = f"modality '{modality}' file {path}" if modality else f"feature file {path}"
    if not os.path.isfile(path):
        raise FeatureError(f"{label}: file not found")
    try:
        matrix = np.load(path, allow_pickle=False)
    except Exception as exc:  # corrupt or not an .npy file
        raise FeatureError(f"{label}: cannot be read as a .npy array ({exc})") from exc
    if matrix.ndim != 2:
        raise FeatureError(f"{label}: expected a 2-D array (items x dims), got shape {matrix.shape}")
    if not np.issubdtype(matrix.dtype, np.number) or np.issubdtype(matrix.dtype, np.complexfloating):
        raise FeatureError(f"{label}: expected a real numeric array, got dtype {matrix.dtype}")
    return matrix


def read_id_file(path: str) -> np.ndarray:
    """One item token per line; blank lines and duplicates are errors."""
    if not os.path.isfile(path):
        raise FeatureError(f"id file {path}: file not found")
    with open(path, encoding="utf-8") as fh:
        tokens = np.array([line.rstrip("\r\n") for line in fh], dtype=object)
    if tokens.size == 0:
        raise FeatureError(f"id file {path}: empty (no item ids), so no feature row belongs to an item")
    blank = np.flatnonzero(np.char.strip(tokens.astype(str)) == "")
    if blank.size:
        raise FeatureError(f"id file {path}: empty item id on line {blank[0] + 1} (row {blank[0]})")
    dup = pd.Index(tokens).duplicated()
    if dup.any():
        first_dup = int(np.flatnonzero(dup)[0])
        token = tokens[first_dup]
        original = int(np.flatnonzero(tokens == token)[0])
        raise FeatureError(
            f"id file {path}: duplicate item id '{token}' on rows {original} and {first_dup}"
        )
    return tokens


def row_tokens_for(spec: ModalitySpec, n_rows: int, raw_tokens) -> np.ndarray:
    """Item token of every row of a feature matrix, checked against the dataset's raw item tokens."""
    raw_tokens = np.asarray(list(raw_tokens), dtype=object)
    if spec.ids_path is not None:
        tokens = read_id_file(spec.ids_path)
        if len(tokens) != n_rows:
            raise FeatureError(
                f"modality '{spec.name}': wrong row count: {spec.path} has {n_rows} rows but id file "
                f"{spec.ids_path} lists {len(tokens)} ids"
            )
        unknown = ~pd.Index(tokens.astype(str)).isin(raw_tokens.astype(str))
        if unknown.any():
            row = int(np.flatnonzero(unknown)[0])
            raise FeatureError(
                f"modality '{spec.name}': id file {spec.ids_path} row {row}: unknown item id '{tokens[row]}' "
                f"(not in the dataset's interactions or item file; {int(unknown.sum())} unknown ids in all)"
            )
        return tokens.astype(str)
    # Implicit MMRec rule: row r <-> item token "r".
    numeric = pd.to_numeric(pd.Series(raw_tokens), errors="coerce")
    if numeric.isna().any() or (numeric % 1 != 0).any():
        bad = raw_tokens[int(np.flatnonzero(numeric.isna() | (numeric % 1 != 0))[0])]
        raise FeatureError(
            f"modality '{spec.name}': {spec.path} has no id file and item id '{bad}' is not an integer; "
            f"rows map to items only by an id file (ids: in the dataset yaml, or {os.path.splitext(spec.path)[0]}.ids)"
        )
    needed = int(numeric.max()) + 1 if len(numeric) else 0
    if n_rows < needed:
        token = int(numeric.max())
        raise FeatureError(
            f"modality '{spec.name}': wrong row count: {spec.path} has {n_rows} rows but item id '{token}' "
            f"needs row {token} (rule: row r = item id r); give an id file for partial features"
        )
    return np.arange(n_rows).astype(str)


def to_float32(matrix: np.ndarray, label: str, rows=None, row_ids=None) -> np.ndarray:
    """``matrix`` as float32. A NaN/inf, or a finite value that float32 cannot hold (it would
    become inf), is an error: ``label``, the file ``rows`` (default 0..n-1) and ``row_ids`` name it."""
    rows = np.arange(len(matrix)) if rows is None else np.asarray(rows)

    def where(k):
        return f"row {rows[k]}" + (f" (item id '{row_ids[k]}')" if row_ids is not None else "")

    finite = np.isfinite(matrix).all(axis=1)
    if not finite.all():
        k = int(np.flatnonzero(~finite)[0])
        raise FeatureError(f"{label} {where(k)} contains NaN or inf ({int((~finite).sum())} bad rows)")
    with np.errstate(over="ignore"):  # reported below, with the row
        out = matrix.astype(np.float32)
    overflow = ~np.isfinite(out).all(axis=1)
    if overflow.any():
        k = int(np.flatnonzero(overflow)[0])
        value = np.asarray(matrix[k])[~np.isfinite(out[k])][0]
        raise FeatureError(f"{label} {where(k)} has value {value:g}, which overflows float32 (largest "
                           f"{np.finfo(np.float32).max:.4g}; {int(overflow.sum())} such rows)")
    return out


def align_to_items(matrix: np.ndarray, row_tokens: np.ndarray, id2token: np.ndarray, spec: ModalitySpec):
    """Reorder rows to RecBole's internal item ids (row 0 = padding).

    Returns ``(aligned float32 array, present bool mask)``; non-finite rows of the dataset's items,
    and values that overflow float32, are errors (rows of other items are never read).
    """
    positions = pd.Index(row_tokens).get_indexer(np.asarray(id2token).astype(str))
    positions[0] = -1  # [PAD]
    present = positions >= 0
    aligned = np.zeros((len(id2token), matrix.shape[1]), dtype=np.float32)
    aligned[present] = to_float32(matrix[positions[present]], f"modality '{spec.name}': {spec.path}",
                                  rows=positions[present], row_ids=np.asarray(id2token)[present])
    return aligned, present


def fill_missing(aligned: np.ndarray, present: np.ndarray, policy: str, spec: ModalitySpec, id2token) -> np.ndarray:
    """Apply the missing-modality policy to items (ids >= 1) without a row."""
    if policy not in MISSING_POLICIES:
        raise FeatureError(f"config key 'missing_modality' must be one of {MISSING_POLICIES}, got {policy!r}")
    missing = ~present
    missing[0] = False
    n_missing = int(missing.sum())
    if n_missing == 0:
        return aligned
    if not present.any():  # a mean over zero rows, or all zeros: a modality that carries nothing
        keyed = f"id file {spec.ids_path}" if spec.ids_path else "row number = item id"
        raise FeatureError(
            f"modality '{spec.name}': 0% coverage: none of the dataset's {n_missing} items has a row in "
            f"{spec.path} (rows keyed by {keyed}); fix the ids or leave the modality out (use_modalities)"
        )
    if policy == "error":
        examples = ", ".join(f"'{t}'" for t in np.asarray(id2token)[missing][:10])
        raise FeatureError(
            f"modality '{spec.name}': {n_missing} items have no row in {spec.path} (e.g. item ids {examples}); "
            "set missing_modality: mean | zero to impute them"
        )
    # "neighbour" needs the training interactions, known only once the dataset is split: the mean
    # is a placeholder that MultimodalDataset.build() replaces (see neighbour_impute)
    if policy in ("mean", "neighbour") and present.any():
        aligned[missing] = aligned[present].mean(axis=0)
    getLogger().warning(
        "modality '%s': %d of %d items have no row in %s; filled with %s",
        spec.name, n_missing, len(present) - 1, spec.path, policy,
    )
    return aligned


def neighbour_impute(aligned: np.ndarray, present: np.ndarray, users: np.ndarray, items: np.ndarray):
    """Impute items without a feature row from their co-interacted items (Malitesta et al., CIKM'24,
    "Do We Really Need to Drop Items with Missing Modalities in Multimodal Recommendation?").

    A missing item ``i`` gets ``sum_j c_ij f_j / sum_j c_ij`` over items ``j`` that have the
    modality, with ``c_ij`` the number of training users who interacted with both (``R^T R``). Items
    with no such neighbour (cold items) get the mean of the present rows. Returns
    ``(features, n_from_neighbours, n_from_mean)``; rows of present items are untouched.
    """
    import scipy.sparse as sp

    from recbole_mm.data.graphs import binary_interactions

    n_items = len(present)
    missing = ~present
    missing[0] = False
    idx = np.flatnonzero(missing)
    out = aligned.copy()
    if idx.size == 0 or not present.any():
        return out, 0, int(idx.size)
    n_users = int(users.max()) + 1 if len(users) else 1
    R = binary_interactions(users, items, n_users, n_items)
    co = (R[:, idx].T @ R).tocsr()  # (n_missing, n_items) co-interaction counts
    co = co @ sp.diags(present.astype(np.float32))  # only items that have the modality vote
    weight = np.asarray(co.sum(axis=1)).ravel()
    has = weight > 0
    out[idx[has]] = (co[has] @ aligned) / weight[has, None]
    out[idx[~has]] = aligned[present].mean(axis=0)
    return out, int(has.sum()), int((~has).sum())
