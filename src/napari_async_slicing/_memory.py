"""Large buffers freed go back to the operating system (glibc).

glibc raises its mmap threshold each time a large mmapped block is freed (up to 32 MiB), after
which chunk-sized and plane-sized buffers come from per-thread arenas, and what the slicer's
threads free there is kept by the process. A fixed threshold keeps them mmapped: freed, returned.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

#: Buffers at least this large are mmapped (glibc's initial default, kept fixed).
MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3
_done = False


def return_large_frees() -> bool:
    """Fix glibc's mmap threshold (once per process); False where there is no glibc."""
    global _done
    if _done:
        return True
    if not sys.platform.startswith('linux'):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library('c') or 'libc.so.6')
        _done = bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    except (OSError, AttributeError):  # musl and others: no mallopt
        return False
    return _done
