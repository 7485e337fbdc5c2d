"""`namm`: a Neural Attention Memory Model scores each token from its attention spectrogram."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_namm.features import key_geometry, raw_features
from edge_namm.policies.base import CacheView, Policy
from edge_namm.scorers import aggregate


@dataclass
class NammPolicy(Policy):
    """Scores every (layer, KV head, token), then aggregates to one score per token.

    `scorer` is a numpy or ONNX Runtime scorer (anything with `score(x[R, N, F])`,
    `feature_config` and `aggregation`). Scores below zero evict, as in the paper. A scorer
    whose feature config has `geometry` also reads every cached key and value at each update.
    """

    name = "namm"
    needs_attention = True
    evicts_negative = True
    uses_scorer = True
    scorer: Any = None

    @property
    def feature_config(self) -> dict | None:
        return getattr(self.scorer, "feature_config", None)

    @property
    def needs_repeat(self) -> bool:  # type: ignore[override]
        """A scorer trained on features with the repeat pass folded in needs that pass."""
        return bool((self.feature_config or {}).get("repeat", False))

    def score(self, view: CacheView) -> np.ndarray:
        spec = view.per_head(view.features.spectrogram)  # [L, H, N, bins]
        n_layer, n_head, n, n_bins = spec.shape
        ages = view.newest_position - view.positions
        config = view.features.config  # the scorer's (the engine builds the state from it)
        geometry = None
        if config.geometry:
            geometry = key_geometry(view.keys(), view.values(), view.n_head_kv)
        x = raw_features(spec.reshape(n_layer * n_head, n, n_bins), ages, config, geometry)
        return self.token_scores(x)

    def token_scores(self, x: np.ndarray) -> np.ndarray:
        """One score per token from feature vectors [rows, N, n_features] (training's
        simulator calls this too)."""
        return aggregate(self.scorer.score(x), self.scorer.aggregation)
