"""`snapkv`: score by the attention of the last `window` queries, max-pooled over neighbours.

The paper applies it once after the prompt; here it runs at every update, with the most recent
`window` queries as the observation window (they are also protected).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import maximum_filter1d

from edge_namm.policies.base import CacheView, Policy


@dataclass
class SnapKVPolicy(Policy):
    name = "snapkv"
    needs_attention = True
    window: int = 32
    kernel: int = 7
    n_recent: int = 32

    def score(self, view: CacheView) -> np.ndarray:
        observed = view.per_head(view.features.recent(self.window)).mean(axis=-1)  # [L, H, N]
        pooled = maximum_filter1d(observed, size=self.kernel, axis=-1, mode="nearest")
        return pooled.mean(axis=(0, 1))
