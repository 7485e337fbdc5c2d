"""ctypes bindings for the edge-namm native API compiled into libllama (native/edge_namm.h).

This is the thin layer: one Python function per C function, numpy views instead of copies,
and a clear error when the loaded llama.cpp was not built by ./build.sh.
"""

from __future__ import annotations

import ctypes
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

API_VERSION = 5

_BUILD_HINT = (
    "edge-namm needs llama-cpp-python built with its native patch: run ./build.sh from the "
    "edge-namm checkout (it builds the patched llama.cpp into .venv/)."
)


class NativeUnavailableError(RuntimeError):
    """The loaded llama.cpp library lacks the edge-namm patch."""


class UnsupportedModelError(ValueError):
    """The model's KV cache cannot be managed cell by cell (recurrent, hybrid, multi-stream)."""


@cache
def _load() -> ctypes.CDLL:
    try:
        from llama_cpp import llama_cpp as low
    except Exception as exc:  # pragma: no cover - import errors depend on the environment
        raise NativeUnavailableError(f"cannot import llama_cpp ({exc}). {_BUILD_HINT}") from exc
    lib = low._lib
    if not hasattr(lib, "edge_namm_api_version"):
        raise NativeUnavailableError(f"the installed llama.cpp is not patched. {_BUILD_HINT}")
    # the version first: an older build lacks newer symbols, and the hint says to rebuild
    lib.edge_namm_api_version.argtypes, lib.edge_namm_api_version.restype = [], ctypes.c_int32
    version = lib.edge_namm_api_version()
    if version != API_VERSION:
        raise NativeUnavailableError(
            f"native API version {version} does not match edge-namm's {API_VERSION}. {_BUILD_HINT}"
        )
    c = ctypes
    # (ctx, seq_id, int32 array, its length) -> int32: the calls that read or remove a
    # sequence's cells by position or cell index
    seq_cells = ([c.c_void_p, c.c_int32, c.POINTER(c.c_int32), c.c_int32], c.c_int32)
    sigs = {
        "edge_namm_unsupported_reason": ([c.c_void_p], c.c_char_p),
        "edge_namm_capture_new": ([c.c_void_p, c.c_int32], c.c_void_p),
        "edge_namm_capture_free": ([c.c_void_p], None),
        "edge_namm_capture_arm": ([c.c_void_p, c.c_bool], None),
        "edge_namm_capture_data": ([c.c_void_p], c.POINTER(c.c_float)),
        "edge_namm_capture_count": ([c.c_void_p], c.c_int32),
        "edge_namm_capture_clear": ([c.c_void_p], None),
        "edge_namm_capture_n_layer": ([c.c_void_p], c.c_int32),
        "edge_namm_capture_layer": ([c.c_void_p, c.c_int32], c.c_int32),
        "edge_namm_capture_n_head_kv": ([c.c_void_p], c.c_int32),
        "edge_namm_capture_n_cells": ([c.c_void_p], c.c_int32),
        "edge_namm_capture_max_queries": ([c.c_void_p], c.c_int32),
        "edge_namm_cell_positions": seq_cells,
        "edge_namm_remove_positions": seq_cells,
        "edge_namm_remove_cells": seq_cells,
        "edge_namm_read_keys": (
            [c.c_void_p, c.c_int32, c.POINTER(c.c_float), c.c_int64],
            c.c_int32,
        ),
        "edge_namm_capture_set_modes": ([c.c_void_p, c.c_bool, c.c_bool], None),
        "edge_namm_capture_set_device_mean": ([c.c_void_p, c.c_bool], None),
        "edge_namm_capture_bytes_read": ([c.c_void_p], c.c_uint64),
        "edge_namm_capture_q_data": ([c.c_void_p], c.POINTER(c.c_float)),
        "edge_namm_capture_q_count": ([c.c_void_p], c.c_int32),
        "edge_namm_capture_n_head": ([c.c_void_p], c.c_int32),
        "edge_namm_capture_head_dim": ([c.c_void_p], c.c_int32),
        "edge_namm_capture_kq_scale": ([c.c_void_p, c.c_int32], c.c_float),
        "edge_namm_cell_layout": ([c.c_void_p, c.POINTER(c.c_int64)], c.c_int32),
        "edge_namm_export_cells": (
            [c.c_void_p, c.POINTER(c.c_int32), c.c_int32, c.c_void_p, c.c_void_p],
            c.c_int32,
        ),
        "edge_namm_import_cells": (
            [
                c.c_void_p,
                c.c_int32,
                c.POINTER(c.c_int32),
                c.POINTER(c.c_int32),
                c.c_int32,
                c.c_void_p,
                c.c_void_p,
                c.POINTER(c.c_int32),
            ],
            c.c_int32,
        ),
        "edge_namm_install_crash_note": ([c.c_char_p], c.c_int32),
        "edge_namm_to_float": ([c.c_int32, c.c_void_p, c.POINTER(c.c_float), c.c_int64], c.c_int32),
    }
    for name, (argtypes, restype) in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = restype
    load_cpu_variants(low)
    return lib


def load_cpu_variants(low: object | None = None) -> Path | None:
    """A portable build (`./build.sh --portable`: GGML_BACKEND_DL) ships one
    libggml-cpu-<variant>.so per CPU generation beside libllama and loads none by itself, so no
    model would load; this loads the best variant for this CPU (once). Returns the library
    folder, or None for a native build (nothing to do)."""
    if low is None:
        from llama_cpp import llama_cpp as low
    folder = Path(low._lib._name).parent
    if not any(folder.glob("libggml-cpu-*")):
        return None
    _load_variants_from(folder)
    return folder


@cache
def _load_variants_from(folder: Path) -> None:
    # the copy libllama links (its soname): a wheel ships libggml.so and libggml.so.0 as two
    # files, and loading the variants into the other copy's registry would not help libllama
    ggml = next((p for p in (folder / "libggml.so.0", folder / "libggml.so") if p.exists()), None)
    if ggml is not None:
        lib = ctypes.CDLL(str(ggml))
        lib.ggml_backend_load_all_from_path.argtypes = [ctypes.c_char_p]
        lib.ggml_backend_load_all_from_path(str(folder).encode())


def available() -> bool:
    """True when the loaded llama.cpp carries the edge-namm patch."""
    try:
        _load()
    except NativeUnavailableError:
        return False
    return True


def require() -> ctypes.CDLL:
    """The patched library, or NativeUnavailableError telling the user to run ./build.sh."""
    return _load()


def install_crash_note(note: str) -> None:
    """Print `note` on a native crash, before the handler installed earlier (faulthandler)."""
    require().edge_namm_install_crash_note(note.encode())


def unsupported_reason(ctx: int) -> str | None:
    """Why the context's cache cannot be managed, or None when it can."""
    reason = require().edge_namm_unsupported_reason(ctx)
    return reason.decode() if reason else None


def check_supported(ctx: int) -> None:
    reason = unsupported_reason(ctx)
    if reason:
        raise UnsupportedModelError(f"edge-namm cannot manage this model's KV cache: {reason}.")


def _int32_array(values: np.ndarray) -> tuple[np.ndarray, ctypes.Array]:
    arr = np.ascontiguousarray(values, dtype=np.int32)
    return arr, arr.ctypes.data_as(ctypes.POINTER(ctypes.c_int32))


def cell_positions(ctx: int, seq_id: int = 0) -> np.ndarray:
    """Position held by every KV cell (-1 for empty cells), indexed by cell."""
    lib = require()
    n = lib.edge_namm_cell_positions(ctx, seq_id, None, 0)
    if n < 0:
        check_supported(ctx)
    out = np.empty(n, dtype=np.int32)
    lib.edge_namm_cell_positions(ctx, seq_id, out.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)), n)
    return out


class NewestPositionError(ValueError):
    """Removing the newest position would break llama.cpp's next batch (it must follow it)."""


def remove_positions(ctx: int, positions: np.ndarray, seq_id: int = 0) -> int:
    """Remove these positions of the sequence from every layer; returns the cells freed."""
    arr, ptr = _int32_array(positions)
    n = require().edge_namm_remove_positions(ctx, seq_id, ptr, len(arr))
    if n == -2:
        raise NewestPositionError("refusing to remove the newest position of the sequence")
    if n < 0:
        check_supported(ctx)
    return n


def remove_cells(ctx: int, cells: np.ndarray, seq_id: int = 0) -> int:
    """Remove the sequence from these cells (not from other cells at the same positions);
    returns the cells freed."""
    arr, ptr = _int32_array(cells)
    n = require().edge_namm_remove_cells(ctx, seq_id, ptr, len(arr))
    if n == -2:
        raise NewestPositionError("refusing to remove the newest position of the sequence")
    if n == -3:
        raise ValueError("a cell to remove is out of range, empty or not in the sequence")
    if n < 0:
        check_supported(ctx)
    return n


def read_keys(ctx: int, layer: int, n_cells: int, n_embd_k: int) -> np.ndarray:
    """Layer's cached keys (after RoPE) as float32 [n_cells, n_embd_k_gqa], indexed by cell."""
    out = np.empty((n_cells, n_embd_k), dtype=np.float32)
    got = require().edge_namm_read_keys(
        ctx, layer, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), out.size
    )
    if got != n_embd_k:
        raise ValueError(f"reading keys of layer {layer} failed (got {got}, want {n_embd_k})")
    return out


@dataclass(frozen=True)
class CellLayout:
    """How one KV cell of the managed cache is stored (per managed layer)."""

    k_type: int  # ggml type of K
    v_type: int
    k_bytes: int  # bytes of one cell's K row
    v_bytes: int  # bytes of one cell's V (gathered per cell when V is transposed)
    n_embd_k: int
    n_embd_v: int
    v_trans: bool
    n_layer: int

    @property
    def bytes_per_token(self) -> int:
        return self.n_layer * (self.k_bytes + self.v_bytes)


def cell_layout(ctx: int) -> CellLayout:
    out = (ctypes.c_int64 * 8)()
    if require().edge_namm_cell_layout(ctx, out) != 0:
        check_supported(ctx)
        raise UnsupportedModelError(
            "edge-namm cannot move this model's KV cells: its layers store K/V with different "
            "widths; use recall=False"
        )
    v = list(out)
    return CellLayout(v[0], v[1], v[2], v[3], v[4], v[5], bool(v[6]), v[7])


def export_cells(ctx: int, cells: np.ndarray, layout: CellLayout) -> tuple[np.ndarray, np.ndarray]:
    """K and V bytes of the cells as stored: [n_layer, n, k_bytes] and [n_layer, n, v_bytes]."""
    arr, ptr = _int32_array(cells)
    k = np.empty((layout.n_layer, len(arr), layout.k_bytes), dtype=np.uint8)
    v = np.empty((layout.n_layer, len(arr), layout.v_bytes), dtype=np.uint8)
    if require().edge_namm_export_cells(ctx, ptr, len(arr), k.ctypes.data, v.ctypes.data) != 0:
        raise ValueError(f"exporting KV cells failed (cells {arr.min()}..{arr.max()})")
    return k, v


class NoFreeCellsError(RuntimeError):
    """Importing cells needs as many free cells as tokens."""


def import_cells(
    ctx: int,
    positions: np.ndarray,
    k: np.ndarray,
    v: np.ndarray,
    rot_positions: np.ndarray | None = None,
    seq_id: int = 0,
) -> np.ndarray:
    """Put tokens back into free cells at these positions with their stored K/V; returns cells.

    `rot_positions`: where each stored key was rotated, if not at `positions` (re-positioning);
    llama.cpp then re-rotates those keys on the next decode."""
    arr, ptr = _int32_array(positions)
    rot, rot_ptr = (None, None) if rot_positions is None else _int32_array(rot_positions)
    k = np.ascontiguousarray(k, dtype=np.uint8)
    v = np.ascontiguousarray(v, dtype=np.uint8)
    cells = np.empty(len(arr), dtype=np.int32)
    got = require().edge_namm_import_cells(
        ctx,
        seq_id,
        ptr,
        rot_ptr,
        len(arr),
        k.ctypes.data,
        v.ctypes.data,
        cells.ctypes.data_as(ctypes.POINTER(ctypes.c_int32)),
    )
    if got == -2:
        raise NoFreeCellsError(f"not enough free KV cells to import {len(arr)} tokens")
    if got != len(arr):
        check_supported(ctx)
        raise ValueError("importing KV cells failed")
    return cells


def to_float(ggml_type: int, raw: np.ndarray, n_values: int) -> np.ndarray:
    """Stored values (bytes of a ggml type) as float32 [..., n_values]."""
    raw = np.ascontiguousarray(raw, dtype=np.uint8)
    lead = raw.shape[:-1]
    out = np.empty((*lead, n_values), dtype=np.float32)
    total = out.size
    if (
        total
        and require().edge_namm_to_float(
            ggml_type, raw.ctypes.data, out.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), total
        )
        != 0
    ):
        raise ValueError(f"cannot convert ggml type {ggml_type} to float")
    return out


class AttentionCapture:
    """Owns a native capture buffer that llama_decode fills with GQA-averaged attention rows."""

    def __init__(self, ctx: int, max_queries: int) -> None:
        lib = require()
        check_supported(ctx)
        self._lib = lib
        self._ptr = lib.edge_namm_capture_new(ctx, max_queries)
        if not self._ptr:
            raise MemoryError("could not allocate the attention capture buffer")
        self.n_layer = lib.edge_namm_capture_n_layer(self._ptr)
        # model layer of each captured row: all layers, or an iSWA model's full-attention ones
        self.layers = [lib.edge_namm_capture_layer(self._ptr, i) for i in range(self.n_layer)]
        self.n_head_kv = lib.edge_namm_capture_n_head_kv(self._ptr)
        self.n_cells = lib.edge_namm_capture_n_cells(self._ptr)
        self.max_queries = max_queries
        shape = (self.n_layer, self.n_head_kv, max_queries, self.n_cells)
        self._rows = np.ctypeslib.as_array(lib.edge_namm_capture_data(self._ptr), shape=shape)
        self.armed = False
        self.n_head = lib.edge_namm_capture_n_head(self._ptr)
        self.head_dim = lib.edge_namm_capture_head_dim(self._ptr)
        self._queries: np.ndarray | None = None

    def set_modes(self, rows: bool = True, queries: bool = False) -> None:
        """What an armed capture records: attention rows, queries (for recall), or both."""
        self._lib.edge_namm_capture_set_modes(self._ptr, rows, queries)

    def set_device_mean(self, on: bool = True) -> None:
        """Average each GQA group in the graph, on the backend (default), or on the host after
        reading the whole softmax; the rows are the same, the bytes read differ by the group."""
        self._lib.edge_namm_capture_set_device_mean(self._ptr, on)

    @property
    def bytes_read(self) -> int:
        """Attention bytes row capture has read so far (off the device when there is one)."""
        return int(self._lib.edge_namm_capture_bytes_read(self._ptr))

    def queries(self) -> np.ndarray:
        """Zero-copy view [n_layer, n_head, count, head_dim] of the queries captured so far."""
        if self._queries is None:
            shape = (self.n_layer, self.n_head, self.max_queries, self.head_dim)
            data = self._lib.edge_namm_capture_q_data(self._ptr)
            self._queries = np.ctypeslib.as_array(data, shape=shape)
        n = self._lib.edge_namm_capture_q_count(self._ptr)
        if n < 0:
            raise RuntimeError("query capture overflowed or saw an unexpected query layout")
        return self._queries[:, :, :n, :]

    def kq_scales(self) -> np.ndarray:
        """Softmax scale of each captured layer (as of the last decode that captured queries)."""
        return np.array(
            [self._lib.edge_namm_capture_kq_scale(self._ptr, i) for i in range(self.n_layer)],
            dtype=np.float32,
        )

    def arm(self, armed: bool = True) -> None:
        """Install (or remove) the eval callback; disarmed decodes run the stock graph."""
        self._lib.edge_namm_capture_arm(self._ptr, armed)
        self.armed = armed

    def disarm(self) -> None:
        self.arm(False)

    @property
    def count(self) -> int:
        n = self._lib.edge_namm_capture_count(self._ptr)
        if n < 0:
            raise RuntimeError(
                f"attention capture overflowed: more than {self.max_queries} queries were decoded "
                "between two reads (decode in smaller batches or raise max_queries)"
            )
        return n

    def rows(self) -> np.ndarray:
        """Zero-copy view [n_layer, n_head_kv, count, n_cells] of the rows captured so far."""
        return self._rows[:, :, : self.count, :]

    def clear(self) -> None:
        self._lib.edge_namm_capture_clear(self._ptr)

    def close(self) -> None:
        if self._ptr:
            if self.armed:
                self.disarm()
            self._lib.edge_namm_capture_free(self._ptr)
            self._ptr = None
            self._rows = None
            self._queries = None

    def __del__(self) -> None:
        self.close()
