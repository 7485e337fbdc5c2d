"""NAMM scorers: numpy reference implementations, the scorer file, ONNX export and runtime.

Every scorer maps RAW features [R, N, 25] (R = (layer, kv-head) rows, N cells oldest first) to
float32 scores [R, N]; score < 0 means "evict" (docs/DESIGN.md §1.2-1.4). Types (``SCORERS``):
``bam`` (4,172 params), ``bam-window`` (same params, windowed backward mask), ``mlp`` (26),
``mlp2`` (676).

The ONNX parts (``export_onnx``, ``OnnxScorer``, ``compile_scorer``...) are imported lazily so
that the numpy reference works without onnx / onnxruntime installed.
"""

from __future__ import annotations

from edge_namm._lazy import lazy_attributes

from .aggregate import aggregate
from .bam import BAM_N_PARAMS, BAMScorer, BAMWindowScorer
from .base import (
    AGGREGATIONS,
    DEFAULT_FEATURE_CONFIG,
    N_FEATURES,
    Scorer,
    ScorerFileError,
    feature_config_diff,
)
from .file import (
    FORMAT_NAME,
    FORMAT_VERSION,
    load_scorer,
    save_scorer,
    scorer_from_dict,
    scorer_to_dict,
)
from .mlp import LinearScorer, TwoLayerScorer
from .registry import SCORERS, zero_scorer

__getattr__ = lazy_attributes(
    __name__,
    {
        "onnx_export": ["export_onnx", "build_onnx_model"],
        "runtime": ["OnnxScorer", "load_onnx_scorer", "compile_scorer", "read_onnx_metadata"],
    },
)


__all__ = [
    "AGGREGATIONS",
    "BAM_N_PARAMS",
    "DEFAULT_FEATURE_CONFIG",
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "N_FEATURES",
    "SCORERS",
    "BAMScorer",
    "BAMWindowScorer",
    "LinearScorer",
    "OnnxScorer",
    "Scorer",
    "ScorerFileError",
    "TwoLayerScorer",
    "aggregate",
    "build_onnx_model",
    "compile_scorer",
    "export_onnx",
    "feature_config_diff",
    "load_onnx_scorer",
    "load_scorer",
    "read_onnx_metadata",
    "save_scorer",
    "scorer_from_dict",
    "scorer_to_dict",
    "zero_scorer",
]
