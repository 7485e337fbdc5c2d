"""`l2` (KNorm): keep keys with the lowest L2 norm, which tend to draw the most attention."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_namm.policies.base import CacheView, Policy
from edge_namm.policies.keys import keys_per_head


@dataclass
class L2NormPolicy(Policy):
    name = "l2"

    def score(self, view: CacheView) -> np.ndarray:
        return -np.linalg.norm(keys_per_head(view), axis=-1).mean(axis=(0, 1))
