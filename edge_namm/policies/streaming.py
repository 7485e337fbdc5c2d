"""`streaming` (StreamingLLM): keep a few attention-sink tokens and the most recent ones."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edge_namm.policies.base import CacheView, Policy


@dataclass
class StreamingPolicy(Policy):
    name = "streaming"
    n_sink: int = 4

    def score(self, view: CacheView) -> np.ndarray:
        return view.positions.astype(np.float64)  # newer is better; sinks are protected
