"""Random scorers and raw features shared by the scorer and ONNX tests."""

from __future__ import annotations

import numpy as np

from edge_namm.scorers import SCORERS, Scorer


def random_scorer(type_name: str, seed: int = 0, scale: float = 0.3, **kw) -> Scorer:
    rng = np.random.default_rng(seed)
    cls = SCORERS[type_name]
    return cls(
        rng.normal(0.0, scale, cls.n_params),
        rng.normal(0.5, 1.0, 17),
        rng.uniform(0.5, 2.0, 17),
        **kw,
    )


def raw_features(r: int, n: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).normal(0.0, 1.5, (r, n, 25)).astype(np.float32)
