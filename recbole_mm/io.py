"""Atomic, non-destructive file output shared by converters, encoders and caches."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
import time
from contextlib import contextmanager

import numpy as np


def json_record(line: str, where: str, fields=(), kind: str = "an object", source: str = "the expected file",
                hint: str | None = None) -> dict:
    """One line of a JSON-lines file as a dict, or a ``ValueError`` naming ``where`` (file and line).

    ``fields``: the keys the record must have, or a function of the parsed record giving them;
    ``kind`` / ``source`` word the "not an object" / "missing field" messages; ``hint`` (what the
    user can do) ends every message."""
    tail = f"; {hint}" if hint else ""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: not JSON ({exc.msg}){tail}") from None
    if not isinstance(record, dict):
        raise ValueError(f"{where}: a JSON {type(record).__name__}, not {kind}{tail}")
    missing = [f for f in (fields(record) if callable(fields) else fields) if f not in record]
    if missing:
        raise ValueError(f"{where}: no field {missing[0]!r} (not {source}){tail}")
    return record


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


def _output_root(parent: str) -> bool:
    """Create the output root ``parent`` (True if it was made); a file in the way, or no write
    permission, is one clear error."""
    existing = parent
    while not os.path.exists(existing):
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        raise NotADirectoryError(f"output root {parent}: {existing} is a file, not a folder")
    try:
        os.makedirs(parent, exist_ok=True)
    except OSError as exc:
        raise PermissionError(f"output root {parent}: cannot create it ({exc.strerror})") from exc
    if not os.access(parent, os.W_OK | os.X_OK):
        raise PermissionError(f"output root {parent} is not writable")
    return existing != parent


@contextmanager
def _exclusive_lock(lock: str, final_dir: str):
    """Hold ``lock`` (created with O_EXCL: one holder at a time) for the duration of the block."""
    stamp = f"{os.getpid()} {socket.gethostname()} {time.strftime('%Y-%m-%dT%H:%M:%S')}\n"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            with open(lock) as fh:
                pid, host, since = (fh.read().split() + ["?", "?", "?"])[:3]
        except OSError:
            pid = host = since = "?"
        stale = ""
        if host == socket.gethostname() and pid.isdigit() and not _alive(int(pid)):
            stale = f"; process {pid} is no longer running, so the lock is stale"
        raise FileExistsError(
            f"output {final_dir} is being written by another process: lock {lock} is held (pid {pid} on {host} "
            f"since {since}{stale}); if no converter is writing it, remove the lock: rm {lock}"
        ) from None
    except OSError as exc:
        raise PermissionError(f"output root {os.path.dirname(lock)} is not writable ({exc.strerror})") from exc
    with os.fdopen(fd, "w") as fh:
        fh.write(stamp)
    try:
        yield
    finally:
        try:  # only our own lock (someone may have removed a lock they took for stale)
            with open(lock) as fh:
                ours = fh.read() == stamp
            if ours:
                os.unlink(lock)
        except OSError:
            pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: existence check only
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        pass
    return True


@contextmanager
def staged_output_dir(final_dir: str, force: bool = False):
    """Yield a temporary sibling directory; on success it replaces ``final_dir`` in one rename.

    Refuses to touch an existing ``final_dir`` unless ``force``; on any error the staging
    directory is removed and ``final_dir`` is left exactly as it was. Writers are exclusive:
    ``<final_dir>.lock`` is held from start to publish, so a second writer of the same folder
    (``force`` or not) fails at once instead of silently replacing the first one's output.
    """
    final_dir = os.path.abspath(final_dir)
    parent = os.path.dirname(final_dir)

    def refuse_existing():
        if os.path.exists(final_dir) and not force:
            raise FileExistsError(f"output {final_dir} already exists; pass --force to overwrite it")

    refuse_existing()
    created = _output_root(parent)
    try:
        with _exclusive_lock(final_dir + ".lock", final_dir):
            refuse_existing()  # again, under the lock: a writer that just finished may have published it
            stage = tempfile.mkdtemp(dir=parent, prefix=f".{os.path.basename(final_dir)}.tmp-")
            try:
                yield stage
                refuse_existing()  # compare at publish: appeared during our run (not by a locking writer)
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
    except BaseException:
        if created:  # leave no empty output root behind
            try:
                os.rmdir(parent)
            except OSError:
                pass
        raise
