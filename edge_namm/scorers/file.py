"""The scorer file: one JSON document holding everything needed to score (docs/DESIGN.md §1.2-1.3).

Layout (version 1)::

    {
      "format": "edge-namm-scorer",
      "version": 1,
      "type": "bam" | "bam-window" | "mlp" | "mlp2",
      "n_params": 4172,
      "options": {"window": 256},            # type-specific, {} for most types
      "aggregation": "mean" | "max" | "min",  # per-(layer, head) scores -> one per cell
      "normalization": {"mean": [17 floats], "std": [17 floats]},
      "features": {"n_fft": 32, "hop": 16, "ema_decay": 0.99, "age_dims": 8, "age_base": 50000.0,
                   "repeat": false, "geometry": false},  # geometry: 28 input dims, not 25
      "provenance": {...free: how it was trained, command, seed...},
      "params": [n_params floats]            # flat layout documented per type
    }

Floats are written as the exact doubles of the float32 values, so a save/load round trip is
bit-exact. The same header (without params) is stored as ONNX metadata by ``onnx_export``.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .base import (
    AGGREGATIONS,
    N_BINS,
    Scorer,
    ScorerFileError,
    check_feature_config,
    feature_config_diff,
    feature_width,
)
from .registry import SCORERS

FORMAT_NAME = "edge-namm-scorer"
FORMAT_VERSION = 1


def _floats(arr: np.ndarray) -> list[float]:
    return [float(v) for v in np.asarray(arr, dtype=np.float32).reshape(-1)]


def scorer_header(scorer: Scorer, provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Everything but the parameters: shared by the JSON file and the ONNX metadata."""
    prov = dict(scorer.provenance)
    if provenance:
        prov.update(provenance)
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "type": scorer.type_name,
        "n_params": int(scorer.n_params),
        "options": dict(scorer.options),
        "aggregation": scorer.aggregation,
        "normalization": {"mean": _floats(scorer.norm_mean), "std": _floats(scorer.norm_std)},
        "features": dict(scorer.feature_config),
        "provenance": prov,
    }


def scorer_to_dict(scorer: Scorer, provenance: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The scorer as a JSON-ready dict; ``provenance`` entries are merged over the scorer's."""
    doc = scorer_header(scorer, provenance)
    doc["params"] = _floats(scorer.params)
    return doc


def check_header(
    doc: Any, source: str, expect_features: Any = None, need_params: bool = True
) -> type[Scorer]:
    """Validate the header fields of a scorer document; return the scorer class.

    Raises ScorerFileError naming the file (``source``) and the problem.
    """
    if not isinstance(doc, Mapping):
        raise ScorerFileError(f"{source}: not a scorer file (top level is not a JSON object)")
    fmt = doc.get("format")
    if fmt != FORMAT_NAME:
        raise ScorerFileError(
            f"{source}: not a scorer file: 'format' is {fmt!r}, expected {FORMAT_NAME!r}"
        )
    version = doc.get("version")
    if isinstance(version, bool) or version != FORMAT_VERSION:
        raise ScorerFileError(
            f"{source}: unsupported scorer file version {version!r} "
            f"(this edge-namm reads version {FORMAT_VERSION})"
        )
    type_name = doc.get("type")
    if not isinstance(type_name, str) or type_name not in SCORERS:
        raise ScorerFileError(
            f"{source}: unknown scorer type {type_name!r} (valid: {', '.join(SCORERS)})"
        )
    cls = SCORERS[type_name]
    features = doc.get("features")
    if not isinstance(features, Mapping):
        raise ScorerFileError(f"{source}: 'features' must be an object (the feature config)")
    try:
        check_feature_config(features)
    except ScorerFileError as exc:
        raise ScorerFileError(f"{source}: {exc}") from None
    want = cls.param_count(feature_width(features))
    n_params = doc.get("n_params")
    if isinstance(n_params, bool) or not isinstance(n_params, int) or n_params != want:
        raise ScorerFileError(
            f"{source}: parameter count mismatch for type {type_name!r}: "
            f"expected {want}, got n_params={n_params!r}"
        )
    if need_params:
        params = doc.get("params")
        if not isinstance(params, list):
            raise ScorerFileError(f"{source}: 'params' must be a list of {want} numbers")
        if len(params) != want:
            raise ScorerFileError(
                f"{source}: parameter count mismatch for type {type_name!r}: "
                f"expected {want}, got {len(params)} values in 'params'"
            )
    norm = doc.get("normalization")
    mean = norm.get("mean") if isinstance(norm, Mapping) else None
    std = norm.get("std") if isinstance(norm, Mapping) else None
    if not (isinstance(mean, list) and isinstance(std, list)) or (len(mean), len(std)) != (
        N_BINS,
        N_BINS,
    ):
        got = (
            f"{len(mean)} means and {len(std)} stds"
            if isinstance(mean, list) and isinstance(std, list)
            else repr(norm)[:80]
        )
        raise ScorerFileError(
            f"{source}: 'normalization' must hold {N_BINS} means and {N_BINS} stds, got {got}"
        )
    if doc.get("aggregation") not in AGGREGATIONS:
        raise ScorerFileError(
            f"{source}: 'aggregation' is {doc.get('aggregation')!r}, "
            f"expected one of {', '.join(AGGREGATIONS)}"
        )
    if expect_features is not None:
        diffs = feature_config_diff(features, expect_features)
        if diffs:
            raise ScorerFileError(f"{source}: feature configuration mismatch: {'; '.join(diffs)}")
    for key in ("options", "provenance"):
        if not isinstance(doc.get(key, {}), Mapping):
            raise ScorerFileError(f"{source}: {key!r} must be an object")
    return cls


def scorer_from_dict(doc: Any, source: str = "<scorer>", expect_features: Any = None) -> Scorer:
    """Build a numpy scorer from a parsed scorer document (see module docstring)."""
    cls = check_header(doc, source, expect_features)
    try:
        params = np.array(doc["params"], dtype=np.float64)
        mean = np.array(doc["normalization"]["mean"], dtype=np.float64)
        std = np.array(doc["normalization"]["std"], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ScorerFileError(f"{source}: non-numeric params or normalization ({exc})") from None
    try:
        return cls(
            params,
            mean,
            std,
            feature_config=doc["features"],
            aggregation=doc["aggregation"],
            provenance=doc.get("provenance", {}),
            options=doc.get("options", {}),
        )
    except ValueError as exc:
        raise ScorerFileError(f"{source}: {exc}") from None


def load_scorer(path: str | os.PathLike[str], expect_features: Any = None) -> Scorer:
    """Read a JSON scorer file. ``expect_features`` (dict or FeatureConfig) must match if given."""
    source = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ScorerFileError(f"{source}: not a JSON scorer file (not UTF-8 text)") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ScorerFileError(f"{source}: not a JSON scorer file ({exc})") from None
    return scorer_from_dict(doc, source, expect_features)


def save_scorer(
    scorer: Scorer,
    path: str | os.PathLike[str],
    provenance: Mapping[str, Any] | None = None,
) -> None:
    """Write ``scorer`` as a JSON scorer file; ``provenance`` is merged over the scorer's own."""
    doc = scorer_to_dict(scorer, provenance)
    bad = [v for v in doc["params"] if not math.isfinite(v)]
    if bad:
        raise ValueError(f"refusing to save a scorer with {len(bad)} non-finite parameters")
    # One top-level key per line, values compact: readable header, params on one line.
    lines = [f" {json.dumps(k)}: {json.dumps(v, allow_nan=False)}" for k, v in doc.items()]
    text = "{\n" + ",\n".join(lines) + "\n}"
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text + "\n", encoding="utf-8")
    os.replace(tmp, path)
