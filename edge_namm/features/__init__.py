"""Streaming NAMM feature extraction (STFT + EMA of attention per cached cell), in Numba."""

from .state import (
    AttentionFeatures,
    FeatureConfig,
    NormStats,
    age_embedding,
    normalise,
    raw_features,
)
from .stft import dft_tables, hann_periodic

__all__ = [
    "AttentionFeatures",
    "FeatureConfig",
    "NormStats",
    "age_embedding",
    "dft_tables",
    "hann_periodic",
    "normalise",
    "raw_features",
]
