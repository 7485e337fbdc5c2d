"""Evolving NAMM scorers with CMA-ES (`edge-namm train`, docs/TRAINING.md)."""

from edge_namm.train.normstats import estimate_norm_stats
from edge_namm.train.trainer import (
    PAPER_ELITES,
    PAPER_POPULATION,
    PAPER_SIGMA,
    TrainConfig,
    TrainConfigError,
    Trainer,
)

__all__ = [
    "PAPER_ELITES",
    "PAPER_POPULATION",
    "PAPER_SIGMA",
    "TrainConfig",
    "TrainConfigError",
    "Trainer",
    "estimate_norm_stats",
]
