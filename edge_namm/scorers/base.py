"""Common scorer machinery: the `Scorer` base class, frozen normalisation, feature configs.

Every scorer takes RAW per-cell features ``x`` of shape [R, N, 25] (R = (layer, kv-head) rows,
N cells oldest first; dims = 8 age-embedding values then 17 un-normalised spectrogram bins),
applies its own frozen z-score to dims 8..24 and returns float32 scores [R, N]. A score below
zero means "evict" (docs/DESIGN.md §1.2-1.4). The normalisation ships with the scorer because the
parameters were evolved against it.
"""

from __future__ import annotations

import abc
import copy
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from edge_namm.features.vector import STD_FLOOR, FeatureConfig, normalise

_DEFAULT = FeatureConfig()
N_FEATURES = _DEFAULT.n_features
"""Feature vector width: AGE_DIMS age-embedding dims followed by N_BINS spectrogram bins."""
AGE_DIMS = _DEFAULT.age_dims
N_BINS = _DEFAULT.n_bins

AGGREGATIONS = ("mean", "max", "min")
"""How per-(layer, head) scores become one score per cell (see `aggregate`)."""

DEFAULT_FEATURE_CONFIG: dict[str, Any] = _DEFAULT.to_dict()
"""Feature-extraction settings a scorer was trained with (``features.FeatureConfig``)."""


class ScorerFileError(ValueError):
    """A scorer file (JSON or ONNX) is unreadable, malformed or does not fit the caller."""


def feature_config_dict(config: Any) -> dict[str, Any]:
    """Return a plain dict for a feature config given as a dict or an object with ``to_dict()``.

    Accepts a ``features.FeatureConfig`` or anything else with ``to_dict()``.
    """
    if config is None:
        return dict(DEFAULT_FEATURE_CONFIG)
    if isinstance(config, Mapping):
        return dict(config)
    to_dict = getattr(config, "to_dict", None)
    if callable(to_dict):
        return dict(to_dict())
    raise TypeError(f"feature config must be a dict or have to_dict(), got {type(config)!r}")


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


def feature_config_diff(actual: Any, expected: Any) -> list[str]:
    """List human-readable differences between two feature configs (empty when they match).

    Numbers compare by value (32 == 32.0), so a config survives a JSON round trip.
    """
    # a key a file predates means its default (files written before `repeat` existed)
    a = {**DEFAULT_FEATURE_CONFIG, **feature_config_dict(actual)}
    e = {**DEFAULT_FEATURE_CONFIG, **feature_config_dict(expected)}
    diffs = []
    for key in sorted(set(a) | set(e)):
        if key not in a:
            diffs.append(f"{key} (missing in scorer, expected {e[key]!r})")
        elif key not in e:
            diffs.append(f"{key} (scorer has {a[key]!r}, not expected)")
        elif not _same_value(a[key], e[key]):
            diffs.append(f"{key} (scorer {a[key]!r}, expected {e[key]!r})")
    return diffs


def check_feature_config(config: Mapping[str, Any]) -> None:
    """Raise ScorerFileError when a feature config implies a width other than 25 dims."""
    age = config.get("age_dims")
    n_fft = config.get("n_fft")
    if age is None or n_fft is None:
        return
    try:
        width = int(age) + int(n_fft) // 2 + 1
    except (TypeError, ValueError) as exc:
        raise ScorerFileError(f"feature config has non-integer age_dims/n_fft: {exc}") from None
    if width != N_FEATURES or int(age) != AGE_DIMS:
        raise ScorerFileError(
            f"feature config gives {int(age)} age dims + {int(n_fft) // 2 + 1} bins = {width} "
            f"features; scorers take {AGE_DIMS} + {N_BINS} = {N_FEATURES}"
        )


def _vector(values: Any, n: int, what: str) -> np.ndarray:
    with np.errstate(over="ignore"):  # out-of-range values become inf, reported below
        arr = np.asarray(values, dtype=np.float32).reshape(-1)
    if arr.shape != (n,):
        raise ValueError(f"{what}: expected {n} values, got {arr.size}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: contains NaN or inf")
    return arr.copy()


class Scorer(abc.ABC):
    """A NAMM scorer: frozen normalisation + a flat float32 parameter vector.

    Subclasses set ``type_name``, ``n_params`` and implement ``_score_normalized``. Instances are
    treated as immutable; ``with_params`` makes the copies CMA-ES needs for each candidate.
    """

    type_name: ClassVar[str] = ""
    n_params: ClassVar[int] = 0
    option_defaults: ClassVar[dict[str, Any]] = {}
    backend: ClassVar[str] = "numpy"
    provider: ClassVar[str] = "numpy"

    def __init__(
        self,
        params: Any = None,
        norm_mean: Any = None,
        norm_std: Any = None,
        *,
        feature_config: Any = None,
        aggregation: str = "mean",
        provenance: Mapping[str, Any] | None = None,
        options: Mapping[str, Any] | None = None,
    ) -> None:
        self.params = (
            np.zeros(self.n_params, np.float32)
            if params is None
            else _vector(params, self.n_params, f"{self.type_name} params")
        )
        self.norm_mean = (
            np.zeros(N_BINS, np.float32)
            if norm_mean is None
            else _vector(norm_mean, N_BINS, "normalization mean")
        )
        self.norm_std = (
            np.ones(N_BINS, np.float32)
            if norm_std is None
            else _vector(norm_std, N_BINS, "normalization std")
        )
        if np.any(self.norm_std < 0):
            raise ValueError("normalization std must be >= 0")
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {aggregation!r}")
        self.feature_config = feature_config_dict(feature_config)
        self.aggregation = aggregation
        self.provenance = dict(provenance or {})
        unknown = sorted(set(options or {}) - set(self.option_defaults))
        if unknown:
            valid = ", ".join(sorted(self.option_defaults)) or "none"
            raise ValueError(
                f"unknown option(s) for scorer type {self.type_name!r}: {', '.join(unknown)} "
                f"(valid: {valid})"
            )
        self.options = {**self.option_defaults, **dict(options or {})}
        self._check_options()
        self.params.setflags(write=False)
        self.norm_mean.setflags(write=False)
        self.norm_std.setflags(write=False)

    def _check_options(self) -> None:
        """Validate ``self.options``; subclasses with options override this."""
        return None

    # -- normalisation -----------------------------------------------------------------------
    def norm_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """25-wide (shift, divisor) with age dims passed through: z = (x - shift) / divisor."""
        shift = np.zeros(N_FEATURES, np.float32)
        div = np.ones(N_FEATURES, np.float32)
        shift[AGE_DIMS:] = self.norm_mean
        div[AGE_DIMS:] = np.maximum(self.norm_std, np.float32(STD_FLOOR))
        return shift, div

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Apply the frozen z-score to spectrogram dims 8..24 (age dims unchanged)."""
        return normalise(x, self.norm_mean, self.norm_std)

    # -- scoring -----------------------------------------------------------------------------
    def score(self, x: np.ndarray) -> np.ndarray:
        """Score raw features [R, N, 25] -> float32 [R, N]; negative means evict."""
        x = check_features(x)
        if x.shape[1] == 0:
            return np.zeros(x.shape[:2], np.float32)
        out = self._score_normalized(self.normalize(x))
        return np.ascontiguousarray(out, dtype=np.float32)

    @abc.abstractmethod
    def _score_normalized(self, z: np.ndarray) -> np.ndarray:
        """Score already-normalised features z [R, N, 25] (N >= 1) -> [R, N]."""

    # -- copies ------------------------------------------------------------------------------
    def with_params(self, flat: Any) -> Scorer:
        """New scorer of the same type, normalisation and metadata with parameters ``flat``."""
        return type(self)(
            flat,
            self.norm_mean,
            self.norm_std,
            feature_config=self.feature_config,
            aggregation=self.aggregation,
            provenance=copy.deepcopy(self.provenance),
            options=self.options,
        )

    def info(self) -> dict[str, Any]:
        """Short description for ``edge-namm info`` and logs."""
        return scorer_info(self)

    def __repr__(self) -> str:
        opts = "".join(f", {k}={v!r}" for k, v in self.options.items())
        name = type(self).__name__
        return f"{name}(n_params={self.n_params}, aggregation={self.aggregation!r}{opts})"


def scorer_info(scorer: Any) -> dict[str, Any]:
    """The description shared by numpy and ONNX Runtime scorers."""
    return {
        "type": scorer.type_name,
        "n_params": scorer.n_params,
        "backend": scorer.backend,
        "provider": scorer.provider,
        "aggregation": scorer.aggregation,
        "options": dict(scorer.options),
    }


def check_features(x: Any) -> np.ndarray:
    """Return ``x`` as contiguous float32 [R, N, 25] or raise ValueError saying what is wrong."""
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[2] != N_FEATURES:
        raise ValueError(
            f"features must have shape [rows, cells, {N_FEATURES}], got {list(arr.shape)}"
        )
    return arr
