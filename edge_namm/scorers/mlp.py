"""Per-cell MLP scorers (docs/DESIGN.md §1.3): no interaction between cells, O(N) and cheap.

``mlp``: linear F -> 1 (the reference default, 26 params at F = 25 input dims).
``mlp2``: h = z + relu(z @ W1 + b1) (F -> F, residual), score = h @ W2 + b2 (676 params at 25).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np

from .base import N_FEATURES, Scorer


def two_layer_n_params(n_features: int) -> int:
    return (n_features + 1) ** 2  # W1, b1, W2, b2


LINEAR_N_PARAMS = N_FEATURES + 1  # 26
TWO_LAYER_N_PARAMS = two_layer_n_params(N_FEATURES)  # 676


def unpack_linear(params: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Flat layout: W (F), b (1)."""
    f = len(params) - 1
    return params[:f].reshape(f, 1), params[f:]


def unpack_two_layer(params: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flat layout: W1 (FxF [in,out] row-major), b1 (F), W2 (Fx1), b2 (1)."""
    f = math.isqrt(len(params)) - 1  # (F + 1) ** 2 parameters
    w1 = params[: f * f].reshape(f, f)
    b1 = params[f * f : f * f + f]
    w2 = params[f * f + f : f * f + 2 * f].reshape(f, 1)
    b2 = params[f * f + 2 * f :]
    return w1, b1, w2, b2


class LinearScorer(Scorer):
    """Linear 25 -> 1 per cell."""

    type_name: ClassVar[str] = "mlp"

    @classmethod
    def param_count(cls, n_features: int) -> int:
        return n_features + 1

    @classmethod
    def _widen(cls, params: np.ndarray, n_features: int, extra: int) -> np.ndarray:
        w, b = unpack_linear(params)
        return np.concatenate([w.ravel(), np.zeros(extra), b])

    def _score_normalized(self, z: np.ndarray) -> np.ndarray:
        w, b = unpack_linear(self.params)
        return (z @ w)[..., 0] + b[0]


class TwoLayerScorer(Scorer):
    """25 -> 25 ReLU with residual, then 25 -> 1, per cell."""

    type_name: ClassVar[str] = "mlp2"

    @classmethod
    def param_count(cls, n_features: int) -> int:
        return two_layer_n_params(n_features)

    @classmethod
    def _widen(cls, params: np.ndarray, n_features: int, extra: int) -> np.ndarray:
        w1, b1, w2, b2 = unpack_two_layer(params)
        return np.concatenate(
            [
                np.pad(w1, ((0, extra), (0, extra))).ravel(),
                np.pad(b1, (0, extra)),
                np.pad(w2, ((0, extra), (0, 0))).ravel(),
                b2,
            ]
        )

    def _score_normalized(self, z: np.ndarray) -> np.ndarray:
        w1, b1, w2, b2 = unpack_two_layer(self.params)
        h = z + np.maximum(z @ w1 + b1, np.float32(0.0))
        return (h @ w2)[..., 0] + b2[0]
