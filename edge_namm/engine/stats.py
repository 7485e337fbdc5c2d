"""Counters the engine keeps so users can see what memory management costs and saves."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class MemoryStats:
    budget: int = 0  # cells that may stay after an update
    n_cells: int = 0  # physical KV cells allocated (budget + one update interval, padded)
    bytes_per_cell: int = 0  # K+V bytes of one cell over all layers
    cells_used: int = 0
    max_cells_after_update: int = 0
    tokens_seen: int = 0
    tokens_evicted: int = 0
    updates: int = 0
    renumberings: int = 0  # re-positioning passes (reposition=True)
    seconds_llama: float = 0.0  # inside llama_decode
    seconds_namm: float = 0.0  # folding attention, scoring, evicting
    # cold tier (recall=True)
    cold_tokens: int = 0  # evicted tokens held in the cold store
    cold_bytes: int = 0  # bytes they take there (RAM, or disk with cold_dir)
    cold_on_disk: bool = False
    tokens_recalled: int = 0  # cold tokens brought back into the hot cache
    tokens_forgotten: int = 0  # cold tokens dropped for good (cold_budget)
    recalls: int = 0
    # wall time of recalls: a breakdown, not a third bucket; its scoring and swaps are also in
    # seconds_namm and its window re-decode in seconds_llama
    seconds_recall: float = 0.0

    @property
    def kv_bytes_in_use(self) -> int:
        return self.cells_used * self.bytes_per_cell

    @property
    def kv_bytes_allocated(self) -> int:
        return self.n_cells * self.bytes_per_cell

    @property
    def kv_bytes_full_cache(self) -> int:
        """What a cache holding every token seen would need."""
        return self.tokens_seen * self.bytes_per_cell

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(
            kv_bytes_in_use=self.kv_bytes_in_use,
            kv_bytes_allocated=self.kv_bytes_allocated,
            kv_bytes_full_cache=self.kv_bytes_full_cache,
        )
        return d

    def status_line(self) -> str:
        mib = 1 << 20
        return (
            f"[kv {self.cells_used} cells (budget {self.budget} after each update, at most "
            f"{self.max_cells_after_update} so far; {self.n_cells} allocated), "
            f"{self.kv_bytes_in_use / mib:.1f} MiB"
            f" (full cache {self.kv_bytes_full_cache / mib:.1f} MiB) | seen {self.tokens_seen}"
            f" evicted {self.tokens_evicted}{self._cold_part()} | namm {self.seconds_namm:.2f}s"
            f" llama {self.seconds_llama:.2f}s]"
        )

    def _cold_part(self) -> str:
        if not (self.cold_tokens or self.recalls):
            return ""
        where = "disk" if self.cold_on_disk else "RAM"
        return (
            f" | cold {self.cold_tokens} tok, {self.cold_bytes / (1 << 20):.1f} MiB {where},"
            f" recalled {self.tokens_recalled}"
        )
