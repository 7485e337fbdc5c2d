"""NAMM features: the vector and its normalisation (``vector``, numpy only) and the streaming
STFT + EMA of attention per cached cell (``state``, in Numba, imported on first use)."""

from __future__ import annotations

from edge_namm._lazy import lazy_attributes

from .vector import (
    GEOMETRY_DIMS,
    STD_FLOOR,
    FeatureConfig,
    NormStats,
    age_embedding,
    cosine_to_mean_direction,
    key_geometry,
    normalise,
    raw_features,
    standardise_rows,
)

__getattr__ = lazy_attributes(
    __name__, {"state": ["AttentionFeatures"], "stft": ["dft_tables", "hann_periodic"]}
)


__all__ = [
    "GEOMETRY_DIMS",
    "STD_FLOOR",
    "AttentionFeatures",
    "FeatureConfig",
    "NormStats",
    "age_embedding",
    "cosine_to_mean_direction",
    "dft_tables",
    "hann_periodic",
    "key_geometry",
    "normalise",
    "raw_features",
    "standardise_rows",
]
