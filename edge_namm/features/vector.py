"""The NAMM feature vector and its normalisation (numpy only: no Numba, no llama.cpp).

One definition shared by the engine (``policies/namm.py``), the scorers (their frozen z-score)
and training (recordings and the offline simulator): ``[age embedding (age_dims), EMA
spectrogram (n_bins), key geometry (GEOMETRY_DIMS, only with ``geometry``)]`` per (layer, KV
head) row and token (docs/DESIGN.md §1.2). Geometry comes last so that a scorer trained
without it widens by appending inputs (``scorers.with_geometry``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np

#: Floor on the standard deviation in :func:`normalise`, as in the reference.
STD_FLOOR = 1e-7
#: Key-geometry features per (layer, KV head, token): log key norm, key distinctiveness
#: (KeyDiff: one minus the cosine to the row's mean key direction) and log value norm.
GEOMETRY_DIMS = 3


@dataclass(frozen=True)
class FeatureConfig:
    """Feature constants; scorer files carry them (``to_dict``/``from_dict``)."""

    n_fft: int = 32
    hop: int = 16
    ema_decay: float = 0.99
    age_dims: int = 8
    age_base: float = 50000.0
    #: Also fold the attention of a context-repeat pass into the stream at every update (KVzip's
    #: reconstruction signal, which makes tokens visible that later text never looks at).
    repeat: bool = False
    #: Also read each cached token's key and value geometry (GEOMETRY_DIMS features per row):
    #: the signals that see a needle best without the question (key distinctiveness and norm,
    #: AUC 0.66-0.67 against 0.40 for received attention on SmolLM2).
    geometry: bool = False

    def __post_init__(self) -> None:
        if self.n_fft < 8 or self.n_fft % 4 != 0:
            raise ValueError(f"n_fft must be a multiple of 4 and >= 8, got {self.n_fft}")
        if not 1 <= self.hop <= self.n_fft:
            raise ValueError(f"hop must be in [1, n_fft], got {self.hop}")
        if not 0.0 < self.ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1), got {self.ema_decay}")
        if self.age_dims < 0 or self.age_dims % 2 != 0:
            raise ValueError(f"age_dims must be even and >= 0, got {self.age_dims}")
        if self.age_base <= 0.0:
            raise ValueError(f"age_base must be > 0, got {self.age_base}")
        for flag in ("repeat", "geometry"):
            if not isinstance(getattr(self, flag), bool):
                raise ValueError(f"{flag} must be true or false, got {getattr(self, flag)!r}")

    @property
    def n_bins(self) -> int:
        """One-sided STFT bins: ``n_fft // 2 + 1`` (17)."""
        return self.n_fft // 2 + 1

    @property
    def n_geometry(self) -> int:
        """Key-geometry dims (GEOMETRY_DIMS with ``geometry``, else 0)."""
        return GEOMETRY_DIMS if self.geometry else 0

    @property
    def n_features(self) -> int:
        """Feature vector length: ``age_dims + n_geometry + n_bins`` (25, or 28 with geometry)."""
        return self.age_dims + self.n_geometry + self.n_bins

    @property
    def frame_decay(self) -> float:
        """EMA factor per STFT frame, ``ema_decay ** hop`` (the paper's ``a``)."""
        return float(self.ema_decay) ** self.hop

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown FeatureConfig keys: {sorted(unknown)}")
        return cls(**d)


def age_embedding(ages: np.ndarray, config: FeatureConfig = FeatureConfig()) -> np.ndarray:
    """Sinusoidal age embedding, ``[...]`` -> float32 ``[..., age_dims]``.

    ``[sin(age * w_k) for k < d/2] + [cos(age * w_k) for k < d/2]``, ``w_k = base ** (-k / (d/2))``
    with ``age = newest_position - token_position``. Computed in float64 (ages reach 1e4+).
    """
    half = config.age_dims // 2
    w = config.age_base ** (-np.arange(half, dtype=np.float64) / max(half, 1))
    ang = np.asarray(ages, dtype=np.float64)[..., None] * w
    return np.concatenate([np.sin(ang), np.cos(ang)], axis=-1).astype(np.float32)


def cosine_to_mean_direction(keys: np.ndarray) -> np.ndarray:
    """``[..., N, d] -> [..., N]``: the cosine between each key and the mean direction of the N
    keys (KeyDiff's anchor; one minus it is a key's distinctiveness)."""
    unit = keys / np.maximum(np.linalg.norm(keys, axis=-1, keepdims=True), 1e-6)
    anchor = unit.mean(axis=-2, keepdims=True)
    anchor /= np.maximum(np.linalg.norm(anchor, axis=-1, keepdims=True), 1e-6)
    return (unit * anchor).sum(axis=-1)


def key_geometry(keys: np.ndarray, values: np.ndarray, n_head_kv: int) -> np.ndarray:
    """Raw key geometry per (layer, KV head) row and token, float32 ``[L * n_head_kv, N, 3]``.

    ``keys`` ``[L, N, n_head_kv * d_k]`` (after RoPE, as cached) and ``values`` ``[L, N,
    n_head_kv * d_v]``. Per row: log key norm, one minus the cosine between the token's key and
    the mean unit key of the row's tokens (KeyDiff's distinctiveness), log value norm.
    """
    n_layer, n, _ = keys.shape
    k = np.asarray(keys, np.float32).reshape(n_layer, n, n_head_kv, -1).transpose(0, 2, 1, 3)
    v = np.asarray(values, np.float32).reshape(n_layer, n, n_head_kv, -1).transpose(0, 2, 1, 3)
    out = np.empty((n_layer, n_head_kv, n, GEOMETRY_DIMS), dtype=np.float32)
    out[..., 0] = np.log(np.maximum(np.linalg.norm(k, axis=-1), 1e-6))
    out[..., 1] = 1.0 - cosine_to_mean_direction(k)
    out[..., 2] = np.log(np.maximum(np.linalg.norm(v, axis=-1), 1e-6))
    return out.reshape(n_layer * n_head_kv, n, GEOMETRY_DIMS)


def standardise_rows(geometry_rows: np.ndarray) -> np.ndarray:
    """z-score each row's geometry over the tokens given (float32, same shape).

    Geometry is read relative to the tokens cached with it: what makes a key stand out is its
    distance from the others in the same layer and head, and a per-row z-score needs no frozen
    statistics, so one scorer reads any model's key scales.
    """
    g = np.asarray(geometry_rows, dtype=np.float32)
    if g.shape[-2] == 0:
        return g.copy()
    mean = g.mean(axis=-2, keepdims=True)
    std = g.std(axis=-2, keepdims=True)
    return ((g - mean) / np.maximum(std, np.float32(1e-6))).astype(np.float32)


def raw_features(
    spectrogram_rows: np.ndarray,
    ages: np.ndarray,
    config: FeatureConfig = FeatureConfig(),
    geometry_rows: np.ndarray | None = None,
) -> np.ndarray:
    """``[age(age_dims), spectrogram(n_bins), geometry(n_geometry)]`` per token, float32
    ``[R, N, n_features]``.

    ``spectrogram_rows`` is ``[R, N, n_bins]`` (any leading dims), ``ages`` ``[N]`` (or anything
    broadcastable to ``spectrogram_rows.shape[:-1]``); with ``config.geometry``,
    ``geometry_rows`` ``[R, N, GEOMETRY_DIMS]`` from :func:`key_geometry`, z-scored here over
    these N tokens (:func:`standardise_rows`). The spectrogram is not normalised: the frozen
    normalisation belongs to the scorer (:func:`normalise`).
    """
    spec = np.asarray(spectrogram_rows)
    if spec.shape[-1] != config.n_bins:
        raise ValueError(f"last dim must be {config.n_bins}, got {spec.shape}")
    out = np.empty(spec.shape[:-1] + (config.n_features,), dtype=np.float32)
    a, b, g = config.age_dims, config.n_bins, config.n_geometry
    out[..., :a] = age_embedding(ages, config)
    out[..., a : a + b] = spec
    if g:
        if geometry_rows is None:
            raise ValueError("this feature config reads key geometry: pass geometry_rows")
        geo = np.asarray(geometry_rows)
        if geo.shape != spec.shape[:-1] + (g,):
            want = [*spec.shape[:-1], g]
            raise ValueError(f"geometry_rows must be {want}, got {list(geo.shape)}")
        out[..., a + b :] = standardise_rows(geo)
    return out


def normalise(
    features: np.ndarray, mean: np.ndarray, std: np.ndarray, start: int | None = None
) -> np.ndarray:
    """Per-bin z-score of ``len(mean)`` dims from ``start`` (default: the trailing ones),
    ``(x - mu) / max(sigma, 1e-7)``.

    One shared set of statistics for all layers and heads; the other (age, geometry) dims are
    copied unchanged. Returns a new float32 array.
    """
    mean = np.asarray(mean, dtype=np.float32).ravel()
    std = np.asarray(std, dtype=np.float32).ravel()
    if mean.shape != std.shape:
        raise ValueError(f"mean {mean.shape} and std {std.shape} differ")
    out = np.array(features, dtype=np.float32, copy=True)
    start = out.shape[-1] - mean.shape[0] if start is None else start
    dims = slice(start, start + mean.shape[0])
    if start < 0 or dims.stop > out.shape[-1]:
        raise ValueError(f"features have {out.shape[-1]} dims < {mean.shape[0]} statistics")
    out[..., dims] -= mean
    out[..., dims] /= np.maximum(std, np.float32(STD_FLOOR))
    return out


class NormStats:
    """Running per-bin mean/variance over many spectrogram vectors (float64, Chan/Welford merge).

    Feed it spectrograms of live cells from full-cache runs, then freeze ``mean``/``std`` into the
    scorer. ``std`` is the population standard deviation (ddof 0).
    """

    def __init__(self, n_bins: int = 17) -> None:
        self.n_bins = int(n_bins)
        self.count = 0
        self._mean = np.zeros(self.n_bins, dtype=np.float64)
        self._m2 = np.zeros(self.n_bins, dtype=np.float64)

    def update(self, spec_rows: np.ndarray) -> None:
        """Add vectors ``[..., n_bins]`` (every leading index is one sample)."""
        x = np.asarray(spec_rows, dtype=np.float64).reshape(-1, self.n_bins)
        n = x.shape[0]
        if n == 0:
            return
        b_mean = x.mean(axis=0)
        b_m2 = ((x - b_mean) ** 2).sum(axis=0)
        total = self.count + n
        delta = b_mean - self._mean
        self._mean = self._mean + delta * (n / total)
        self._m2 = self._m2 + b_m2 + delta**2 * (self.count * n / total)
        self.count = total

    @property
    def mean(self) -> np.ndarray:
        return self._mean.copy()

    @property
    def var(self) -> np.ndarray:
        return self._m2 / self.count if self.count else np.zeros(self.n_bins)

    @property
    def std(self) -> np.ndarray:
        return np.sqrt(self.var)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly (plain lists)."""
        return {
            "n_bins": self.n_bins,
            "count": int(self.count),
            "mean": self._mean.tolist(),
            "m2": self._m2.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NormStats:
        s = cls(int(d["n_bins"]))
        s.count = int(d["count"])
        s._mean = np.asarray(d["mean"], dtype=np.float64).reshape(s.n_bins)
        s._m2 = np.asarray(d["m2"], dtype=np.float64).reshape(s.n_bins)
        return s
