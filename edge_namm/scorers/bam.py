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

from edge_namm.features.vector import GEOMETRY_DIMS

from .base import N_FEATURES, Scorer

D_ATTN = 32
"""Width of q, k and v."""


def bam_layout(n_features: int = N_FEATURES) -> tuple[tuple[str, tuple[int, ...]], ...]:
    """Flat parameter layout, (name, shape) in order, for inputs of ``n_features`` dims. W_o's
    output is ``n_features`` residual values then ``n_features`` multiplicative gates."""
    f = n_features
    return (
        ("W_qkv", (f, 3 * D_ATTN)),
        ("b_qkv", (3 * D_ATTN,)),
        ("W_o", (D_ATTN, 2 * f)),
        ("b_o", (2 * f,)),
        ("W_s", (f, 1)),
        ("b_s", (1,)),
    )


BAM_LAYOUT = bam_layout()


def bam_n_params(n_features: int = N_FEATURES) -> int:
    """BAM's parameter count: 4,172 at 25 input dims, 4,661 at 28."""
    return sum(math.prod(shape) for _, shape in bam_layout(n_features))


BAM_N_PARAMS = bam_n_params()

DEFAULT_BLOCK_ELEMS = 1 << 23
"""Attention-matrix elements (rows x queries x keys) computed at once: bounds memory (~32 MB)."""
MIN_BLOCK = 16
MAX_BLOCK = 1024


def window_block(window: int) -> int:
    """Longest useful query block for bam-window: a block of b queries computes b x (b + window)
    logits of which only b x (window + 1) are used, so blocks much longer than the window waste
    most of their work (at window 64 and 2,560 cells, 8M-element blocks took twice as long)."""
    return max(64, window)


def bam_width(n_params: int) -> int:
    """Input width of a BAM with ``n_params`` parameters (the layout is linear in it)."""
    per_dim = bam_n_params(N_FEATURES + 1) - BAM_N_PARAMS
    width, rest = divmod(n_params - BAM_N_PARAMS, per_dim)
    if rest:
        raise ValueError(f"{n_params} is not a BAM parameter count")
    return N_FEATURES + width


def unpack_bam(params: np.ndarray) -> dict[str, np.ndarray]:
    """Split the flat vector (4,172 values at 25 input dims) into named arrays (views)."""
    out = {}
    pos = 0
    for name, shape in bam_layout(bam_width(len(params))):
        size = math.prod(shape)
        out[name] = params[pos : pos + size].reshape(shape)
        pos += size
    return out


def bam_params_from_linear(linear: np.ndarray) -> np.ndarray:
    """BAM parameters that score exactly like the linear scorer ``linear`` (F weights, bias).

    With W_qkv, b_qkv, W_o and b_o at zero, ``y = 0`` so ``h = x`` and the score is
    ``x @ W_s + b_s``: BAM contains the linear scorer. Training can then start BAM from an
    evolved or hand-set linear scorer instead of from zero, and search outward from it.
    """
    linear = np.asarray(linear, dtype=np.float64).reshape(-1)
    if linear.size - 1 not in (N_FEATURES, N_FEATURES + GEOMETRY_DIMS):
        raise ValueError(
            f"a linear scorer has {N_FEATURES + 1} parameters (or {N_FEATURES + GEOMETRY_DIMS + 1} "
            f"with key geometry), got {linear.size}"
        )
    out = np.zeros(bam_n_params(linear.size - 1))
    out[-linear.size :] = linear  # W_s then b_s close the flat layout
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
    """BAM on normalised features z [R, N, F] -> [R, N], blocked to bound memory."""
    p = unpack_bam(params)
    rows, n, f = z.shape
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
            h = z[rs, i0:i1] * (1.0 + y[..., f:]) + y[..., :f]
            out[rs, i0:i1] = (h @ p["W_s"])[..., 0] + p["b_s"][0]
    return out


class BAMScorer(Scorer):
    """Full backward-attention BAM: O(N^2) per row and update."""

    type_name: ClassVar[str] = "bam"

    @classmethod
    def param_count(cls, n_features: int) -> int:
        return bam_n_params(n_features)

    @classmethod
    def _widen(cls, params: np.ndarray, n_features: int, extra: int) -> np.ndarray:
        p = unpack_bam(params)
        f, g = n_features, n_features + extra
        w_qkv = np.pad(p["W_qkv"], ((0, extra), (0, 0)))
        v = slice(2 * D_ATTN, 2 * D_ATTN + f)
        if g <= D_ATTN and np.all(np.diag(p["W_qkv"][:, v]) == 1):
            # keep a bam-diagonal BAM's wiring (value dim i = feature i); W_o ignores the new
            # value dims until training moves their diagonals
            new = np.arange(f, g)
            w_qkv[new, 2 * D_ATTN + new] = 1.0
        w_o, b_o = p["W_o"], p["b_o"]
        parts = {
            "W_qkv": w_qkv,
            "b_qkv": p["b_qkv"],
            "W_o": np.pad(w_o.reshape(D_ATTN, 2, f), ((0, 0), (0, 0), (0, extra))).reshape(
                D_ATTN, -1
            ),
            "b_o": np.pad(b_o.reshape(2, f), ((0, 0), (0, extra))).ravel(),
            "W_s": np.pad(p["W_s"], ((0, extra), (0, 0))),
            "b_s": p["b_s"],
        }
        return np.concatenate([parts[name].ravel() for name, _ in bam_layout(g)])

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
