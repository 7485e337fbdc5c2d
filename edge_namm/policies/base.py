"""The policy interface: what a KV eviction policy sees at an update and what it returns."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from edge_namm.policies.selection import select_evictions

if TYPE_CHECKING:
    from edge_namm.features import AttentionFeatures

#: What the engine asks before a repeat pass (KVzip): the tokens to repeat follow, teacher-forced.
REPEAT_PROMPT = "\n\nRepeat the previous context exactly.\n"


@dataclass
class CacheView:
    """The engine's view of the cache at one update, tokens in chronological order.

    Attention-derived state lives in `features`, indexed by physical cell: index it with
    `cells` to line it up with `positions`.
    """

    cells: np.ndarray  # physical KV cell of each cached token, oldest first
    positions: np.ndarray  # token position of each cached token
    budget: int  # how many cells may stay after this update
    n_head_kv: int
    features: AttentionFeatures | None = None
    read_keys: Callable[[], np.ndarray] | None = None  # -> [n_layer, n, n_embd_k] float32
    read_values: Callable[[], np.ndarray] | None = None  # -> [n_layer, n, n_embd_v] float32
    rng: np.random.Generator = field(default_factory=np.random.default_rng)
    repeat_scores: np.ndarray | None = None  # per cell, from a repeat pass (needs_repeat)

    @property
    def n(self) -> int:
        return len(self.cells)

    @property
    def newest_position(self) -> int:
        return int(self.positions[-1])

    def keys(self) -> np.ndarray:
        """Cached keys (after RoPE) of these tokens, [n_layer, n, n_embd_k]."""
        if self.read_keys is None:
            raise RuntimeError("this engine does not expose keys")
        return self.read_keys()

    def values(self) -> np.ndarray:
        """Cached values of these tokens, [n_layer, n, n_embd_v]."""
        if self.read_values is None:
            raise RuntimeError("this engine does not expose values")
        return self.read_values()

    def per_head(self, cell_state: np.ndarray) -> np.ndarray:
        """Select these tokens from a per-cell array [L, H, n_cells, ...] -> [L, H, n, ...]."""
        return cell_state[:, :, self.cells]


@dataclass
class Policy:
    """Scores cached tokens; the engine's selection turns scores into evictions.

    Higher score = more worth keeping. `score` returns one value per token of the view, or
    None to keep everything. Policies that set `evicts_negative` also drop every token whose
    score is below zero, even under budget (the NAMM paper's rule).
    """

    name: ClassVar[str] = "base"
    needs_attention: ClassVar[bool] = False
    needs_repeat: ClassVar[bool] = False  # the engine runs a context-repeat pass before updates
    repeat_prompt: ClassVar[str] = REPEAT_PROMPT
    uses_scorer: ClassVar[bool] = False  # takes a scorer file (make_policy, eval, CLI read this)
    evicts_negative: ClassVar[bool] = False
    n_sink: int = 0  # oldest tokens that are never evicted
    n_recent: int = 0  # newest tokens that are never evicted (the newest one always is)

    @property
    def feature_config(self) -> dict | None:
        """The feature constants this policy's scores were trained with (None: the defaults)."""
        return None

    @property
    def n_protected(self) -> int:
        return self.n_sink + max(self.n_recent, 1)

    def score(self, view: CacheView) -> np.ndarray | None:
        raise NotImplementedError

    def evictions(
        self, scores: np.ndarray | None, budget: int, protect_recent: int = 0
    ) -> np.ndarray:
        """Which tokens go under this policy's rules (its sinks, recent window and negative-
        score rule, plus `protect_recent` newest tokens): indices into the chronological view."""
        return select_evictions(
            scores,
            budget,
            evict_negative=self.evicts_negative,
            n_sink=self.n_sink,
            n_recent=max(self.n_recent, protect_recent),
        )
