"""Atomic, non-destructive file output shared by converters, encoders and caches."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager

import numpy as np


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _publish(tmp_path: str, final_path: str, directory: bool = False) -> None:
    """mkstemp/mkdtemp create private (0600/0700) paths; give the result normal permissions."""
    os.chmod(tmp_path, (0o777 if directory else 0o666) & ~_umask())
    os.replace(tmp_path, final_path)


def atomic_write_text(path: str, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file + rename (never a half-written file)."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def atomic_save_npy(path: str, array: np.ndarray) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=".npy")
    try:
        with os.fdopen(fd, "wb") as fh:
            np.save(fh, array)
        _publish(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_ids(path: str, tokens) -> None:
    """One item token per line: the id file that maps feature rows to items."""
    atomic_write_text(path, "".join(f"{t}\n" for t in tokens))


@contextmanager
def staged_output_dir(final_dir: str, force: bool = False):
    """Yield a temporary sibling directory; on success it replaces ``final_dir`` in one rename.

    Refuses to touch an existing ``final_dir`` unless ``force``; on any error the staging
    directory is removed and ``final_dir`` is left exactly as it was.
    """
    final_dir = os.path.abspath(final_dir)
    if os.path.exists(final_dir) and not force:
        raise FileExistsError(f"output {final_dir} already exists; pass --force to overwrite it")
    parent = os.path.dirname(final_dir)
    os.makedirs(parent, exist_ok=True)
    stage = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(final_dir)}.tmp-")
    try:
        yield stage
        if os.path.exists(final_dir):
            backup = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(final_dir)}.old-")
            os.rmdir(backup)
            os.replace(final_dir, backup)
            _publish(stage, final_dir, directory=True)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            _publish(stage, final_dir, directory=True)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
