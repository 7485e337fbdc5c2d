"""`tova` (Token Omission Via Attention): drop what the newest query attends to least."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_namm.policies.base import CacheView, Policy


@dataclass
class TovaPolicy(Policy):
    name = "tova"
    needs_attention = True

    def score(self, view: CacheView) -> np.ndarray:
        return view.per_head(view.features.last_row).mean(axis=(0, 1))
