"""Numba kernels for the streaming NAMM spectrogram (docs/DESIGN.md §1.2).

The paper computes, at every update, an STFT over the attention received since the previous
update (with the previous update's last ``n_fft - hop`` values prepended) and folds its frames into
an exponential moving average. Because the EMA weight of frame ``f`` is ``(1 - a) * a**(F - 1 - f)``
and the previous vector is decayed by ``a**F``, that is exactly the recursion
``ema = a * ema + (1 - a) * frame`` applied once per frame. So we keep the last ``n_fft``
attention values per (layer, head, cell) in a ring buffer and emit one frame whenever ``hop``
new queries have arrived: the full attention history is never stored.

Layouts (cells last, so that the innermost loops run over contiguous cells and vectorise):

- ``ring``  float32 [L, H, n_fft, C]: attention of query ``t`` lives in slot ``t % n_fft``.
- ``ema``   float32 [L, H, n_bins, C]: the spectrogram EMA.
- ``asum``  float64 [L, H, C]: attention summed since the cell was (re)filled.

A frame is one 32-point real FFT per cell, magnitudes only. For the paper's ``n_fft = 32`` it
is straight-line code (``_frame32`` in :mod:`._fft_generated`, written by :mod:`.fft_codegen`:
radix-2 on real sequences, trivial twiddles folded away, 309 operations per cell) that LLVM
vectorises over cells; other sizes use a folded DFT with loops over small tables
(:func:`_frame_generic`).

Each parallel work item owns one tile of ``TILE`` cells of one (layer, head) and copies the frame
(time order) and the tile's EMA into flat local buffers: with constant row offsets LLVM can prove
the few pointer ranges independent and vectorise; with the 2-D global arrays it gives up.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from ._fft_generated import _frame32
from .fft_codegen import TILE, hann_periodic

#: Queries ahead that :func:`_fold_item` asks the CPU to fetch while it computes frames.
PREFETCH_AHEAD = 8


def dft_tables(n_fft: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window and folded DFT tables for the generic frame kernel.

    Returns ``(window [n_fft], cos_tab [n_bins, q - 1], sin_tab [n_bins, q - 1])`` as float32
    with ``q = n_fft // 4``; ``tab[j, k - 1] = cos/sin(2 pi j k / n_fft)`` for ``k = 1 .. q - 1``.
    """
    if n_fft % 4 != 0 or n_fft < 8:
        raise ValueError(f"n_fft must be a multiple of 4 and >= 8, got {n_fft}")
    n_bins = n_fft // 2 + 1
    q = n_fft // 4
    j = np.arange(n_bins, dtype=np.float64)[:, None]
    k = np.arange(1, q, dtype=np.float64)[None, :]
    theta = 2.0 * np.pi * j * k / n_fft
    return (
        hann_periodic(n_fft).astype(np.float32),
        np.cos(theta).astype(np.float32),
        np.sin(theta).astype(np.float32),
    )


@njit(cache=True, fastmath=False)
def _frame_generic(ft, et, nc, win, cos_tab, sin_tab, decay, sc, re, im):
    """One frame for any n_fft (multiple of 4): a folded DFT, loops over small tables.

    The periodic Hann window is symmetric (``w[k] == w[n_fft - k]``), so real and imaginary parts
    need only sums and differences of mirrored samples, and a second fold around ``n_fft / 4``
    halves the work again (``n_fft / 4 - 1`` multiply-adds per bin and part).

    ``ft`` [n_fft * TILE] holds the frame in time order and is folded in place; ``sc``
    [4 * (q - 1) * TILE] gets the second fold, ``re``/``im`` [TILE] are accumulators.
    """
    n_fft = win.shape[0]
    half = n_fft // 2
    q = n_fft // 4
    m = q - 1
    gain = np.float32(1.0) - decay
    for k in range(n_fft):
        wk = win[k]
        for c in range(nc):
            ft[k * TILE + c] *= wk
    for k in range(1, half):
        lo = k * TILE
        hi = (n_fft - k) * TILE
        for c in range(nc):
            u = ft[lo + c]
            v = ft[hi + c]
            ft[lo + c] = u + v  # a_k
            ft[hi + c] = u - v  # b_k, kept at row n - k
    for k in range(1, q):
        a1 = k * TILE
        a2 = (half - k) * TILE
        b1 = (n_fft - k) * TILE
        b2 = (half + k) * TILE  # b_{half-k} lives at row n - (half - k)
        o = (k - 1) * TILE
        for c in range(nc):
            sc[o + c] = ft[a1 + c] + ft[a2 + c]  # even bins, real
            sc[(m + k - 1) * TILE + c] = ft[a1 + c] - ft[a2 + c]  # odd bins, real
            sc[(2 * m + k - 1) * TILE + c] = ft[b1 + c] - ft[b2 + c]  # even bins, imag
            sc[(3 * m + k - 1) * TILE + c] = ft[b1 + c] + ft[b2 + c]  # odd bins, imag
    for j in range(half + 1):
        par = j % 2
        sign = np.float32(1.0) if (j // 2) % 2 == 0 else np.float32(-1.0)
        sh = np.float32(1.0) if par == 0 else np.float32(-1.0)
        cq = sign if par == 0 else np.float32(0.0)
        sq = sign if par == 1 else np.float32(0.0)
        for c in range(nc):
            re[c] = ft[c] + sh * ft[half * TILE + c] + cq * ft[q * TILE + c]
            im[c] = sq * ft[(n_fft - q) * TILE + c]
        for k in range(m):
            ck = cos_tab[j, k]
            sk = sin_tab[j, k]
            ra = (par * m + k) * TILE
            ia = ((2 + par) * m + k) * TILE
            for c in range(nc):
                re[c] += ck * sc[ra + c]
                im[c] += sk * sc[ia + c]
        o = j * TILE
        for c in range(nc):
            et[o + c] = decay * et[o + c] + gain * np.sqrt(re[c] * re[c] + im[c] * im[c])


@intrinsic
def _prefetch(typingctx, arr, idx):
    """Hint the CPU to load the cache line of ``arr[idx]`` (LLVM's ``prefetch``; never faults).

    The fold reads each query's attention once, 512 bytes per tile from rows 8 KB apart, and
    then computes a frame; without a hint the loads of the next queries wait for the frame to
    finish, so memory time and arithmetic add up instead of overlapping.
    """
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [ptr.type, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        # read access, high temporal locality, data cache
        builder.call(fn, [ptr, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return sig, codegen


@njit(cache=True, fastmath=False)
def _push(rows, base, dst, acc):
    """Store one query's attention ``rows[base : base + len(dst)]`` in ``dst`` (a ring row or a
    history row of the tile) and add it to the tile's sums ``acc``."""
    nc = dst.shape[0]
    src = rows[base : base + nc]
    for c in range(nc):
        v = src[c]
        dst[c] = v
        acc[c] += v


@njit(cache=True, fastmath=False)
def _fold_item(
    item, rows, strides, n_q, ring, ema, asum, n_done, hop, win, cos_tab, sin_tab, decay
):
    """One work item of :func:`fold_rows`: one tile of cells of one (layer, head)."""
    n_head, n_fft, n_cells = ring.shape[1], ring.shape[2], ring.shape[3]
    n_bins = n_fft // 2 + 1
    n_tiles = (n_cells + TILE - 1) // TILE
    li = item // (n_head * n_tiles)
    rem = item - li * n_head * n_tiles
    hi = rem // n_tiles
    c0 = (rem - hi * n_tiles) * TILE
    nc = min(TILE, n_cells - c0)
    base = li * strides[0] + hi * strides[1] + c0
    ring2 = ring[li, hi]
    acc = asum[li, hi, c0 : c0 + nc]
    if (n_done + n_q) // hop == n_done // hop:  # no frame (e.g. one generated token)
        for i in range(n_q):
            # [int, slice] of a C array stays contiguous for Numba
            _push(rows, base + i * strides[2], ring2[(n_done + i) % n_fft, c0 : c0 + nc], acc)
        return
    fast = n_fft == 32
    ema2 = ema[li, hi]
    # hist: the previous n_fft queries (from the ring, oldest first), then this call's queries,
    # TILE floats per query. A frame is a window of n_fft consecutive rows, read in place.
    hist = np.empty((n_fft + n_q) * TILE, dtype=np.float32)
    for k in range(n_fft):
        src = ring2[(n_done + k) % n_fft, c0 : c0 + nc]
        for c in range(nc):
            hist[k * TILE + c] = src[c]
    et = np.empty(n_bins * TILE, dtype=np.float32)
    ns = 0 if fast else TILE
    ft = np.empty(n_fft * ns, dtype=np.float32)
    sc = np.empty(4 * (n_fft // 4 - 1) * ns, dtype=np.float32)
    re = np.empty(ns, dtype=np.float32)
    im = np.empty(ns, dtype=np.float32)
    for j in range(n_bins):
        src = ema2[j, c0 : c0 + nc]
        for c in range(nc):
            et[j * TILE + c] = src[c]
    for i in range(n_q):
        t = n_done + i
        if i + PREFETCH_AHEAD < n_q:
            ahead = base + (i + PREFETCH_AHEAD) * strides[2]
            for c in range(0, nc, 16):  # one hint per 64-byte line
                _prefetch(rows, ahead + c)
        _push(rows, base + i * strides[2], hist[(n_fft + i) * TILE : (n_fft + i) * TILE + nc], acc)
        if (t + 1) % hop == 0:
            window = hist[(i + 1) * TILE :]  # queries t - n_fft + 1 .. t
            if fast:
                _frame32(window, et, nc, decay)
            else:
                ft[: n_fft * TILE] = window[: n_fft * TILE]  # the generic kernel works in place
                _frame_generic(ft, et, nc, win, cos_tab, sin_tab, decay, sc, re, im)
    for j in range(n_bins):
        dst = ema2[j, c0 : c0 + nc]
        for c in range(nc):
            dst[c] = et[j * TILE + c]
    for k in range(n_q, n_q + n_fft):  # the newest n_fft queries back into their ring slots
        dst = ring2[(n_done + k) % n_fft, c0 : c0 + nc]
        for c in range(nc):
            dst[c] = hist[k * TILE + c]


@njit(cache=True)
def n_work_items(n_layer: int, n_head: int, n_cells: int) -> int:
    """Work items of :func:`fold_rows`: (layer, head, tile of ``TILE`` cells)."""
    return n_layer * n_head * ((n_cells + TILE - 1) // TILE)


def _fold_rows(rows, strides, n_q, ring, ema, asum, n_done, hop, win, cos_tab, sin_tab, decay):
    n_items = n_work_items(ring.shape[0], ring.shape[1], ring.shape[3])
    for item in prange(n_items):
        _fold_item(
            item, rows, strides, n_q, ring, ema, asum, n_done, hop, win, cos_tab, sin_tab, decay
        )


def _fold_rows_serial(
    rows, strides, n_q, ring, ema, asum, n_done, hop, win, cos_tab, sin_tab, decay
):
    n_items = n_work_items(ring.shape[0], ring.shape[1], ring.shape[3])
    for item in range(n_items):
        _fold_item(
            item, rows, strides, n_q, ring, ema, asum, n_done, hop, win, cos_tab, sin_tab, decay
        )


#: The one signature the drivers are compiled for. ``rows`` comes flat (see :func:`flat_rows`):
#: strided views along the query axis and contiguous arrays then share one compiled kernel, and
#: every slice the inner loops read is contiguous, which LLVM vectorises without stride checks.
FOLD_SIGNATURE = types.void(
    types.float32[::1],  # rows, flat
    types.int64[::1],  # element strides of rows (layer, head, query)
    types.int64,  # n_q
    types.float32[:, :, :, ::1],  # ring
    types.float32[:, :, :, ::1],  # ema
    types.float64[:, :, ::1],  # asum
    types.int64,  # n_done
    types.int64,  # hop
    types.float32[::1],  # window
    types.float32[:, ::1],  # cos table
    types.float32[:, ::1],  # sin table
    types.float32,  # frame decay
)


def flat_rows(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``rows`` [L, H, n_q, C] as a flat float32 view of the memory it spans, plus its element
    strides (layer, head, query). Copies only if the cells are not contiguous float32 (or the
    array is read-only: Numba types those differently)."""
    if (
        rows.dtype != np.float32
        or not rows.flags.writeable
        or rows.strides[3] != rows.itemsize
        or any(st < 0 or st % rows.itemsize for st in rows.strides[:3])
    ):
        rows = np.ascontiguousarray(rows, dtype=np.float32)
    strides = np.array([st // rows.itemsize for st in rows.strides[:3]], dtype=np.int64)
    extent = 1 + sum((n - 1) * st for n, st in zip(rows.shape, (*strides, 1), strict=True))
    return np.lib.stride_tricks.as_strided(rows, shape=(extent,), strides=(rows.itemsize,)), strides


@functools.cache
def fold_rows() -> Callable[..., None]:
    """The parallel fold kernel, compiled (or loaded from Numba's cache) on first use.

    ``kernel(rows, strides, n_q, ring, ema, asum, n_done, hop, win, cos_tab, sin_tab, decay)``
    folds the ``n_q`` queries of ``flat_rows(rows)`` into the streaming state, in place.
    ``n_done`` is the number of queries folded before (same for every cell): query
    ``t = n_done + i`` goes to ring slot ``t % n_fft`` and a frame is emitted after every query
    with ``(t + 1) % hop == 0``. Parallel over (layer, head, tile of cells).
    """
    return njit(FOLD_SIGNATURE, parallel=True, fastmath=False, cache=True)(_fold_rows)


@functools.cache
def fold_rows_serial() -> Callable[..., None]:
    """:func:`fold_rows` on the calling thread, for small calls (one generated token), where
    waking the worker threads costs more than the work (and a lot more on a busy machine)."""
    return njit(FOLD_SIGNATURE, fastmath=False, cache=True)(_fold_rows_serial)
