"""KV budgets: parsing a budget, resolving it to cells, and the cell counts derived from it.

Budgets are cells (``"1024"``) or fractions of each sample's input (``"0.25"``, ``"25%"``), or
``"none"``. The eval runner and the trainer both go through here, so a budget means the same
number of cells in training as in evaluation.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

NO_BUDGET = "none"
CELL_QUANTUM = 16  # fraction budgets are rounded to this many cells
FULL_QUANTUM = 256  # full-cache engines are sized up to a multiple of this (engine reuse)


@dataclass(frozen=True)
class Budget:
    """A memory budget: a fixed number of cells, a fraction of each sample's input, or none.

    ``none`` (neither set) puts no cap on the cache: only a policy's own rule evicts (the NAMM
    paper's score < 0), which shows how much memory that rule alone keeps.
    """

    cells: int | None = None
    fraction: float | None = None

    @property
    def unbounded(self) -> bool:
        return self.cells is None and self.fraction is None

    @property
    def label(self) -> str:
        if self.fraction is not None:
            return f"{self.fraction * 100:g}%"
        return NO_BUDGET if self.unbounded else str(self.cells)

    def resolve(self, n_input: int) -> int:
        """Cells for a sample whose prompt has ``n_input`` tokens (unbounded: all of them).

        A fraction is rounded to a multiple of ``CELL_QUANTUM`` (at least one), so samples of
        nearly the same length share one engine.
        """
        if self.cells is not None:
            return self.cells
        if self.fraction is None:
            return n_input
        cells = round(self.fraction * n_input / CELL_QUANTUM) * CELL_QUANTUM
        return max(CELL_QUANTUM, int(cells))


def parse_budget(spec: str | int | float) -> Budget:
    """``"1024"`` / ``1024`` -> cells; ``"0.25"`` / ``0.25`` / ``"25%"`` -> fraction of input;
    ``"none"`` -> no cap (only a policy's own rule evicts)."""
    text = str(spec).strip()
    if text.lower() == NO_BUDGET:
        return Budget()
    try:
        if text.endswith("%"):
            fraction = float(text[:-1]) / 100
        elif isinstance(spec, float) or "." in text or "e" in text.lower():
            fraction = float(text)
        else:
            cells = int(text)
            if cells <= 0:
                raise ValueError
            return Budget(cells=cells)
    except ValueError:
        raise ValueError(
            f"bad budget {spec!r}: give cells (e.g. 1024), a fraction of the input "
            "(e.g. 0.25 or 25%) or 'none' (no cap: only the policy's own rule evicts)"
        ) from None
    if not fraction > 0 or math.isinf(fraction):
        raise ValueError(f"bad budget {spec!r}: a fraction must be > 0")
    return Budget(fraction=fraction)


def parse_budgets(specs: str | Iterable[str | int | float]) -> list[Budget]:
    """Budgets of a comma list or an iterable, duplicates (``0.25`` and ``25%``) dropped."""
    items = comma_list(specs)
    if not items:
        raise ValueError("no budgets given")
    out: list[Budget] = []
    for item in items:
        b = parse_budget(item)
        if b not in out:
            out.append(b)
    return out


def comma_list(value: str | Iterable[Any]) -> list[str]:
    """``"a, b,,c"`` or ``["a", " b", "c"]`` -> ``["a", "b", "c"]`` (empty items dropped)."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v).strip() for v in value if str(v).strip()]


def full_cache_cells(n_tokens: int) -> int:
    """Cache size of an engine that evicts nothing: ``n_tokens`` rounded up to a multiple of
    ``FULL_QUANTUM``, so that samples of similar length share one engine."""
    return -(-n_tokens // FULL_QUANTUM) * FULL_QUANTUM


def min_budget_cells(chunk: int, n_protected: int) -> int:
    """The smallest budget a policy can work in: one prompt chunk plus the tokens it never
    evicts (an eviction must leave room for the next chunk)."""
    return chunk + n_protected
