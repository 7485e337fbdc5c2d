"""Search subspaces: CMA-ES over a few coordinates of a large scorer, the others held fixed.

Why: from a good start, CMA-ES in BAM's 4,172 dimensions with a population of 16 takes mostly
random steps (docs/TRAINING.md measured every candidate worse than its start). A subspace of a
few dozen coordinates that each mean something lets the same budget of candidates make
progress, while the deployed scorer is still a plain BAM file that any BAM runtime reads.

``bam-diagonal`` wires BAM so that its attention is over the *age* of cells and its values are
the cells' own features, then searches only diagonals:

- ``W_k`` is fixed to the identity on the 8 age dims and ``W_q``'s age diagonal is free, so
  ``q_i . k_j = sum_d s_d e_d(age_i) e_d(age_j)`` over the sinusoidal age embedding ``e``.
  Equal weights on a sin/cos pair give ``s cos(w (age_i - age_j))``, a kernel of the age
  difference, so this is a learnt preference over which newer cells a cell attends to (all
  zero: uniform over every newer cell).
- ``W_v`` is fixed to the identity on the 25 features, so the attention output is a weighted
  mean of the newer cells' features ("what came after this token").
- The free diagonals of ``W_o`` turn that mean into a per-feature residual and a per-feature
  multiplicative gate; the score head ``W_s``, ``b_s`` is free.

That is 8 + 25 + 25 + 26 = 84 coordinates (93 for a BAM that also reads key geometry, 28
input dims). With the free diagonals of ``W_o`` at zero the
residual and the gates vanish, so a linear scorer's start is kept exactly.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_namm.scorers.bam import D_ATTN, bam_n_params, bam_width, unpack_bam
from edge_namm.scorers.base import AGE_DIMS


@dataclass(frozen=True)
class Subspace:
    """``x = offset`` except at ``free``, where ``x[free] = theta``."""

    name: str
    offset: np.ndarray
    free: np.ndarray

    @property
    def dims(self) -> int:
        return int(self.free.size)

    def embed(self, theta: np.ndarray) -> np.ndarray:
        """The full parameter vector of a point of the subspace."""
        x = self.offset.copy()
        x[self.free] = np.asarray(theta, dtype=np.float64)
        return x

    def project(self, x: np.ndarray) -> np.ndarray:
        """The subspace coordinates of a full vector (its free entries)."""
        return np.asarray(x, dtype=np.float64)[self.free].copy()


def bam_diagonal(start: np.ndarray) -> Subspace:
    """The ``bam-diagonal`` subspace around ``start`` (a linear scorer as a BAM, or a point of
    this subspace); ValueError for a BAM that uses weights outside it."""
    start = np.asarray(start, dtype=np.float64).reshape(-1)
    try:
        n_features = bam_width(start.size)
    except ValueError:
        raise ValueError(f"a BAM has {bam_n_params()} parameters, got {start.size}") from None
    size = start.size
    at = unpack_bam(np.arange(size))  # flat index of every named weight
    age, feat = np.arange(AGE_DIMS), np.arange(n_features)
    wiring = np.concatenate(
        [at["W_qkv"][age, D_ATTN + age], at["W_qkv"][feat, 2 * D_ATTN + feat]]  # k: age, v: z
    )
    free_idx = np.concatenate(
        [
            at["W_qkv"][age, age],  # q: age kernel weights
            at["W_o"][feat, feat],  # residual per feature
            at["W_o"][feat, n_features + feat],  # gate per feature
            at["W_s"].ravel(),
            at["b_s"],
        ]
    )
    outside = np.ones(size, bool)
    outside[free_idx] = False
    outside[wiring] = False
    wired = start[wiring]
    mixing = start[free_idx[AGE_DIMS : AGE_DIMS + 2 * n_features]]  # W_o diagonals
    # wiring a start changes its scores unless it is wired already or its W_o is still zero
    wiring_ok = np.all(wired == 1) or (np.all(wired == 0) and not np.any(mixing != 0))
    if np.any(start[outside] != 0) or not wiring_ok:
        raise ValueError(
            "bam-diagonal needs a start inside it (a linear 'mlp' scorer or a bam-diagonal "
            "BAM); this BAM uses other weights: train it with --subspace full"
        )
    offset = start.copy()
    offset[wiring] = 1.0
    return Subspace("bam-diagonal", offset, free_idx)


SUBSPACES: dict[str, Callable[[np.ndarray], Subspace]] = {"bam-diagonal": bam_diagonal}
"""Named subspaces (``--subspace``); "full" means none."""
