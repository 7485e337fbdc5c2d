"""Turns per-token scores into the set of tokens to evict (docs/DESIGN.md §1.4, §3.2)."""

from __future__ import annotations

import numpy as np


def protected_mask(n: int, n_sink: int, n_recent: int) -> np.ndarray:
    """Tokens that may never go: the first n_sink, the last n_recent and always the newest."""
    mask = np.zeros(n, dtype=bool)
    mask[: min(n_sink, n)] = True
    mask[max(n - max(n_recent, 1), 0) :] = True
    return mask


def select_evictions(
    scores: np.ndarray | None,
    budget: int,
    *,
    evict_negative: bool = False,
    n_sink: int = 0,
    n_recent: int = 0,
) -> np.ndarray:
    """Indices (into the chronological view) of the tokens to evict.

    First the paper's rule (score < 0 goes) when `evict_negative`, then the hard budget: the
    lowest-scored unprotected tokens go until at most `budget` remain. Ties evict older first.
    """
    if scores is None:
        return np.empty(0, dtype=np.int64)
    scores = np.asarray(scores, dtype=np.float64)
    n = len(scores)
    keep_fixed = protected_mask(n, n_sink, n_recent)
    if int(keep_fixed.sum()) > budget:
        raise ValueError(
            f"budget of {budget} cells is smaller than the {int(keep_fixed.sum())} protected tokens"
        )
    evict = np.zeros(n, dtype=bool)
    if evict_negative:
        evict |= (scores < 0) & ~keep_fixed
    excess = n - int(evict.sum()) - budget
    if excess > 0:
        candidates = np.flatnonzero(~evict & ~keep_fixed)
        order = np.argsort(scores[candidates], kind="stable")
        evict[candidates[order[:excess]]] = True
    return np.flatnonzero(evict)
