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
    seconds_llama: float = 0.0  # inside llama_decode
    seconds_namm: float = 0.0  # folding attention, scoring, evicting

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
            f"[kv {self.cells_used}/{self.budget} cells, {self.kv_bytes_in_use / mib:.1f} MiB"
            f" (full cache {self.kv_bytes_full_cache / mib:.1f} MiB) | seen {self.tokens_seen}"
            f" evicted {self.tokens_evicted} | namm {self.seconds_namm:.2f}s"
            f" llama {self.seconds_llama:.2f}s]"
        )
