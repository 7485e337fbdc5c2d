"""Compile every Numba kernel now instead of inside the first chat turn.

Numba compiles a kernel on its first call and caches the machine code beside the source
(``__pycache__``). On a fresh install that first call lands in the user's first prompt: about
13 s of the first reply on a 2-core machine went to compiling the STFT fold and the cold-key
widening. ``build.sh`` runs ``python -m edge_namm.kernels`` once, so the cache is filled before
anyone chats; afterwards loading the cached code takes well under a second.
"""

from __future__ import annotations

import time

import numpy as np


def compile_all() -> float:
    """Compile (or load from Numba's cache) every kernel the engine calls; seconds taken."""
    from edge_namm.engine.recall import as_float32
    from edge_namm.features.stft import fold_rows, fold_rows_serial, n_work_items

    start = time.perf_counter()
    # the fold kernels carry an explicit signature: asking for them compiles them
    fold_rows()
    fold_rows_serial()
    n_work_items(1, 1, 1)
    # the widening is typed lazily: call it once with the dtypes the cold store uses
    as_float32(np.zeros((1, 8), dtype=np.float16))
    return time.perf_counter() - start


if __name__ == "__main__":
    print(f"edge-namm kernels ready ({compile_all():.1f} s)")
