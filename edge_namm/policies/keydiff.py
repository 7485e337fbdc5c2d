"""`keydiff`: evict keys most similar (cosine) to the mean key; distinctive keys stay."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_namm.policies.base import CacheView, Policy
from edge_namm.policies.keys import keys_per_head


@dataclass
class KeyDiffPolicy(Policy):
    name = "keydiff"

    def score(self, view: CacheView) -> np.ndarray:
        keys = keys_per_head(view)  # [L, H, N, d]
        unit = keys / np.maximum(np.linalg.norm(keys, axis=-1, keepdims=True), 1e-6)
        anchor = unit.mean(axis=2, keepdims=True)
        anchor /= np.maximum(np.linalg.norm(anchor, axis=-1, keepdims=True), 1e-6)
        cosine = (unit * anchor).sum(axis=-1)  # [L, H, N]
        return -cosine.mean(axis=(0, 1))
