"""ONNX Runtime backend: run exported scorers with the same ``score(x)`` interface as numpy.

Provider choice ("auto"): CUDA when onnxruntime lists it and a session really starts on it,
CoreML on macOS, else CPU. An explicit request for a provider that is missing or fails to start
falls back to CPU with one warning line (ONNX Runtime's own multi-line log is silenced while
the session is created).
"""

from __future__ import annotations

import json
import logging
import os
import sys
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .base import Scorer, ScorerFileError, check_features, feature_width, scorer_info
from .file import check_header

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
COREML = "CoreMLExecutionProvider"
PROVIDER_ALIASES = {
    "cpu": CPU,
    "cuda": CUDA,
    "gpu": CUDA,
    "coreml": COREML,
    "tensorrt": "TensorrtExecutionProvider",
    "dml": "DmlExecutionProvider",
    "rocm": "ROCMExecutionProvider",
}
_DEFAULT_LOG_SEVERITY = 2  # onnxruntime's default (warning)
_auto_cache: list[str] = []  # providers auto mode ended up using, probed once per process


def _ort() -> Any:
    import onnxruntime

    return onnxruntime


def normalize_providers(providers: str | Sequence[Any] | None) -> list[Any] | None:
    """Map aliases ("cpu", "cuda", "coreml", ...) to ORT names; None / "auto" -> None (auto)."""
    if providers is None:
        return None
    if isinstance(providers, str):
        if providers.lower() == "auto":
            return None
        providers = [p.strip() for p in providers.split(",") if p.strip()]
    out = []
    for p in providers:
        if isinstance(p, str):
            out.append(PROVIDER_ALIASES.get(p.lower(), p))
        else:  # (name, options) tuple as onnxruntime accepts
            name, opts = p
            out.append((PROVIDER_ALIASES.get(str(name).lower(), name), dict(opts)))
    return out


def _name(p: Any) -> str:
    return p if isinstance(p, str) else p[0]


def auto_providers() -> list[str]:
    """Preferred providers for this machine, best first, always ending with CPU."""
    available = _ort().get_available_providers()
    prefs = []
    if CUDA in available:
        prefs.append(CUDA)
    if sys.platform == "darwin" and COREML in available:
        prefs.append(COREML)
    return prefs + [CPU]


def session_options(intra_op_threads: int | None = None) -> Any:
    """CPU-friendly session options: all graph optimisations, intra-op threads = all cores.

    Memory patterns are off: ORT plans one per input shape, and the cell count changes at every
    memory update, so the plans only pile up (a BAM scoring 1-1.5k cells: +267 -> +153 MiB of
    RSS, same speed; no change for linear scorers). The CPU arena is off too: it grows by
    doubling and keeps what it took (a windowed BAM scoring 1-2.5k cells kept +87 MiB with it,
    +27 MiB without; same speed, and no measurable change in the engine's peak RSS).
    """
    ort = _ort()
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_mem_pattern = False
    so.enable_cpu_mem_arena = False
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.intra_op_num_threads = int(intra_op_threads or os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    return so


def _new_session(model: bytes, providers: list[Any], threads: int | None) -> Any:
    ort = _ort()
    quiet = any(_name(p) != CPU for p in providers)
    if quiet:  # a failing GPU provider otherwise prints several error lines
        ort.set_default_logger_severity(4)
    try:
        return ort.InferenceSession(model, session_options(threads), providers=providers)
    finally:
        if quiet:
            ort.set_default_logger_severity(_DEFAULT_LOG_SEVERITY)


def create_session(
    model: bytes, providers: str | Sequence[Any] | None = None, intra_op_threads: int | None = None
) -> tuple[Any, str]:
    """Create an InferenceSession with provider fallback; return (session, active provider)."""
    requested = normalize_providers(providers)
    if requested is None:
        wanted: list[Any] = list(_auto_cache or auto_providers())
        sess = _new_session(model, wanted, intra_op_threads)
        active = sess.get_providers()
        if not _auto_cache:
            _auto_cache.extend(p for p in wanted if p in active or p == CPU)
            if active[0] != wanted[0]:
                log.info("onnxruntime: %s did not start, using %s", wanted[0], active[0])
        return sess, active[0]
    available = set(_ort().get_available_providers())
    usable = [p for p in requested if _name(p) in available]
    missing = [_name(p) for p in requested if _name(p) not in available]
    if CPU not in [_name(p) for p in usable]:
        usable.append(CPU)
    sess = _new_session(model, usable, intra_op_threads)
    active = sess.get_providers()
    failed = missing + [_name(p) for p in usable if _name(p) != CPU and _name(p) not in active]
    if failed:
        warnings.warn(
            f"onnxruntime provider(s) {', '.join(failed)} not usable here; "
            f"falling back to {active[0]}",
            RuntimeWarning,
            stacklevel=3,
        )
    return sess, active[0]


def _read_model(model: str | os.PathLike[str] | bytes) -> tuple[bytes, str]:
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model), "<onnx bytes>"
    source = str(model)
    try:
        return Path(model).read_bytes(), source
    except OSError as exc:
        raise ScorerFileError(f"{source}: cannot read ONNX scorer ({exc})") from None


def _check_model(data: bytes, source: str, expect_features: Any) -> dict[str, Any]:
    """Parse the ONNX model, check it is an edge-namm scorer; return its decoded header."""
    import onnx
    from google.protobuf.message import DecodeError

    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise ScorerFileError(f"{source}: not an ONNX model ({exc})") from None
    if not model.HasField("graph"):
        raise ScorerFileError(f"{source}: not an ONNX model (no graph)")
    meta = {p.key: p.value for p in model.metadata_props}
    if "format" not in meta:
        raise ScorerFileError(
            f"{source}: not an edge-namm ONNX scorer (no 'format' metadata; "
            "export one with edge_namm.scorers.export_onnx)"
        )
    header: dict[str, Any] = {}
    for key, value in meta.items():
        if key in ("format", "type", "aggregation"):
            header[key] = value
        else:
            try:
                header[key] = json.loads(value)
            except json.JSONDecodeError:
                raise ScorerFileError(f"{source}: metadata {key!r} is not valid JSON") from None
    check_header(header, source, expect_features, need_params=False)

    inits = {t.name for t in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    outputs = list(model.graph.output)

    def dims(vi: Any) -> list[Any]:
        return [
            d.dim_value if d.HasField("dim_value") else None for d in vi.type.tensor_type.shape.dim
        ]

    float_t = onnx.TensorProto.FLOAT
    width = feature_width(header["features"])
    if (
        len(inputs) != 1
        or inputs[0].name != "features"
        or inputs[0].type.tensor_type.elem_type != float_t
        or len(dims(inputs[0])) != 3
        or dims(inputs[0])[2] not in (None, width)
    ):
        got = ", ".join(f"{i.name}{dims(i)}" for i in inputs) or "none"
        raise ScorerFileError(
            f"{source}: expected one float input 'features' [R, N, {width}], got {got}"
        )
    if (
        len(outputs) != 1
        or outputs[0].name != "scores"
        or outputs[0].type.tensor_type.elem_type != float_t
        or len(dims(outputs[0])) != 2
    ):
        got = ", ".join(f"{o.name}{dims(o)}" for o in outputs) or "none"
        raise ScorerFileError(f"{source}: expected one float output 'scores' [R, N], got {got}")
    return header


class OnnxScorer:
    """An exported scorer run by ONNX Runtime; same ``score(x)`` contract as ``Scorer``.

    Header fields (type_name, n_params, options, aggregation, feature_config, provenance,
    norm_mean, norm_std) come from the model metadata. ``provider`` is the provider actually
    running the graph.
    """

    backend = "onnx"

    def __init__(
        self,
        model: str | os.PathLike[str] | bytes,
        providers: str | Sequence[Any] | None = None,
        *,
        expect_features: Any = None,
        intra_op_threads: int | None = None,
    ) -> None:
        data, self.source = _read_model(model)
        header = _check_model(data, self.source, expect_features)
        self.type_name: str = header["type"]
        self.n_params: int = int(header["n_params"])
        self.options: dict[str, Any] = dict(header.get("options", {}))
        self.aggregation: str = header["aggregation"]
        self.feature_config: dict[str, Any] = dict(header["features"])
        self.n_features = feature_width(self.feature_config)
        self.provenance: dict[str, Any] = dict(header.get("provenance", {}))
        self.norm_mean = np.asarray(header["normalization"]["mean"], np.float32)
        self.norm_std = np.asarray(header["normalization"]["std"], np.float32)
        try:
            self.session, self.provider = create_session(data, providers, intra_op_threads)
        except ScorerFileError:
            raise
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ScorerFileError(f"{self.source}: onnxruntime cannot load it ({exc})") from None

    def score(self, x: np.ndarray) -> np.ndarray:
        """Score raw features [R, N, n_features] -> float32 [R, N]; negative means evict."""
        x = check_features(x, self.n_features)
        if x.shape[0] == 0 or x.shape[1] == 0:
            return np.zeros(x.shape[:2], np.float32)
        (out,) = self.session.run(["scores"], {"features": x})
        return out

    def info(self) -> dict[str, Any]:
        """Short description for ``edge-namm info`` and logs."""
        return scorer_info(self)

    def __repr__(self) -> str:
        return f"OnnxScorer(type={self.type_name!r}, provider={self.provider!r})"


def load_onnx_scorer(
    path: str | os.PathLike[str],
    expect_features: Any = None,
    providers: str | Sequence[Any] | None = None,
    intra_op_threads: int | None = None,
) -> OnnxScorer:
    """Load an exported ONNX scorer; raise ScorerFileError on a wrong file or feature config."""
    return OnnxScorer(
        path, providers, expect_features=expect_features, intra_op_threads=intra_op_threads
    )


def compile_scorer(
    scorer: Scorer | OnnxScorer,
    backend: str = "auto",
    providers: str | Sequence[Any] | None = None,
    intra_op_threads: int | None = None,
) -> Scorer | OnnxScorer:
    """Pick the scoring backend: "onnx" (in-memory export + ORT), "numpy", or "auto".

    "auto" uses ONNX Runtime when it is installed and falls back to numpy (with a warning)
    when it is not or the export fails. The result reports ``.backend`` and ``.provider``.
    """
    if backend not in ("auto", "onnx", "numpy"):
        raise ValueError(f"backend must be 'auto', 'onnx' or 'numpy', got {backend!r}")
    if isinstance(scorer, OnnxScorer):
        if backend == "numpy":
            raise ValueError("an ONNX scorer has no numpy parameters to fall back to")
        return scorer
    if backend == "numpy":
        return scorer
    try:
        from .onnx_export import build_onnx_model

        data = build_onnx_model(scorer).SerializeToString()
        return OnnxScorer(data, providers, intra_op_threads=intra_op_threads)
    except (ImportError, ScorerFileError) as exc:
        if backend == "onnx":
            raise
        warnings.warn(f"ONNX Runtime backend unavailable ({exc}); scoring with numpy", stacklevel=2)
        return scorer


def read_onnx_metadata(path: str | os.PathLike[str] | bytes) -> Mapping[str, Any]:
    """The decoded scorer header of an ONNX scorer file, without starting a session."""
    data, source = _read_model(path)
    return _check_model(data, source, None)
