"""Common scorer machinery: the `Scorer` base class, frozen normalisation, feature configs.

Every scorer takes RAW per-cell features ``x`` of shape [R, N, F] (R = (layer, kv-head) rows,
N cells oldest first; dims = 8 age-embedding values, 17 un-normalised spectrogram bins, then 3
key-geometry values when the feature config has ``geometry``: F = 25 or 28), applies its own
frozen z-score to the 17 spectrogram dims and returns float32 scores [R, N]. A score below zero
means "evict" (docs/DESIGN.md §1.2-1.4). The normalisation ships with the scorer because the
parameters were evolved against it.
"""

from __future__ import annotations

import abc
import copy
import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from edge_namm.features.vector import GEOMETRY_DIMS, STD_FLOOR, FeatureConfig, normalise

_DEFAULT = FeatureConfig()
N_FEATURES = _DEFAULT.n_features
"""Feature vector width without key geometry: AGE_DIMS age-embedding dims, N_BINS bins."""
AGE_DIMS = _DEFAULT.age_dims
N_BINS = _DEFAULT.n_bins
SPECTROGRAM = slice(AGE_DIMS, AGE_DIMS + N_BINS)
"""Where the spectrogram sits in a feature vector (key geometry, if read, follows it)."""

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
    """Raise ScorerFileError when a feature config implies other than 8 age dims and 17 bins,
    or its ``geometry`` flag is not a boolean."""
    geometry = config.get("geometry", False)
    if not isinstance(geometry, bool):
        raise ScorerFileError(f"feature config 'geometry' must be true or false, got {geometry!r}")
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


def feature_width(config: Any) -> int:
    """Scorer input width for a feature config: 25, or 28 with key geometry."""
    return N_FEATURES + (GEOMETRY_DIMS if feature_config_dict(config).get("geometry") else 0)


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

    Subclasses set ``type_name``, implement ``param_count`` and ``_score_normalized``; the
    class's ``n_params`` is its count at the default width (25), an instance's at its own
    feature width (``n_features``). Instances are treated as immutable; ``with_params`` makes
    the copies CMA-ES needs for each candidate.
    """

    type_name: ClassVar[str] = ""
    n_params: int = 0
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
        self.feature_config = feature_config_dict(feature_config)
        self.n_features = feature_width(self.feature_config)
        self.n_params = self.param_count(self.n_features)
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

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        # the count at the default width, which listings, docs and file checks quote
        cls.n_params = cls.param_count(N_FEATURES)

    @classmethod
    @abc.abstractmethod
    def param_count(cls, n_features: int) -> int:
        """Parameters of this type for an input of ``n_features`` dims."""

    def _check_options(self) -> None:
        """Validate ``self.options``; subclasses with options override this."""
        return None

    # -- normalisation -----------------------------------------------------------------------
    def norm_vectors(self) -> tuple[np.ndarray, np.ndarray]:
        """Input-wide (shift, divisor) with age and geometry dims passed through (geometry is
        z-scored per row when the features are built): z = (x - shift) / divisor."""
        shift = np.zeros(self.n_features, np.float32)
        div = np.ones(self.n_features, np.float32)
        shift[SPECTROGRAM] = self.norm_mean
        div[SPECTROGRAM] = np.maximum(self.norm_std, np.float32(STD_FLOOR))
        return shift, div

    def normalize(self, x: np.ndarray) -> np.ndarray:
        """Apply the frozen z-score to the 17 spectrogram dims (the others unchanged)."""
        return normalise(x, self.norm_mean, self.norm_std, start=SPECTROGRAM.start)

    # -- scoring -----------------------------------------------------------------------------
    def score(self, x: np.ndarray) -> np.ndarray:
        """Score raw features [R, N, n_features] -> float32 [R, N]; negative means evict."""
        x = check_features(x, self.n_features)
        if x.shape[1] == 0:
            return np.zeros(x.shape[:2], np.float32)
        out = self._score_normalized(self.normalize(x))
        return np.ascontiguousarray(out, dtype=np.float32)

    @abc.abstractmethod
    def _score_normalized(self, z: np.ndarray) -> np.ndarray:
        """Score already-normalised features z [R, N, n_features] (N >= 1) -> [R, N]."""

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

    def with_geometry(self) -> Scorer:
        """The same scorer reading key geometry too (28 inputs), scoring exactly as before: the
        weights of the new inputs are zero, so training can start from a trained scorer."""
        if self.n_features != N_FEATURES:
            raise ValueError("this scorer reads key geometry already")
        config = {**self.feature_config, "geometry": True}
        wide = self._widen(np.asarray(self.params, np.float64), N_FEATURES, GEOMETRY_DIMS)
        return type(self)(
            wide,
            self.norm_mean,
            self.norm_std,
            feature_config=config,
            aggregation=self.aggregation,
            provenance=copy.deepcopy(self.provenance),
            options=self.options,
        )

    @classmethod
    @abc.abstractmethod
    def _widen(cls, params: np.ndarray, n_features: int, extra: int) -> np.ndarray:
        """Parameters for ``n_features + extra`` inputs that ignore the ``extra`` appended ones."""

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


def check_features(x: Any, n_features: int = N_FEATURES) -> np.ndarray:
    """Return ``x`` as contiguous float32 [R, N, n_features] or raise ValueError saying what is
    wrong."""
    arr = np.ascontiguousarray(x, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[2] != n_features:
        widths = {N_FEATURES, N_FEATURES + GEOMETRY_DIMS}
        hint = (
            " (a scorer trained with key geometry reads 28; build the features with it)"
            if arr.ndim == 3 and {arr.shape[2], n_features} == widths
            else ""
        )
        raise ValueError(
            f"features must have shape [rows, cells, {n_features}], got {list(arr.shape)}{hint}"
        )
    return arr
