"""`keydiff`: evict keys most similar (cosine) to the mean key; distinctive keys stay."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_namm.features import cosine_to_mean_direction
from edge_namm.policies.base import CacheView, Policy
from edge_namm.policies.keys import keys_per_head


@dataclass
class KeyDiffPolicy(Policy):
    name = "keydiff"

    def score(self, view: CacheView) -> np.ndarray:
        cosine = cosine_to_mean_direction(keys_per_head(view))  # [L, H, N]
        return -cosine.mean(axis=(0, 1))
