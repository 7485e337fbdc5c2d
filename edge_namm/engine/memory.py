"""KVMemory: folds captured attention into NAMM features and evicts cells at each update.

It knows nothing about llama-cpp-python's high-level bookkeeping; NammLlama drives it around
every llama_decode (`before_decode`, `after_decode`, `update`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from edge_namm import native
from edge_namm.engine.stats import MemoryStats
from edge_namm.features import AttentionFeatures, FeatureConfig
from edge_namm.policies.base import CacheView, Policy
from edge_namm.policies.selection import select_evictions


class KVMemory:
    def __init__(
        self,
        ctx: int,
        policy: Policy,
        *,
        budget: int,
        max_queries: int,
        n_embd_k: int,
        bytes_per_cell: int,
        feature_config: FeatureConfig | None = None,
        record_attention: bool = True,
        seed: int = 0,
    ) -> None:
        self.ctx = ctx
        self.policy = policy
        self.budget = budget
        self.n_embd_k = n_embd_k
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self.capture = native.AttentionCapture(ctx, max_queries)
        self.n_layer = self.capture.n_layer
        self.n_head_kv = self.capture.n_head_kv
        self.n_cells = self.capture.n_cells
        self.features = AttentionFeatures(
            self.n_layer, self.n_head_kv, self.n_cells, feature_config or FeatureConfig()
        )
        if record_attention:
            self.capture.arm()
        self._positions = np.full(self.n_cells, -1, dtype=np.int32)  # physical, per cell
        self._logical = np.full(self.n_cells, -1, dtype=np.int64)  # logical, per cell
        self.stats = MemoryStats(budget=budget, n_cells=self.n_cells, bytes_per_cell=bytes_per_cell)
        self.on_update: list[
            Callable[[CacheView, np.ndarray], None]
        ] = []  # observers (tests, eval)

    # --- around llama_decode -------------------------------------------------------------
    def free_cells(self) -> int:
        return int((self._positions < 0).sum())

    def occupied(self) -> np.ndarray:
        """Cells holding a token."""
        return np.flatnonzero(self._positions >= 0)

    def kept_logical(self) -> np.ndarray:
        """Logical positions of the cached tokens, oldest first."""
        return np.sort(self._logical[self._positions >= 0])

    def positions_moved(self) -> None:
        """Cells were renumbered in place (same tokens): keep their state, take new positions."""
        self._positions = native.cell_positions(self.ctx)

    def before_decode(self) -> None:
        """Forget feature state of cells emptied behind our back (prefix reuse, reset, an
        interrupted decode) and drop attention rows no one folded."""
        self.capture.clear()
        now = native.cell_positions(self.ctx)
        stale = np.flatnonzero((self._positions >= 0) & (now != self._positions))
        if len(stale):
            self.features.reset_cells(stale)
        self._positions = now

    def after_decode(self, n_new: int, shift: int = 0) -> None:
        """Fold the new attention rows; `shift` = logical - physical position of new tokens."""
        t0 = time.perf_counter()
        if self.capture.armed:
            self.features.fold(self.capture.rows())
            self.capture.clear()
        now = native.cell_positions(self.ctx)
        filled = (now >= 0) & (now != self._positions)
        self._logical[filled] = now[filled] + shift
        self._logical[now < 0] = -1
        self._positions = now
        self.stats.tokens_seen += n_new
        self.stats.cells_used = int((self._positions >= 0).sum())
        self.stats.seconds_namm += time.perf_counter() - t0

    # --- eviction ------------------------------------------------------------------------
    def view(self) -> CacheView:
        cells = np.flatnonzero(self._positions >= 0)
        cells = cells[np.argsort(self._positions[cells], kind="stable")]
        return CacheView(
            cells=cells,
            positions=self._positions[cells].astype(np.int64),
            budget=self.budget,
            n_head_kv=self.n_head_kv,
            features=self.features,
            read_keys=lambda: self.read_keys(cells),
            rng=self.rng,
        )

    def read_keys(self, cells: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                native.read_keys(self.ctx, il, self.n_cells, self.n_embd_k)[cells]
                for il in self.capture.layers
            ]
        )

    def update(self) -> int:
        """Score the cache, evict, and return how many tokens went."""
        t0 = time.perf_counter()
        view = self.view()
        scores = self.policy.score(view) if view.n else None
        evict = select_evictions(
            scores,
            self.budget,
            evict_negative=self.policy.evicts_negative,
            n_sink=self.policy.n_sink,
            n_recent=self.policy.n_recent,
        )
        if len(evict):
            native.remove_positions(self.ctx, view.positions[evict])
            self.features.reset_cells(view.cells[evict])
            self._positions[view.cells[evict]] = -1
            self._logical[view.cells[evict]] = -1
        for observer in self.on_update:
            observer(view, evict)
        kept = view.n - len(evict)
        st = self.stats
        st.updates += 1
        st.tokens_evicted += len(evict)
        st.cells_used = kept
        st.max_cells_after_update = max(st.max_cells_after_update, kept)
        st.seconds_namm += time.perf_counter() - t0
        return len(evict)

    def reset(self) -> None:
        self.features.reset()
        self.capture.clear()
        self._positions[:] = -1
        self._logical[:] = -1
        self.rng = np.random.default_rng(self.seed)

    def state_dict(self) -> dict:
        return {
            "features": self.features.state_dict(),
            "positions": self._positions.copy(),
            "logical": self._logical.copy(),
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state: dict) -> None:
        self.features.load_state_dict(state["features"])
        self._positions = state["positions"].copy()
        self._logical = state["logical"].copy()
        self.rng.bit_generator.state = state["rng"]

    def close(self) -> None:
        self.capture.close()
