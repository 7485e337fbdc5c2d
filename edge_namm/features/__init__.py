"""NAMM features: the vector and its normalisation (``vector``, numpy only) and the streaming
STFT + EMA of attention per cached cell (``state``, in Numba, imported on first use)."""

from __future__ import annotations

from typing import Any

from .vector import (
    STD_FLOOR,
    FeatureConfig,
    NormStats,
    age_embedding,
    normalise,
    raw_features,
)

_LAZY = {
    "AttentionFeatures": "state",
    "dft_tables": "stft",
    "hann_periodic": "stft",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "STD_FLOOR",
    "AttentionFeatures",
    "FeatureConfig",
    "NormStats",
    "age_embedding",
    "dft_tables",
    "hann_periodic",
    "normalise",
    "raw_features",
]
