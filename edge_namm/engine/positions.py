"""Optional re-positioning: keep RoPE positions below the model's trained context.

By default survivors keep their absolute positions, so after N tokens the newest position is N
whatever the budget; past the model's trained context (n_ctx_train) RoPE extrapolates and
quality drops. With re-positioning, once the next position would pass a limit, the survivors
are renumbered 0..k-1 in order (llama_memory_seq_add re-rotates their keys) and new tokens
continue at k. The logical history (input_ids, n_tokens) is untouched; `PositionMap` translates
between logical and physical positions for the tokens added since the last renumbering.
"""

from __future__ import annotations

from typing import Any

import numpy as np


class PositionMap:
    """logical position -> physical position, exact for tokens after the last renumbering."""

    def __init__(self) -> None:
        self.shift = 0  # logical - physical, for tokens after `exact_from`
        self.exact_from = 0  # first logical position added after the last renumbering

    def physical(self, logical: int) -> int | None:
        """The physical position, or None when that token was renumbered (no exact mapping)."""
        if logical < self.exact_from:
            return None
        return logical - self.shift

    def reset(self) -> None:
        self.shift = 0
        self.exact_from = 0


def renumber(ctx: Any, kept_physical: np.ndarray, seq_id: int = 0) -> int:
    """Shift runs of consecutive survivors down so positions become 0..k-1; returns k."""
    kept = np.sort(kept_physical)
    if len(kept) == 0:
        return 0
    breaks = np.flatnonzero(np.diff(kept) != 1) + 1
    starts = np.r_[0, breaks]
    ends = np.r_[breaks, len(kept)]
    for start, end in zip(starts, ends, strict=True):  # ascending: targets never collide
        p0, p1 = int(kept[start]), int(kept[end - 1]) + 1
        delta = int(start) - p0
        if delta:
            ctx.kv_cache_seq_shift(seq_id, p0, p1, delta)
    return len(kept)


class LogicalPositionContext:
    """Wraps llama-cpp-python's LlamaContext so that callers using logical positions (its
    prefix-reuse in `generate`) remove the right cells; everything else passes through."""

    def __init__(self, inner: Any, positions: PositionMap) -> None:
        self._inner = inner
        self._positions = positions

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def kv_cache_seq_rm(self, seq_id: int, p0: int, p1: int) -> bool:
        start = self._positions.physical(p0) if p0 >= 0 else p0
        if start is None:
            return False  # tells Llama.generate to re-evaluate instead of reusing a prefix
        end = p1 if p1 < 0 else self._positions.physical(p1)
        return self._inner.kv_cache_seq_rm(seq_id, start, -1 if end is None else end)
