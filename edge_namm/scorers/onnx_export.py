"""Export a numpy scorer to an ONNX graph (built with onnx.helper, no PyTorch).

The graph takes RAW features ``features`` float32 [R, N, F] (R and N dynamic; F = 25, or 28
with key geometry) and returns
``scores`` float32 [R, N]; the frozen normalisation is baked in as constants. For BAM the
backward (and window) mask is built inside the graph from Range ops, and attention runs in a
Loop over query blocks (``bam.attn_block_size``) so the N x N
matrix is never materialised: at N = 8192 and R = 90 it would take 24 GB. Attention dims that
cannot change the output are left out (``live_attention_dims``).

The scorer-file header (format, version, type, n_params, options, aggregation, normalization,
features, provenance) is stored in the model's metadata_props, JSON-encoded where structured.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from .bam import (
    D_ATTN,
    DEFAULT_BLOCK_ELEMS,
    MAX_BLOCK,
    MIN_BLOCK,
    BAMScorer,
    unpack_bam,
    window_block,
)
from .base import Scorer
from .file import scorer_header
from .mlp import LinearScorer, TwoLayerScorer, unpack_linear, unpack_two_layer

INPUT_NAME = "features"
OUTPUT_NAME = "scores"
MIN_OPSET = 13


class _Graph:
    """Tiny helper to emit nodes with unique names into a (sub)graph."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._n = 0

    def name(self, hint: str) -> str:
        self._n += 1
        return f"{self.prefix}{hint}_{self._n}"

    def const(self, value: Any, hint: str = "c", dtype: Any = np.float32) -> str:
        name = self.name(hint)
        self.inits.append(numpy_helper.from_array(np.asarray(value, dtype=dtype), name))
        return name

    def op(
        self, op_type: str, inputs: list[str], hint: str | None = None, n_out: int = 1, **attrs: Any
    ) -> Any:
        outs = [self.name(hint or op_type.lower()) for _ in range(n_out)]
        self.nodes.append(
            helper.make_node(op_type, inputs, outs, name=self.name("n_" + op_type), **attrs)
        )
        return outs[0] if n_out == 1 else outs


def _i64(g: _Graph, values: Any, hint: str = "i") -> str:
    return g.const(values, hint, np.int64)


def _normalize(g: _Graph, scorer: Scorer, x: str) -> str:
    shift, div = scorer.norm_vectors()
    return g.op(
        "Div", [g.op("Sub", [x, g.const(shift, "norm_shift")]), g.const(div, "norm_div")], "z"
    )


def _dense(g: _Graph, x: str, w: np.ndarray, b: np.ndarray, hint: str) -> str:
    return g.op(
        "Add", [g.op("MatMul", [x, g.const(w, hint + "_W")]), g.const(b, hint + "_b")], hint
    )


def _score_head(g: _Graph, h: str, w: np.ndarray, b: np.ndarray) -> str:
    """h [R, N, F] -> [R, N]: h @ w + b with the last axis squeezed."""
    return g.op("Squeeze", [_dense(g, h, w, b, "score"), _i64(g, [2], "axis2")], "score_sq")


def _folding(scorer: Scorer) -> Any:
    """``fold(W, b)``: a dense layer on normalised features rewritten to read raw ones.

    With z = (x - shift) / div = x * a + c: z @ W + b = x @ (a[:, None] * W) + (c @ W + b).
    ORT's broadcast Sub/Div over a trailing dim of 25 cost more than the MatMul itself, and for
    BAM a normalised copy of every feature would be the graph's largest buffer.
    """
    shift, div = (v.astype(np.float64) for v in scorer.norm_vectors())
    a, c = 1.0 / div, -shift / div

    def fold(w: np.ndarray, b: Any) -> tuple[np.ndarray, np.ndarray]:
        w = w.astype(np.float64)
        return (a[:, None] * w).astype(np.float32), (c @ w + b).astype(np.float32)

    return fold


def _mlp_graph(g: _Graph, scorer: Scorer, x: str) -> str:
    """Per-cell scorers with the normalisation folded into the weights (``_folding``)."""
    fold = _folding(scorer)
    if isinstance(scorer, LinearScorer):
        w, b = unpack_linear(scorer.params)
        return _score_head(g, x, *fold(w, b))
    w1, b1, w2, b2 = unpack_two_layer(scorer.params)
    # score = z @ W2 + relu(z @ W1 + b1) @ W2 + b2, i.e. (z + relu(...)) @ W2 + b2 regrouped.
    hidden = g.op("Relu", [_dense(g, x, *fold(w1, b1), "l1")])
    direct = _dense(g, x, *fold(w2, b2), "direct")
    through = g.op("MatMul", [hidden, g.const(w2, "W2")], "through")
    out = g.op("Add", [direct, through], "score")
    return g.op("Squeeze", [out, _i64(g, [2], "axis2")], "score_sq")


def live_attention_dims(p: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Indices of the q/k dims and of the v dims that can change BAM's output.

    A q.k dim where either side is zero (weights and bias) adds nothing to any logit, and a v
    dim that is zero or that ``W_o`` ignores adds nothing to the output, so the graph leaves
    them out: exact, and a BAM trained in a subspace (``bam-diagonal`` uses 8 of 32 q/k dims)
    runs its attention products at a fraction of the cost. At least one dim is kept of each
    so that every MatMul has an inner dimension; a kept dead dim contributes zeros.
    """
    w, b = p["W_qkv"], p["b_qkv"]

    def live(part: int) -> np.ndarray:
        cols = slice(part * D_ATTN, (part + 1) * D_ATTN)
        return np.any(w[:, cols] != 0, axis=0) | (b[cols] != 0)

    qk = np.flatnonzero(live(0) & live(1))
    vo = np.flatnonzero(live(2) & np.any(p["W_o"] != 0, axis=1))
    keep_one = np.zeros(1, np.int64)
    return (qk if qk.size else keep_one), (vo if vo.size else keep_one)


def _bam_graph(g: _Graph, scorer: BAMScorer, x: str, block_elems: int) -> str:
    """Emit BAM as a Loop over query blocks: attention + output head per block, reading the raw
    features ``x`` (normalisation and the 1/sqrt(d) scale folded into q, k and v).

    q is computed per block (each cell once). k and v are too for ``bam-window``, whose blocks
    read only ``window`` cells past their end: projecting all N cells up front would hold
    [R, N, dims] buffers, the largest of the graph (~40 MiB at 2,560 cells and 90 rows). Full
    BAM reads every newer cell in every block, so it projects k and v once, outside the Loop.
    """
    p = unpack_bam(scorer.params)
    window = scorer.window
    qk, vo = live_attention_dims(p)
    fold = _folding(scorer)
    w_qkv, b_qkv = p["W_qkv"].astype(np.float64), p["b_qkv"].astype(np.float64)
    scale = 1.0 / math.sqrt(D_ATTN)
    q_fold = fold(w_qkv[:, qk] * scale, b_qkv[qk] * scale)
    k_fold = fold(w_qkv[:, D_ATTN + qk], b_qkv[D_ATTN + qk])
    v_fold = fold(w_qkv[:, 2 * D_ATTN + vo], b_qkv[2 * D_ATTN + vo])

    def keys_values(graph: _Graph, xs: str) -> tuple[str, str]:
        k_t = graph.op("Transpose", [_dense(graph, xs, *k_fold, "k")], "k_t", perm=[0, 2, 1])
        return k_t, _dense(graph, xs, *v_fold, "v")

    if window is None:
        k_t, v = keys_values(g, x)

    shape = g.op("Shape", [x])
    rows = g.op("Gather", [shape, _i64(g, 0, "zero")], "rows", axis=0)  # scalar int64
    n = g.op("Gather", [shape, _i64(g, 1, "one")], "n", axis=0)
    idx = g.op("Range", [_i64(g, 0, "zero"), n, _i64(g, 1, "one")], "idx")

    # Query block size: bam.attn_block_size's rule, clamped to [MIN_BLOCK, MAX_BLOCK].
    if window is None:
        denom = g.op("Max", [g.op("Mul", [rows, n]), _i64(g, 1, "one")])
        block = g.op("Div", [_i64(g, block_elems, "budget"), denom], "block_raw")
    else:
        rows_f = g.op("Cast", [g.op("Max", [rows, _i64(g, 1, "one")])], to=TensorProto.DOUBLE)
        quad = g.op("Div", [g.const(4.0 * block_elems, "budget4", np.float64), rows_f])
        root = g.op("Sqrt", [g.op("Add", [quad, g.const(float(window) ** 2, "w2", np.float64)])])
        half = g.op(
            "Div",
            [
                g.op("Sub", [root, g.const(float(window), "wf", np.float64)]),
                g.const(2.0, "two", np.float64),
            ],
        )
        block = g.op("Cast", [g.op("Floor", [half])], "block_root", to=TensorProto.INT64)
        block = g.op("Min", [block, _i64(g, window_block(window), "wblock")], "block_raw")
    block = g.op(
        "Min",
        [g.op("Max", [block, _i64(g, MIN_BLOCK, "bmin")]), _i64(g, MAX_BLOCK, "bmax")],
        "block",
    )
    trips = g.op("Div", [g.op("Sub", [g.op("Add", [n, block]), _i64(g, 1, "one")]), block], "trips")
    block_1d = g.op("Unsqueeze", [block, _i64(g, [0], "ax0")], "block_1d")
    n_1d = g.op("Unsqueeze", [n, _i64(g, [0], "ax0")], "n_1d")
    empty = g.op(
        "ConstantOfShape",
        [
            g.op(
                "Concat", [g.op("Unsqueeze", [rows, _i64(g, [0])]), _i64(g, [0], "zero_1d")], axis=0
            )
        ],
        "acc0",
        value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]),
    )

    # Loop body: block b covers queries [i0, i1) and keys [i0, k1).
    b = _Graph("body_")
    i0 = b.op("Mul", ["iter", block_1d], "i0")  # iter is a 0-d tensor; block_1d is [1]
    i1 = b.op("Add", [i0, block_1d], "i1")
    k1 = n_1d if window is None else b.op("Add", [i1, _i64(b, [window], "win")], "k1")
    axis1 = _i64(b, [1], "axis1")
    axis0 = _i64(b, [0], "axis0")
    xb = b.op("Slice", [x, i0, i1, axis1], "xb")
    qb = _dense(b, xb, *q_fold, "q")
    zb = _normalize(b, scorer, xb)
    if window is None:
        ktb = b.op("Slice", [k_t, i0, k1, _i64(b, [2], "axis2")], "ktb")
        vb = b.op("Slice", [v, i0, k1, axis1], "vb")
    else:
        ktb, vb = keys_values(b, b.op("Slice", [x, i0, k1, axis1], "xkb"))
    s = b.op("MatMul", [qb, ktb], "s")  # [R, Bq, Bk]
    qi = b.op("Unsqueeze", [b.op("Slice", [idx, i0, i1, axis0]), _i64(b, [1], "ax1")], "qi")
    kj = b.op("Unsqueeze", [b.op("Slice", [idx, i0, k1, axis0]), _i64(b, [0], "ax0")], "kj")
    d = b.op("Sub", [kj, qi], "d")  # [Bq, Bk] = key index - query index
    allowed = b.op("GreaterOrEqual", [d, _i64(b, 0, "zero")], "allowed")
    if window is not None:
        near = b.op("LessOrEqual", [d, _i64(b, window, "win_s")], "near")
        allowed = b.op("And", [allowed, near], "allowed_w")
    # A [Bq, Bk] additive bias broadcast over rows is much cheaper in ORT than a 3-way Where.
    bias = b.op("Where", [allowed, b.const(0.0, "zero_f"), b.const(-np.inf, "neg_inf")], "bias")
    s = b.op("Add", [s, bias], "s_masked")
    attn = b.op("MatMul", [b.op("Softmax", [s], "p", axis=-1), vb], "attn")
    y = _dense(b, attn, p["W_o"][vo], p["b_o"], "y")
    res, mult = b.op(
        "Split", [y, _i64(b, [scorer.n_features] * 2, "split")], "y_part", n_out=2, axis=2
    )
    gate = b.op("Add", [mult, b.const(1.0, "one_f")], "gate")
    h = b.op("Add", [b.op("Mul", [zb, gate]), res], "h")
    sb = _score_head(b, h, p["W_s"], p["b_s"])
    acc_out = b.op("Concat", ["acc_in", sb], "acc_out", axis=1)
    cond_out = b.op("Identity", ["cond_in"], "cond_out")
    body = helper.make_graph(
        b.nodes,
        "bam_block",
        [
            helper.make_tensor_value_info("iter", TensorProto.INT64, []),
            helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
            helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, None),
        ],
        [
            helper.make_tensor_value_info(cond_out, TensorProto.BOOL, []),
            helper.make_tensor_value_info(acc_out, TensorProto.FLOAT, None),
        ],
        initializer=b.inits,
    )
    cond = g.const(True, "true", np.bool_)
    return g.op("Loop", [trips, cond, empty], "bam_scores", body=body)


def build_onnx_model(
    scorer: Scorer,
    opset: int = 17,
    provenance: Mapping[str, Any] | None = None,
    block_elems: int = DEFAULT_BLOCK_ELEMS,
) -> onnx.ModelProto:
    """Build (and check) the ONNX model for ``scorer``; see the module docstring."""
    if not MIN_OPSET <= opset <= onnx.defs.onnx_opset_version():
        raise ValueError(
            f"opset must be in {MIN_OPSET}..{onnx.defs.onnx_opset_version()}, got {opset}"
        )
    g = _Graph("")
    if isinstance(scorer, BAMScorer):
        raw = _bam_graph(g, scorer, INPUT_NAME, block_elems)
    elif isinstance(scorer, (LinearScorer, TwoLayerScorer)):
        raw = _mlp_graph(g, scorer, INPUT_NAME)
    else:
        raise TypeError(f"no ONNX export for scorer type {scorer.type_name!r}")
    g.nodes.append(helper.make_node("Identity", [raw], [OUTPUT_NAME], name="output"))
    graph = helper.make_graph(
        g.nodes,
        f"edge_namm_{scorer.type_name.replace('-', '_')}",
        [
            helper.make_tensor_value_info(
                INPUT_NAME, TensorProto.FLOAT, ["R", "N", scorer.n_features]
            )
        ],
        [helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["R", "N"])],
        initializer=g.inits,
    )
    opsets = [helper.make_opsetid("", opset)]
    model = helper.make_model(
        graph,
        opset_imports=opsets,
        ir_version=helper.find_min_ir_version_for(opsets),
        producer_name="edge-namm",
        doc_string=f"edge-namm NAMM scorer ({scorer.type_name}), raw features in, scores out",
    )
    header = scorer_header(scorer, provenance)
    meta = {
        key: value if isinstance(value, str) else json.dumps(value, allow_nan=False)
        for key, value in header.items()
    }
    helper.set_model_props(model, meta)
    onnx.checker.check_model(model, full_check=True)
    return model


def export_onnx(
    scorer: Scorer,
    path: str | os.PathLike[str],
    opset: int = 17,
    provenance: Mapping[str, Any] | None = None,
    block_elems: int = DEFAULT_BLOCK_ELEMS,
) -> onnx.ModelProto:
    """Write ``scorer`` as a checked ONNX model to ``path`` (and return the model)."""
    model = build_onnx_model(scorer, opset, provenance, block_elems)
    onnx.save_model(model, os.fspath(path))
    return model
