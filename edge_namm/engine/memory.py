"""KVMemory: folds captured attention into NAMM features and evicts cells at each update.

It knows nothing about llama-cpp-python's high-level bookkeeping; NammLlama drives it around
every llama_decode (`before_decode`, `after_decode`, `update`).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from edge_namm import native
from edge_namm.engine.cold import ColdBatch, ColdStore
from edge_namm.engine.heap import release_free_heap
from edge_namm.engine.recall import choose_swaps, pool_tiers, recall_scores
from edge_namm.engine.stats import MemoryStats
from edge_namm.features import AttentionFeatures, FeatureConfig
from edge_namm.policies.base import CacheView, Policy
from edge_namm.policies.selection import protected_mask


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
        self._rows_armed = True  # False while the capture is armed for queries only
        # newest tokens no update may evict (recall re-decodes a prompt's last tokens, which
        # must follow the token before them)
        self.protect_recent = 0
        self.repeat_scores: np.ndarray | None = None  # per cell, set by a repeat pass
        self.cold: ColdStore | None = None
        # (layer, KV head) pairs recall's coarse pass reads (None: all; engine/retrieval_heads.py)
        self.coarse_heads: np.ndarray | None = None
        self._layout: native.CellLayout | None = None  # read on first use (value reads)
        self.token_of: Callable[[np.ndarray], np.ndarray] | None = None
        self.last_recalled = np.empty(0, dtype=np.int64)  # logical positions, last recall

    def enable_cold(
        self,
        token_of: Callable[[np.ndarray], np.ndarray],
        cold_budget: int | None = None,
        cold_dir: str | None = None,
    ) -> None:
        """Keep evicted tokens in a cold store (exact K/V) instead of discarding them.
        `token_of` maps logical positions to token ids (for display and checks)."""
        self.cold = ColdStore(
            native.cell_layout(self.ctx), cold_budget=cold_budget, cold_dir=cold_dir
        )
        self.token_of = token_of

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

    def after_decode(self, n_new: int, shift: int = 0, fold: bool = True) -> None:
        """Fold the new attention rows; `shift` = logical - physical position of new tokens.
        `fold=False` for a re-decode of tokens already seen (recall's window)."""
        t0 = time.perf_counter()
        if self.capture.armed and fold and self._rows_armed:
            self.features.fold(self.capture.rows())
            self.capture.clear()
        now = native.cell_positions(self.ctx)
        filled = (now >= 0) & (now != self._positions)
        self._logical[filled] = now[filled] + shift
        self._logical[now < 0] = -1
        self._positions = now
        if fold:
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
            read_values=lambda: self.read_values(cells),
            rng=self.rng,
            repeat_scores=self.repeat_scores,
        )

    def read_keys(self, cells: np.ndarray) -> np.ndarray:
        return np.stack(
            [
                native.read_keys(self.ctx, il, self.n_cells, self.n_embd_k)[cells]
                for il in self.capture.layers
            ]
        )

    def read_values(self, cells: np.ndarray) -> np.ndarray:
        """Cached values of these cells, float32 [n_layer, n, n_embd_v] (any V layout)."""
        if self._layout is None:
            self._layout = native.cell_layout(self.ctx)
        layout = self._layout
        _, v = native.export_cells(self.ctx, cells, layout)
        return native.to_float(layout.v_type, v, layout.n_embd_v)

    def update(self) -> int:
        """Score the cache, evict, and return how many tokens went."""
        t0 = time.perf_counter()
        view = self.view()
        scores = self.policy.score(view) if view.n else None
        evict = self.policy.evictions(scores, self.budget, self.protect_recent)
        if len(evict):
            self._evict(view, evict, scores)
        for observer in self.on_update:
            observer(view, evict)
        if len(evict):
            # scoring and the move to the cold store allocate tens of MiB for a moment
            release_free_heap()
        kept = view.n - len(evict)
        st = self.stats
        st.updates += 1
        st.tokens_evicted += len(evict)
        st.cells_used = kept
        st.max_cells_after_update = max(st.max_cells_after_update, kept)
        st.seconds_namm += time.perf_counter() - t0
        return len(evict)

    def _evict(self, view: CacheView, evict: np.ndarray, scores: np.ndarray | None) -> None:
        """Remove these tokens of the view from the cache, into the cold store if there is one."""
        cells = view.cells[evict]
        if self.cold is not None:
            layout = self.cold.layout
            k, v = native.export_cells(self.ctx, cells, layout)
            pos = view.positions[evict]
            logical = self._logical[cells]
            score = (
                np.asarray(scores, dtype=np.float32)[evict]
                if scores is not None
                else logical.astype(np.float32)  # no scores: the oldest is forgotten first
            )
            self.cold.add(
                ColdBatch(
                    k=k,
                    v=v,
                    keys=native.to_float(layout.k_type, k, layout.n_embd_k),
                    rot_pos=pos,
                    pos=pos,
                    logical=logical,
                    tokens=self.token_of(logical),
                    score=score,
                )
            )
            self._sync_cold_stats()
        # by cell: after re-positioning a recalled token can share its position with another
        native.remove_cells(self.ctx, cells)
        self.features.reset_cells(cells)
        if self.repeat_scores is not None:
            self.repeat_scores[cells] = 0.0
        self._positions[cells] = -1
        self._logical[cells] = -1

    def _sync_cold_stats(self) -> None:
        st, cold = self.stats, self.cold
        st.cold_tokens = len(cold)
        st.cold_bytes = cold.nbytes
        st.cold_on_disk = cold.on_disk
        st.tokens_forgotten = cold.forgotten

    # --- recall ----------------------------------------------------------------------------
    def capture_queries(self, on: bool) -> None:
        """Also record queries on the next decodes (attention rows stay as the policy needs),
        or go back to rows only."""
        if on:
            self._rows_armed = self.capture.armed
            self.capture.set_modes(rows=self._rows_armed, queries=True)
            if not self.capture.armed:
                self.capture.arm()
        else:
            self.capture.set_modes(rows=True, queries=False)
            if not self._rows_armed:
                self.capture.disarm()
            self._rows_armed = True

    def fold_repeat_rows(self, best: np.ndarray) -> None:
        """A repeat pass's attention: each cell keeps in `best` the most any query gave it."""
        rows = self.capture.rows()
        if rows.shape[2]:
            np.maximum(best, rows.max(axis=(0, 1, 2)), out=best)
        self.capture.clear()

    def set_repeat_scores(self, cells: np.ndarray, scores: np.ndarray) -> None:
        """KVzip scores a chunk's tokens by the repeat of that chunk; they keep that score."""
        if self.repeat_scores is None:
            self.repeat_scores = np.zeros(self.n_cells, dtype=np.float32)
        self.repeat_scores[cells] = scores

    def drop_cold_from(self, logical_start: int) -> None:
        """Forget cold copies of tokens at or after a logical position (they are re-decoded)."""
        if self.cold is not None and len(self.cold):
            stale = np.flatnonzero(self.cold.logical >= logical_start)
            if len(stale):
                self.cold.take(stale)
                self._sync_cold_stats()

    def recall(
        self,
        queries: np.ndarray,
        scales: np.ndarray,
        n_protect_recent: int,
        max_in: int | None = None,
    ) -> int:
        """Swap the cold tokens the queries attend to most (at most `max_in`) for the hot
        tokens they attend to least (the hot cache keeps its size); returns how many came back."""
        t0 = time.perf_counter()
        cold = self.cold
        self.last_recalled = np.empty(0, dtype=np.int64)
        if cold is None or len(cold) == 0:
            return 0
        view = self.view()
        hot_scores, cold_scores = recall_scores(
            queries,
            scales,
            self.read_keys(view.cells),
            cold.keys(),
            self.n_head_kv,
            release=cold.release,
            coarse_heads=self.coarse_heads,
        )
        cold.release()
        protected = protected_mask(
            view.n, self.policy.n_sink, max(self.policy.n_recent, n_protect_recent)
        )
        hot_scores, cold_scores = pool_tiers(
            hot_scores, self._logical[view.cells], cold_scores, cold.logical
        )
        out_hot, in_cold = choose_swaps(hot_scores, cold_scores, protected, max_in)
        n = len(in_cold)
        if n:
            back = cold.take(in_cold)
            self._evict(view, out_hot, hot_scores)
            self._import(back)
        release_free_heap()  # the float32 keys, the gathered candidates, the swapped K/V
        st = self.stats
        st.recalls += 1
        st.tokens_recalled += n
        st.cells_used = int((self._positions >= 0).sum())
        st.seconds_namm += time.perf_counter() - t0
        return n

    def _import(self, back: ColdBatch) -> None:
        cells = native.import_cells(self.ctx, back.pos, back.k, back.v, back.rot_pos)
        self.features.reset_cells(cells)
        self._positions[cells] = back.pos
        self._logical[cells] = back.logical
        self.last_recalled = np.sort(back.logical)
        self._sync_cold_stats()

    def evict_positions(self, positions: np.ndarray) -> int:
        """Evict these physical positions now (into the cold store when recall is on)."""
        view = self.view()
        index = np.flatnonzero(np.isin(view.positions, positions))
        if len(index):
            self._evict(view, index, None)
            self.stats.tokens_evicted += len(index)
            self.stats.cells_used = view.n - len(index)
        return len(index)

    def restore(self, index: np.ndarray | None = None) -> int:
        """Bring these cold entries (default: all) back into free cells, whatever their score;
        the hot cache may then exceed the budget until the next update."""
        if self.cold is None or len(self.cold) == 0:
            return 0
        index = np.arange(len(self.cold)) if index is None else np.asarray(index)
        if len(index) > self.free_cells():
            raise native.NoFreeCellsError(
                f"{len(index)} cold tokens do not fit in the {self.free_cells()} free cells"
            )
        self._import(self.cold.take(index))
        self.stats.tokens_recalled += len(index)
        self.stats.cells_used = int((self._positions >= 0).sum())
        return len(index)

    def cold_positions_renumbered(self, kept_logical: np.ndarray) -> None:
        """Survivors were renumbered 0..k-1: a cold token will come back right after the
        survivor that preceded it (llama.cpp re-rotates its key on import)."""
        if self.cold is not None and len(self.cold):
            before = np.searchsorted(np.sort(kept_logical), self.cold.logical)
            self.cold.pos = np.maximum(before - 1, 0).astype(np.int64)

    def reset_stats(self) -> None:
        """Zero the counters (what a new measurement starts from); sizes are kept."""
        st = self.stats
        self.stats = MemoryStats(
            budget=st.budget, n_cells=st.n_cells, bytes_per_cell=st.bytes_per_cell
        )
        if self.cold is not None:
            self._sync_cold_stats()

    def reset(self) -> None:
        self.features.reset()
        self.repeat_scores = None
        if self.cold is not None:
            self.cold.clear()
            self._sync_cold_stats()
        self.last_recalled = np.empty(0, dtype=np.int64)
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
            "cold": None if self.cold is None else self.cold.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore after llama.cpp restored its cache, which packs the saved cells, in cell
        order, into the first cells: per-cell state moves along."""
        self.features.load_state_dict(state["features"])
        saved = np.asarray(state["positions"])
        old = np.flatnonzero(saved >= 0)
        now = native.cell_positions(self.ctx)
        new = np.flatnonzero(now >= 0)
        self._positions = np.full(self.n_cells, -1, dtype=np.int32)
        self._logical = np.full(self.n_cells, -1, dtype=np.int64)
        if len(old) == len(new) and np.array_equal(saved[old], now[new]):
            self.features.move_cells(old, new)
            self._positions[new] = now[new]
            self._logical[new] = np.asarray(state["logical"])[old]
        else:  # not the cache this state was saved with: keep positions, forget features
            self.features.reset()
            self._positions = now
        self.rng.bit_generator.state = state["rng"]
        if self.cold is not None:
            if state.get("cold") is None:
                self.cold.clear()
            else:
                self.cold.load_state_dict(state["cold"])
            self._sync_cold_stats()

    def close(self) -> None:
        self.capture.close()
        if self.cold is not None:
            self.cold.close()
