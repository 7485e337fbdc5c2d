"""Scorer type registry: the ``type`` string of a scorer file -> its numpy class.

- ``bam``: full backward-attention BAM (4,172 params, O(N^2) per row).
- ``bam-window``: BAM with the backward mask cut to ``window`` newer cells (same params).
- ``mlp``: linear 25 -> 1 per cell (26 params).
- ``mlp2``: 25 -> 25 ReLU + residual -> 1 per cell (676 params).
"""

from __future__ import annotations

from typing import Any

from .bam import BAMScorer, BAMWindowScorer
from .base import Scorer
from .mlp import LinearScorer, TwoLayerScorer

SCORERS: dict[str, type[Scorer]] = {
    "bam": BAMScorer,
    "bam-window": BAMWindowScorer,
    "mlp": LinearScorer,
    "mlp2": TwoLayerScorer,
}


def scorer_class(type_name: str) -> type[Scorer]:
    """Look up a scorer type, raising KeyError that lists the valid names."""
    try:
        return SCORERS[type_name]
    except (KeyError, TypeError):
        valid = ", ".join(SCORERS)
        raise KeyError(f"unknown scorer type {type_name!r} (valid: {valid})") from None


def zero_scorer(type_name: str, **kwargs: Any) -> Scorer:
    """All-zero parameters (every score exactly 0: nothing evicted), mean 0 / std 1 norm.

    This is the CMA-ES starting point; ``kwargs`` go to the constructor (options=, ...).
    """
    return scorer_class(type_name)(None, None, None, **kwargs)
