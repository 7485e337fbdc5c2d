"""Per-cell MLP scorers (docs/DESIGN.md §1.3): no interaction between cells, O(N) and cheap.

``mlp``: linear 25 -> 1 (the reference default, 26 params).
``mlp2``: h = z + relu(z @ W1 + b1) (25 -> 25, residual), score = h @ W2 + b2 (676 params).
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from .base import N_FEATURES, Scorer

LINEAR_N_PARAMS = N_FEATURES + 1  # 26
TWO_LAYER_N_PARAMS = N_FEATURES * N_FEATURES + N_FEATURES + N_FEATURES + 1  # 676


def unpack_linear(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat layout: W (25), b (1)."""
    return params[:N_FEATURES].reshape(N_FEATURES, 1), params[N_FEATURES:]


def unpack_two_layer(params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flat layout: W1 (25x25 [in,out] row-major), b1 (25), W2 (25x1), b2 (1)."""
    f = N_FEATURES
    w1 = params[: f * f].reshape(f, f)
    b1 = params[f * f : f * f + f]
    w2 = params[f * f + f : f * f + 2 * f].reshape(f, 1)
    b2 = params[f * f + 2 * f :]
    return w1, b1, w2, b2


class LinearScorer(Scorer):
    """Linear 25 -> 1 per cell."""

    type_name: ClassVar[str] = "mlp"
    n_params: ClassVar[int] = LINEAR_N_PARAMS

    def _score_normalized(self, z: np.ndarray) -> np.ndarray:
        w, b = unpack_linear(self.params)
        return (z @ w)[..., 0] + b[0]


class TwoLayerScorer(Scorer):
    """25 -> 25 ReLU with residual, then 25 -> 1, per cell."""

    type_name: ClassVar[str] = "mlp2"
    n_params: ClassVar[int] = TWO_LAYER_N_PARAMS

    def _score_normalized(self, z: np.ndarray) -> np.ndarray:
        w1, b1, w2, b2 = unpack_two_layer(self.params)
        h = z + np.maximum(z @ w1 + b1, np.float32(0.0))
        return (h @ w2)[..., 0] + b2[0]
