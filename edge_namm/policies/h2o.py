"""`h2o` (Heavy-Hitter Oracle): keep the most-attended tokens plus a recent window."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_namm.policies.base import CacheView, Policy


@dataclass
class H2OPolicy(Policy):
    name = "h2o"
    needs_attention = True
    n_recent: int = 64

    def score(self, view: CacheView) -> np.ndarray:
        return view.per_head(view.features.attention_sum).mean(axis=(0, 1))
