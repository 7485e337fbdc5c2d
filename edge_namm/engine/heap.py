"""Hand the C heap's free memory back to the operating system after a recall or an eviction.

Both allocate tens of MiB for a moment (a recall: the hot keys as float32, the gathered
candidates' keys, the swapped tokens' K/V bytes; an eviction: the scorer's inputs and the K/V
bytes moved to the cold store). glibc keeps such freed blocks for reuse and returns them only now
and then, so a long conversation's RSS swings by 8% while what the process holds stays within 1%
(docs/experiments/2026-11-30-soak-100k.md, run 4). Trimming after each (~0.1 ms) gives the memory
back where an edge device can use it, at the cost of faulting it in again next time.
"""

from __future__ import annotations

import ctypes
import sys
from collections.abc import Callable


def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's malloc_trim, or None where there is none (macOS, musl, Windows)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    trim = getattr(libc, "malloc_trim", None)
    if trim is not None:
        trim.argtypes = [ctypes.c_size_t]
        trim.restype = ctypes.c_int
    return trim


_TRIM = _malloc_trim()


def release_free_heap() -> bool:
    """Return the C heap's free pages to the OS; True if any were (False where unsupported)."""
    return bool(_TRIM(0)) if _TRIM is not None else False
