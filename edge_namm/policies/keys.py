"""Helpers for the policies that judge tokens by their cached keys (no attention needed)."""

from __future__ import annotations

import numpy as np

from edge_namm.policies.base import CacheView


def keys_per_head(view: CacheView) -> np.ndarray:
    """Keys as [n_layer, n_head_kv, n_tokens, head_dim]."""
    keys = view.keys()  # [L, N, H * d]
    n_layer, n, width = keys.shape
    return keys.reshape(n_layer, n, view.n_head_kv, width // view.n_head_kv).transpose(0, 2, 1, 3)
