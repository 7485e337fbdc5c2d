"""Streaming NAMM feature state, indexed by physical KV cell (docs/DESIGN.md §1.2).

A physical cell keeps its token until it is evicted, so the state needs no compaction: the engine
folds each decode's attention rows with :meth:`AttentionFeatures.fold` and calls
:meth:`AttentionFeatures.reset_cells` on eviction; a token that later lands in a reset cell starts
from zero, which is exactly the paper's rule for new tokens (frames from before the token existed
hold only zeros, and there is no previous vector to decay).
"""

from __future__ import annotations

import numpy as np

from .stft import dft_tables, flat_rows, fold_rows, fold_rows_serial
from .vector import FeatureConfig

#: Below this many units of work (one unit: one attention value copied; a frame costs about 32
#: units) a fold runs on the calling thread. Waking Numba's workers costs tens of microseconds on
#: an idle machine but up to a scheduler time slice (many ms) on a busy one, while a generated
#: token's fold over 30 x 3 x 2,048 cells is ~0.3 ms serial, ~10 ms when it completes a frame.
SERIAL_WORK = 1 << 23


class AttentionFeatures:
    """Streaming STFT/EMA state per (layer, KV head, physical cell), plus baseline statistics.

    Memory: a ring of the last ``n_fft`` attention values per cell (float32), the EMA spectrogram
    (float32) and the attention sum (float64).
    """

    def __init__(
        self, n_layer: int, n_head_kv: int, n_cells: int, config: FeatureConfig = FeatureConfig()
    ) -> None:
        if min(n_layer, n_head_kv, n_cells) < 1:
            raise ValueError(f"bad shape: {n_layer=} {n_head_kv=} {n_cells=}")
        self.n_layer = int(n_layer)
        self.n_head_kv = int(n_head_kv)
        self.n_cells = int(n_cells)
        self.config = config
        self._win, self._cos, self._sin = dft_tables(config.n_fft)
        self._decay = np.float32(config.frame_decay)
        # Internal layouts put cells last so the kernels' inner loops are contiguous.
        self._ring = np.zeros((n_layer, n_head_kv, config.n_fft, n_cells), dtype=np.float32)
        self._ema = np.zeros((n_layer, n_head_kv, config.n_bins, n_cells), dtype=np.float32)
        self._asum = np.zeros((n_layer, n_head_kv, n_cells), dtype=np.float64)
        self._n_queries = 0
        #: Work threshold for the single-threaded kernel (see ``SERIAL_WORK``); 0 = always parallel.
        self.serial_work = SERIAL_WORK

    def fold(self, rows: np.ndarray) -> None:
        """Fold the attention of ``n_q`` new queries, ``rows`` [L, H, n_q, n_cells].

        Any ``n_q`` works; frames are emitted at every ``hop``-th query counted since
        :meth:`reset`. ``rows`` may be strided along the query axis; float32 with contiguous cells
        avoids a copy.
        """
        rows = np.asarray(rows)
        expect = (self.n_layer, self.n_head_kv, self.n_cells)
        if rows.ndim != 4 or (rows.shape[0], rows.shape[1], rows.shape[3]) != expect:
            raise ValueError(
                f"rows must be [{expect[0]}, {expect[1]}, n_q, {expect[2]}], got {rows.shape}"
            )
        n_q = rows.shape[2]
        if n_q == 0:
            return
        flat, strides = flat_rows(rows)
        hop = self.config.hop
        frames = (self._n_queries + n_q) // hop - self._n_queries // hop
        work = self.n_layer * self.n_head_kv * self.n_cells * (n_q + 32 * frames)
        kernel = fold_rows_serial() if work < self.serial_work else fold_rows()
        kernel(
            flat,
            strides,
            n_q,
            self._ring,
            self._ema,
            self._asum,
            self._n_queries,
            hop,
            self._win,
            self._cos,
            self._sin,
            self._decay,
        )
        self._n_queries += n_q

    @property
    def spectrogram(self) -> np.ndarray:
        """Current EMA spectrogram, float32 [L, H, n_cells, n_bins] (a copy)."""
        return np.ascontiguousarray(self._ema.transpose(0, 1, 3, 2))

    @property
    def attention_sum(self) -> np.ndarray:
        """Attention summed over all queries since each cell was (re)filled, float64 [L, H, n_cells]
        (H2O baseline)."""
        return self._asum.copy()

    @property
    def last_row(self) -> np.ndarray:
        """Attention paid by the most recent query, float32 [L, H, n_cells] (TOVA baseline)."""
        if self._n_queries == 0:
            return np.zeros((self.n_layer, self.n_head_kv, self.n_cells), dtype=np.float32)
        return self._ring[:, :, (self._n_queries - 1) % self.config.n_fft, :].copy()

    def recent(self, n: int) -> np.ndarray:
        """The last ``n <= n_fft`` attention values per cell, oldest first, float32
        [L, H, n_cells, n] (SnapKV observation window). Zeros where fewer queries were seen."""
        if not 0 <= n <= self.config.n_fft:
            raise ValueError(f"n must be in [0, {self.config.n_fft}], got {n}")
        slots = (self._n_queries - n + np.arange(n)) % self.config.n_fft
        return np.ascontiguousarray(self._ring[:, :, slots, :].transpose(0, 1, 3, 2))

    @property
    def n_queries(self) -> int:
        """Queries folded since construction or :meth:`reset`."""
        return self._n_queries

    def reset_cells(self, cells: np.ndarray) -> None:
        """Zero all state of ``cells`` (evicted: the next token there starts fresh)."""
        cells = np.asarray(cells, dtype=np.intp).ravel()
        if cells.size == 0:
            return
        if cells.min() < 0 or cells.max() >= self.n_cells:
            raise IndexError(f"cell index out of range [0, {self.n_cells})")
        self._ring[..., cells] = 0.0
        self._ema[..., cells] = 0.0
        self._asum[..., cells] = 0.0

    def move_cells(self, src: np.ndarray, dst: np.ndarray) -> None:
        """Cell ``src[i]``'s state now belongs to cell ``dst[i]``; every other cell starts fresh
        (llama.cpp compacts cells when it restores a saved state)."""
        src = np.asarray(src, dtype=np.intp)
        dst = np.asarray(dst, dtype=np.intp)
        for arr in (self._ring, self._ema, self._asum):
            moved = arr[..., src].copy()
            arr.fill(0.0)
            arr[..., dst] = moved

    def reset(self) -> None:
        """Forget everything (new sequence)."""
        self._ring.fill(0.0)
        self._ema.fill(0.0)
        self._asum.fill(0.0)
        self._n_queries = 0

    def state_dict(self) -> dict[str, np.ndarray | int]:
        """Copies of the state, internal layouts: ``ring`` [L, H, n_fft, C] (query ``t`` in slot
        ``t % n_fft``), ``ema`` [L, H, n_bins, C], ``attention_sum`` [L, H, C], ``n_queries``."""
        return {
            "ring": self._ring.copy(),
            "ema": self._ema.copy(),
            "attention_sum": self._asum.copy(),
            "n_queries": int(self._n_queries),
        }

    def load_state_dict(self, d: dict[str, np.ndarray | int]) -> None:
        """Restore a :meth:`state_dict` taken from an instance with the same shape and config."""
        for key, dst in (("ring", self._ring), ("ema", self._ema), ("attention_sum", self._asum)):
            src = np.asarray(d[key])
            if src.shape != dst.shape:
                raise ValueError(f"{key}: shape {src.shape} != {dst.shape}")
        self._ring[...] = d["ring"]
        self._ema[...] = d["ema"]
        self._asum[...] = d["attention_sum"]
        self._n_queries = int(d["n_queries"])
