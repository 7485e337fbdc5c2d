"""Per-cell aggregation of per-(layer, kv-head) scores.

Eviction on llama.cpp frees a cell in every layer at once (docs/DESIGN.md §3.1), so the scores
of all (layer, head) rows are reduced to one score per cell before deciding.
"""

from __future__ import annotations

import numpy as np

from .base import AGGREGATIONS


def aggregate(scores: np.ndarray, rule: str = "mean") -> np.ndarray:
    """Reduce scores [L*H, N] or [L, H, N] to float32 [N] with ``rule`` (mean | max | min)."""
    s = np.asarray(scores, dtype=np.float32)
    if s.ndim not in (2, 3):
        raise ValueError(f"scores must be [rows, cells] or [layers, heads, cells], got {s.shape}")
    s = s.reshape(-1, s.shape[-1])
    if s.shape[0] == 0:
        raise ValueError("scores have no (layer, head) rows to aggregate")
    if rule == "mean":
        return s.mean(axis=0, dtype=np.float64).astype(np.float32)
    if rule == "max":
        return s.max(axis=0)
    if rule == "min":
        return s.min(axis=0)
    raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {rule!r}")
