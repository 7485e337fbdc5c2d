"""BAM (backward attention memory) scorer, numpy reference (docs/DESIGN.md §1.3).

One attention head over the cells of each (layer, kv-head) row; the BACKWARD mask lets cell i
attend only to itself and newer cells (j >= i), so a cell is judged against what came after it.
``bam-window`` limits that to cells i..i+window, which keeps the cost linear in N on CPUs.

Performance note: this reference leans on numpy matmul (OpenBLAS). On a busy machine threaded
OpenBLAS slows it down by 10-50x (threads spin against other processes); set
OPENBLAS_NUM_THREADS=1 (e.g. for parallel CMA-ES workers) or use the ONNX Runtime backend.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np

from .base import N_FEATURES, Scorer

D_ATTN = 32
"""Width of q, k and v."""
D_OUT = 2 * N_FEATURES
"""W_o output: 25 residual values then 25 multiplicative gates."""

# Flat parameter layout: (name, shape) in order.
BAM_LAYOUT: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("W_qkv", (N_FEATURES, 3 * D_ATTN)),
    ("b_qkv", (3 * D_ATTN,)),
    ("W_o", (D_ATTN, D_OUT)),
    ("b_o", (D_OUT,)),
    ("W_s", (N_FEATURES, 1)),
    ("b_s", (1,)),
)
BAM_N_PARAMS = sum(math.prod(shape) for _, shape in BAM_LAYOUT)  # 4172

DEFAULT_BLOCK_ELEMS = 1 << 23
"""Attention-matrix elements (rows x queries x keys) computed at once: bounds memory (~32 MB)."""
MIN_BLOCK = 16
MAX_BLOCK = 1024


def window_block(window: int) -> int:
    """Longest useful query block for bam-window: a block of b queries computes b x (b + window)
    logits of which only b x (window + 1) are used, so blocks much longer than the window waste
    most of their work (at window 64 and 2,560 cells, 8M-element blocks took twice as long)."""
    return max(64, window)


def unpack_bam(params: np.ndarray) -> dict[str, np.ndarray]:
    """Split the flat 4,172-vector into named arrays (views) following BAM_LAYOUT."""
    out = {}
    pos = 0
    for name, shape in BAM_LAYOUT:
        size = math.prod(shape)
        out[name] = params[pos : pos + size].reshape(shape)
        pos += size
    return out


def bam_params_from_linear(linear: np.ndarray) -> np.ndarray:
    """BAM parameters that score exactly like the linear scorer ``linear`` (25 weights, bias).

    With W_qkv, b_qkv, W_o and b_o at zero, ``y = 0`` so ``h = x`` and the score is
    ``x @ W_s + b_s``: BAM contains the linear scorer. Training can then start BAM from an
    evolved or hand-set linear scorer instead of from zero, and search outward from it.
    """
    linear = np.asarray(linear, dtype=np.float64).reshape(-1)
    if linear.size != N_FEATURES + 1:
        raise ValueError(f"a linear scorer has {N_FEATURES + 1} parameters, got {linear.size}")
    out = np.zeros(BAM_N_PARAMS)
    out[-(N_FEATURES + 1) :] = linear  # W_s then b_s close the flat layout
    return out


def attn_block_size(
    rows: int, n: int, window: int | None, block_elems: int = DEFAULT_BLOCK_ELEMS
) -> int:
    """Queries per block so that rows * block * keys stays near ``block_elems``.

    Full BAM: keys per block <= n. Windowed: keys per block <= block + window, so the block is
    the positive root of rows * b * (b + window) = block_elems, and at most ``window_block``.
    The ONNX graph computes this rule (all rows at once: ORT runs batched products
    efficiently); numpy uses ``numpy_plan``.
    """
    rows = max(1, rows)
    if window is None:
        b = block_elems // max(1, rows * n)
    else:
        b = math.floor((math.sqrt(window * window + 4.0 * block_elems / rows) - window) / 2.0)
        b = min(b, window_block(window))
    return int(min(MAX_BLOCK, max(MIN_BLOCK, b)))


def numpy_plan(
    rows: int, n: int, window: int | None, block_elems: int = DEFAULT_BLOCK_ELEMS
) -> tuple[int, int]:
    """(rows per group, queries per block) for the numpy loop: few, large matrix products.

    numpy runs a stack of matmuls as one BLAS call per matrix; thousands of small calls are
    slow, and pathologically so with threaded OpenBLAS on a busy machine. So blocks are made
    as long as possible (up to MAX_BLOCK queries; about ``window`` for bam-window, where longer
    blocks compute logits the mask throws away) and rows are grouped only while
    group * block * keys stays within ``block_elems``.
    """
    if window is None:
        block = max(1, min(n, MAX_BLOCK))
        span = n
    else:  # a block computes block x (block + window) logits for block x (window + 1) used
        block = max(1, min(n, MAX_BLOCK, window_block(window)))
        span = min(n, block + window)
    group = block_elems // max(1, block * span)
    if group >= 1:
        return int(min(rows, group)), int(block)
    return 1, int(min(block, max(MIN_BLOCK, block_elems // max(1, span))))


def bam_scores(
    z: np.ndarray,
    params: np.ndarray,
    window: int | None = None,
    block_elems: int = DEFAULT_BLOCK_ELEMS,
) -> np.ndarray:
    """BAM on normalised features z [R, N, 25] -> [R, N], blocked to bound memory."""
    p = unpack_bam(params)
    rows, n, _ = z.shape
    qkv = z @ p["W_qkv"] + p["b_qkv"]
    q = np.ascontiguousarray(qkv[..., :D_ATTN]) * np.float32(1.0 / math.sqrt(D_ATTN))
    k_t = np.ascontiguousarray(qkv[..., D_ATTN : 2 * D_ATTN].transpose(0, 2, 1))  # [R, 32, N]
    v = np.ascontiguousarray(qkv[..., 2 * D_ATTN :])
    out = np.empty((rows, n), np.float32)
    group, block = numpy_plan(rows, n, window, block_elems)
    for r0 in range(0, rows, group):
        rs = slice(r0, min(rows, r0 + group))
        for i0 in range(0, n, block):
            i1 = min(n, i0 + block)
            k1 = n if window is None else min(n, i1 + window)
            s = q[rs, i0:i1] @ k_t[rs, :, i0:k1]  # [G, Bq, Bk]
            # Only the first i1 - i0 key columns can be older than a query; with a window,
            # only columns past it can be too new, so build the mask on that part alone.
            k_mask = (i1 if window is None else k1) - i0
            d = np.arange(i0, i0 + k_mask)[None, :] - np.arange(i0, i1)[:, None]
            masked = d < 0
            if window is not None:
                masked |= d > window
            s[:, :, :k_mask][:, masked] = -np.inf
            s -= s.max(axis=-1, keepdims=True)
            np.exp(s, out=s)
            s /= s.sum(axis=-1, keepdims=True)
            a = s @ v[rs, i0:k1]  # [G, Bq, 32]
            y = a @ p["W_o"] + p["b_o"]
            h = z[rs, i0:i1] * (1.0 + y[..., N_FEATURES:]) + y[..., :N_FEATURES]
            out[rs, i0:i1] = (h @ p["W_s"])[..., 0] + p["b_s"][0]
    return out


class BAMScorer(Scorer):
    """Full backward-attention BAM: O(N^2) per row and update."""

    type_name: ClassVar[str] = "bam"
    n_params: ClassVar[int] = BAM_N_PARAMS

    @property
    def window(self) -> int | None:
        """Newer cells each cell may attend to besides itself (None = all of them)."""
        return None

    def _score_normalized(self, z: np.ndarray) -> np.ndarray:
        return bam_scores(z, self.params, self.window)


class BAMWindowScorer(BAMScorer):
    """BAM with the backward mask cut to cells i..i+window: same parameters, O(N * window)."""

    type_name: ClassVar[str] = "bam-window"
    option_defaults: ClassVar[dict[str, Any]] = {"window": 256}

    def _check_options(self) -> None:
        w = self.options["window"]
        if isinstance(w, bool) or not isinstance(w, (int, np.integer)) or w < 0:
            raise ValueError(f"bam-window option 'window' must be an integer >= 0, got {w!r}")
        self.options["window"] = int(w)

    @property
    def window(self) -> int | None:
        return self.options["window"]
