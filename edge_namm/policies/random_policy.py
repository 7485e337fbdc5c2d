"""`random`: evict uniformly at random (the sanity floor every method must beat)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_namm.policies.base import CacheView, Policy


@dataclass
class RandomPolicy(Policy):
    name = "random"

    def score(self, view: CacheView) -> np.ndarray:
        return view.rng.random(view.n)
