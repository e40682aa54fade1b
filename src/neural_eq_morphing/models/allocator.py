"""Keep glibc from handing memory back to the OS between training steps.

PyTorch's CPU allocator calls ``malloc``/``free`` for every tensor. With glibc's defaults,
blocks above the (dynamic) mmap threshold get a fresh ``mmap`` each time and a heap whose
free top exceeds the trim threshold is shrunk; either way the next step touches new pages
and pays a page fault per 4 KiB. For this workload (a few hundred tensors of 50 KiB - 7 MiB
per step) that cost 20-55 % of an epoch on the 2-core target machine (measured with
``benchmarks/train_speed.py``). :func:`keep_freed_memory` raises both thresholds once
per process, so freed blocks are reused instead of being re-faulted.

This is a process-wide setting: memory freed later stays mapped to the process (its
peak RSS does not grow, it just is not returned early). It is a no-op where the C library
has no ``mallopt`` (non-glibc systems).
"""

from __future__ import annotations

import ctypes
import functools
import logging
import sys

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
#: Largest value glibc accepts for M_MMAP_THRESHOLD on 64-bit systems (32 MiB).
MMAP_THRESHOLD = 32 * 1024 * 1024
TRIM_THRESHOLD = 512 * 1024 * 1024


@functools.cache
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds (once per process; later calls are free).

    Returns:
        Whether the thresholds are in effect (``False`` on systems without glibc).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    applied = (
        mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) == 1
        and mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
    )
    logger.debug("glibc malloc thresholds raised: %s", applied)
    return applied
