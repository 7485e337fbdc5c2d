"""ColdStore: the tokens a policy evicted, kept byte-exact so a later query can recall them.

Each entry holds one token's K and V bytes for every managed layer exactly as llama.cpp stored
them (so a recalled token is bit-identical to the one evicted), its keys as float32 for scoring,
the position its key was rotated at, its logical position, token id and the policy's score when
it was evicted. Storage is a set of growable arrays, in RAM or memory-mapped files under
`cold_dir` (three files, not one per token). `cold_budget` caps the number of tokens: past it
the lowest-scored ones are forgotten for good and counted.
"""

from __future__ import annotations

import mmap
import os
import shutil
import tempfile
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_namm.native import CellLayout

_META = ("rot_pos", "pos", "logical", "tokens", "score")
COPY_PIECE = 4096  # tokens copied at once when a memory-mapped store grows


class ColdStoreError(ValueError):
    """Bad cold-store settings or a stored cold tier that does not fit this model."""


@dataclass
class ColdBatch:
    """Tokens moved between the hot cache and the cold store."""

    k: np.ndarray  # [n_layer, n, k_bytes] uint8
    v: np.ndarray  # [n_layer, n, v_bytes] uint8
    keys: np.ndarray  # [n_layer, n, n_embd_k] keys for scoring (stored as float16)
    rot_pos: np.ndarray  # [n] position each key was rotated at
    pos: np.ndarray  # [n] position to take when recalled (differs after re-positioning)
    logical: np.ndarray  # [n] logical position in the conversation
    tokens: np.ndarray  # [n] token ids
    score: np.ndarray  # [n] the policy's score at eviction (higher = more worth keeping)

    def __len__(self) -> int:
        return len(self.rot_pos)


class _Arrays:
    """Growable [n_layer, capacity, width] arrays, in RAM or as memory-mapped files."""

    def __init__(self, n_layer: int, widths: dict[str, tuple[int, np.dtype]], folder: Path | None):
        self.n_layer = n_layer
        self.widths = widths
        self.folder = folder
        self.capacity = 0
        self._maps: dict[str, mmap.mmap] = {}
        self.data: dict[str, np.ndarray] = {
            name: np.empty((n_layer, 0, w), dtype=dt) for name, (w, dt) in widths.items()
        }

    def grow(self, needed: int, used: int) -> None:
        if needed <= self.capacity:
            return
        capacity = max(needed, 2 * self.capacity, 256)
        fresh = {}
        for name, (width, dtype) in self.widths.items():
            shape = (self.n_layer, capacity, width)
            if self.folder is None:
                arr = np.empty(shape, dtype=dtype)
                arr[:, :used] = self.data[name][:, :used]
            else:
                arr = self._map(self.folder / f"{name}.bin", shape, dtype)
                # a piece at a time, handing pages back between pieces: copying a store of
                # gigabytes in one go would pull all of it, old and new, into the process
                for start in range(0, used, COPY_PIECE):
                    stop = min(used, start + COPY_PIECE)
                    arr[:, start:stop] = self.data[name][:, start:stop]
                    self._drop_pages()
            fresh[name] = arr
        self.data = fresh
        self.capacity = capacity
        self.release()

    def _map(self, path: Path, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        """A shared file mapping: its pages can be handed back to the page cache (release)."""
        nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        tmp = path.with_name(path.name + ".new")
        with open(tmp, "w+b") as f:
            f.truncate(nbytes)
            mm = mmap.mmap(f.fileno(), nbytes)
        self._maps[tmp.name] = mm
        return np.frombuffer(mm, dtype=dtype).reshape(shape)

    def release(self) -> None:
        """Drop mapped pages from this process (they stay in the file / page cache), so the
        resident memory does not grow with the cold store."""
        if self.folder is None:
            return
        for name in list(self._maps):
            if name.endswith(".new"):  # the arrays just made: older mappings go
                final = self.folder / name[: -len(".new")]
                (self.folder / name).replace(final)
                old = self._maps.pop(final.name, None)
                self._maps[final.name] = self._maps.pop(name)
                if old is not None:
                    try:
                        old.close()
                    except BufferError:  # a view still exported: the GC closes it later
                        pass
        self._drop_pages()

    def _drop_pages(self) -> None:
        for mm in self._maps.values():
            if hasattr(mm, "madvise"):
                mm.madvise(mmap.MADV_DONTNEED)

    @property
    def nbytes_per_token(self) -> int:
        return sum(self.n_layer * w * np.dtype(dt).itemsize for w, dt in self.widths.values())


class ColdStore:
    """Evicted tokens, byte-exact, in RAM or under `cold_dir`; capped at `cold_budget` tokens."""

    def __init__(
        self,
        layout: CellLayout,
        *,
        cold_budget: int | None = None,
        cold_dir: str | os.PathLike | None = None,
    ) -> None:
        if cold_budget is not None and cold_budget < 0:
            raise ColdStoreError(
                f"cold_budget must be >= 0 tokens (or None for no cap), got {cold_budget}"
            )
        self.layout = layout
        self.cold_budget = cold_budget
        self.forgotten = 0  # tokens dropped for good because of cold_budget
        self.spill_error: str | None = None
        self._folder: Path | None = None
        if cold_dir is not None:
            self._folder = self._open_folder(Path(cold_dir))
        self._arrays = self._new_arrays(self._folder)
        self.n = 0
        self.rot_pos = np.empty(0, dtype=np.int64)
        self.pos = np.empty(0, dtype=np.int64)
        self.logical = np.empty(0, dtype=np.int64)
        self.tokens = np.empty(0, dtype=np.int32)
        self.score = np.empty(0, dtype=np.float32)

    def _new_arrays(self, folder: Path | None) -> _Arrays:
        lay = self.layout
        widths = {
            "k": (lay.k_bytes, np.dtype(np.uint8)),
            "v": (lay.v_bytes, np.dtype(np.uint8)),
            "keys": (lay.n_embd_k, np.dtype(np.float16)),
        }
        return _Arrays(lay.n_layer, widths, folder)

    def _open_folder(self, cold_dir: Path) -> Path | None:
        """A private folder under cold_dir, or None (RAM) with a warning when it is unusable."""
        try:
            cold_dir.mkdir(parents=True, exist_ok=True)
            return Path(tempfile.mkdtemp(prefix="edge-namm-cold-", dir=cold_dir))
        except OSError as exc:
            self._fall_back_to_ram(f"cannot use cold_dir {cold_dir} ({exc})")
            return None

    def _fall_back_to_ram(self, why: str) -> None:
        self.spill_error = why
        warnings.warn(
            f"{why}; keeping the cold store in RAM instead. Free disk space or pass a writable "
            "cold_dir to spill again.",
            RuntimeWarning,
            stacklevel=3,
        )

    # --- size ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return self.n

    @property
    def on_disk(self) -> bool:
        return self._folder is not None

    @property
    def nbytes(self) -> int:
        """Bytes the cold tokens occupy (K/V bytes, scoring keys and per-token metadata)."""
        return self.n * (self._arrays.nbytes_per_token + 8 + 8 + 8 + 4 + 4)

    @property
    def kv_bytes(self) -> int:
        """K/V bytes alone: what these tokens would take back in the hot cache."""
        return self.n * self.layout.bytes_per_token

    def keys(self) -> np.ndarray:
        """Scoring keys of every cold token, [n_layer, n, n_embd_k] float16 (a view)."""
        return self._arrays.data["keys"][:, : self.n]

    def release(self) -> None:
        """Drop the pages a scoring pass read from this process (with cold_dir)."""
        self._arrays.release()

    # --- moving tokens in and out ------------------------------------------------------------
    def add(self, batch: ColdBatch) -> None:
        n_new = len(batch)
        if n_new == 0:
            return
        try:
            self._arrays.grow(self.n + n_new, self.n)
        except OSError as exc:  # disk full or gone: keep going in RAM, lose nothing
            ram = self._new_arrays(None)
            ram.grow(self.n + n_new, 0)
            for name in ram.data:
                ram.data[name][:, : self.n] = self._arrays.data[name][:, : self.n]
            self._arrays = ram
            self._remove_folder()
            self._fall_back_to_ram(f"spilling the cold store to disk failed ({exc})")
        end = self.n + n_new
        d = self._arrays.data
        d["k"][:, self.n : end] = batch.k
        d["v"][:, self.n : end] = batch.v
        d["keys"][:, self.n : end] = batch.keys
        self.rot_pos = np.r_[self.rot_pos, batch.rot_pos.astype(np.int64)]
        self.pos = np.r_[self.pos, batch.pos.astype(np.int64)]
        self.logical = np.r_[self.logical, batch.logical.astype(np.int64)]
        self.tokens = np.r_[self.tokens, batch.tokens.astype(np.int32)]
        self.score = np.r_[self.score, batch.score.astype(np.float32)]
        self.n = end
        self._arrays.release()
        if self.cold_budget is not None and self.n > self.cold_budget:
            worst = np.argsort(self.score, kind="stable")[: self.n - self.cold_budget]
            self.take(worst)
            self.forgotten += len(worst)

    def take(self, index: np.ndarray) -> ColdBatch:
        """Remove these entries and return them (in the order given)."""
        index = np.asarray(index, dtype=np.int64)
        d = self._arrays.data
        out = ColdBatch(
            k=np.ascontiguousarray(d["k"][:, index]),
            v=np.ascontiguousarray(d["v"][:, index]),
            keys=np.ascontiguousarray(d["keys"][:, index]),
            rot_pos=self.rot_pos[index].copy(),
            pos=self.pos[index].copy(),
            logical=self.logical[index].copy(),
            tokens=self.tokens[index].copy(),
            score=self.score[index].copy(),
        )
        keep = np.ones(self.n, dtype=bool)
        keep[index] = False
        survivors = np.flatnonzero(keep)
        # compact: survivors that sit past the new end move into the holes
        new_n = len(survivors)
        movers = survivors[survivors >= new_n]
        holes = np.setdiff1d(np.arange(new_n), survivors[survivors < new_n], assume_unique=True)
        if len(movers):
            for arr in d.values():
                arr[:, holes] = arr[:, movers]
        for name in _META:
            a = getattr(self, name)
            a[holes] = a[movers]
            setattr(self, name, a[:new_n].copy())
        self.n = new_n
        self._arrays.release()  # the gather and the compaction touched pages all over the store
        return out

    def clear(self) -> None:
        self.n = 0
        self.forgotten = 0
        for name in _META:
            setattr(self, name, getattr(self, name)[:0].copy())

    # --- persistence ---------------------------------------------------------------------------
    def state_dict(self) -> dict:
        d = self._arrays.data
        return {
            "layout": self.layout.__dict__.copy(),
            "k": np.array(d["k"][:, : self.n]),
            "v": np.array(d["v"][:, : self.n]),
            "keys": np.array(d["keys"][:, : self.n]),
            "rot_pos": self.rot_pos.copy(),
            "pos": self.pos.copy(),
            "logical": self.logical.copy(),
            "tokens": self.tokens.copy(),
            "score": self.score.copy(),
            "forgotten": self.forgotten,
        }

    def check_layout(self, state: dict) -> None:
        """Refuse a saved cold store whose cells do not fit this model and cache."""
        if state.get("layout") != self.layout.__dict__:
            raise ColdStoreError(
                "the saved cold store was made with another model or KV cache shape "
                f"({state.get('layout')} vs {self.layout.__dict__}); load it into a NammLlama "
                "built with the same model, cache types and recall settings"
            )

    def load_state_dict(self, state: dict) -> None:
        self.check_layout(state)
        self.clear()
        self.add(
            ColdBatch(
                k=state["k"],
                v=state["v"],
                keys=state["keys"],
                rot_pos=state["rot_pos"],
                pos=state["pos"],
                logical=state["logical"],
                tokens=state["tokens"],
                score=state["score"],
            )
        )
        self.forgotten = int(state["forgotten"])

    def _remove_folder(self) -> None:
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
            self._folder = None

    def close(self) -> None:
        self._arrays = self._new_arrays(None)
        self._remove_folder()
        self.n = 0
