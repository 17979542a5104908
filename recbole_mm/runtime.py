"""Process-level CPU settings: glibc allocator tuning (applied once when a trainer is built) and
deterministic kernels (:func:`set_cpu_determinism`, from the config's ``reproducibility``).

glibc serves every allocation above ``M_MMAP_THRESHOLD`` (at most 32 MB by its dynamic rule) with
a fresh ``mmap`` and unmaps it on free, so each training step that gathers a feature-sized
batch (e.g. 2048 x 4480 floats = 36 MB) pays page faults on every touched page: on our 2-core
machine ``index_select`` of such a batch took 17 ms instead of 2 ms. Raising the mmap threshold
and the trim threshold lets freed blocks be reused from the heap (blocks of at least
``cpu_mmap_threshold_mb``, 1 GB by default, are still mapped and returned). PyTorch's own CPU
performance guide recommends jemalloc/tcmalloc for the same reason; this achieves most of it
without a preload. The price is resident memory: freed blocks stay in the heap, and when a graph
model allocates and frees many all-node tables of different sizes per batch, the heap fragments
and grows well past the live set -- MMGCN on the Elec-sized synthetic graph (255k nodes) peaks at
10.5-11.0 GB with the tuning against 6.6-6.7 GB without it (MVGAE 11.9-12.1 against 7.6 GB), at
1.5x (MVGAE 2.5x) the time per batch without; PyTorch's ``THP_MEM_ALLOC_ENABLE=1``, set before
torch starts, cuts that to 1.2x (1.5x) (benchmarks/README.md, "Memory on the Elec-sized synthetic
set"). Switch off with ``cpu_allocator_tuning: False`` when memory is the limit.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys
from logging import getLogger

import torch

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


def set_cpu_determinism(on: bool) -> None:
    """``reproducibility: True`` on CPU: the same seed gives the same numbers at any thread count.

    RecBole's ``init_seed`` only sets cuDNN's flags. On CPU, ``index_put_(accumulate=True)`` -- the
    backward of every embedding lookup ``table[ids]`` -- adds duplicate rows from several threads in
    no fixed order, so at 2+ threads two runs of one seed drifted apart (lfm2k MMGCN, 3 epochs: test
    Recall@20 0.1259 and 0.1264; one thread: equal). torch's deterministic mode sorts the indices
    first. ``warn_only``: an op without a deterministic kernel warns instead of failing; uninitialised
    memory is not filled (that costs time and changes no result of a correct program).
    """
    torch.use_deterministic_algorithms(on, warn_only=True)
    torch.utils.deterministic.fill_uninitialized_memory = False
