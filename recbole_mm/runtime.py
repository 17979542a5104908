"""Process-level CPU performance settings, applied once when a trainer is built.

glibc serves every allocation above ``M_MMAP_THRESHOLD`` (at most 32 MB by its dynamic rule) with
a fresh ``mmap`` and unmaps it on free, so each training step that gathers a feature-sized
batch (e.g. 2048 x 4480 floats = 36 MB) pays page faults on every touched page: on our 2-core
machine ``index_select`` of such a batch took 17 ms instead of 2 ms. Raising the mmap threshold
and the trim threshold lets freed blocks be reused from the heap. It does not raise peak memory
(the same blocks are live at the peak); it only stops returning freed memory to the OS between
steps. PyTorch's own CPU performance guide recommends jemalloc/tcmalloc for the same reason; this
achieves most of it without a preload. Switch off with ``cpu_allocator_tuning: False``.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from logging import getLogger

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_applied = False
_logged: set = set()


def log_once(key: str, message: str, *args) -> None:
    """Log a silent choice (a dtype, an allocator, a kernel) the first time it is made in this process."""
    if key not in _logged:
        _logged.add(key)
        getLogger().info(message, *args)


def tune_cpu_allocator(mmap_threshold: int = 1 << 30, trim_threshold: int = (1 << 31) - 1) -> bool:
    """Raise glibc's mmap/trim thresholds for this process; ``True`` if applied (Linux/glibc only)."""
    global _applied
    if _applied:
        return True
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl or another libc without mallopt
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    _applied = bool(mallopt(_M_MMAP_THRESHOLD, mmap_threshold)) and bool(mallopt(_M_TRIM_THRESHOLD, trim_threshold))
    if _applied:
        log_once("allocator", "cpu_allocator_tuning: glibc mmap threshold %d MB, trim threshold %d MB "
                 "(large freed blocks are reused; --cpu_allocator_tuning=False to keep glibc's defaults)",
                 mmap_threshold >> 20, trim_threshold >> 20)
    return _applied
