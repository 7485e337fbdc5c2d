"""numpy reference scorers, the scorer file and aggregation (docs/DESIGN.md §1.2-1.4)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scorer_cases import random_scorer, raw_features

from edge_namm.scorers import (
    DEFAULT_FEATURE_CONFIG,
    SCORERS,
    BAMScorer,
    BAMWindowScorer,
    LinearScorer,
    ScorerFileError,
    TwoLayerScorer,
    aggregate,
    load_scorer,
    save_scorer,
    zero_scorer,
)
from edge_namm.scorers.bam import bam_params_from_linear, bam_scores

TYPES = sorted(SCORERS)


# -- parameter counts, zero scorer -----------------------------------------------------------
def test_param_counts() -> None:
    assert BAMScorer.n_params == 4172
    assert BAMWindowScorer.n_params == 4172
    assert LinearScorer.n_params == 26
    assert TwoLayerScorer.n_params == 676
    assert SCORERS == {
        "bam": BAMScorer,
        "bam-window": BAMWindowScorer,
        "mlp": LinearScorer,
        "mlp2": TwoLayerScorer,
    }


@pytest.mark.parametrize("type_name", TYPES)
def test_zero_params_give_zero_scores(type_name: str) -> None:
    sc = zero_scorer(type_name)
    assert sc.params.shape == (sc.n_params,) and not sc.params.any()
    assert np.array_equal(sc.norm_mean, np.zeros(17)) and np.array_equal(sc.norm_std, np.ones(17))
    # Zero params must give exactly 0 whatever the normalisation.
    sc = random_scorer(type_name).with_params(np.zeros(sc.n_params))
    out = sc.score(raw_features(3, 40))
    assert out.dtype == np.float32 and out.shape == (3, 40)
    assert np.all(out == 0.0)


def test_zero_scorer_unknown_type_lists_valid() -> None:
    with pytest.raises(KeyError, match="bam-window"):
        zero_scorer("nope")


def test_normalisation_applies_only_to_spectrogram_dims() -> None:
    mean = np.arange(17, dtype=np.float32)
    std = np.full(17, 2.0, np.float32)
    std[3] = 0.0  # floored at 1e-7
    x = raw_features(2, 5)
    for k in (0, 7, 8, 11, 24):
        w = np.zeros(26, np.float32)
        w[k] = 1.0
        out = LinearScorer(w, mean, std).score(x)
        if k < 8:
            expect = x[..., k]
        else:
            expect = (x[..., k] - mean[k - 8]) / max(std[k - 8], 1e-7)
        np.testing.assert_allclose(out, expect, rtol=1e-6)


def test_mlp_formulas() -> None:
    sc = random_scorer("mlp2")
    x = raw_features(2, 9)
    z = sc.normalize(x).astype(np.float64)
    p = sc.params.astype(np.float64)
    w1, b1, w2, b2 = p[:625].reshape(25, 25), p[625:650], p[650:675], p[675]
    h = z + np.maximum(z @ w1 + b1, 0)
    np.testing.assert_allclose(sc.score(x), h @ w2 + b2, rtol=1e-5, atol=1e-5)
    lin = random_scorer("mlp")
    z = lin.normalize(x).astype(np.float64)
    lp = lin.params.astype(np.float64)
    np.testing.assert_allclose(lin.score(x), z @ lp[:25] + lp[25], rtol=1e-5, atol=1e-5)


# -- BAM ----------------------------------------------------------------------------------------
def bam_brute_force(z: np.ndarray, params: np.ndarray, window: int | None) -> np.ndarray:
    """Independent per-row, per-token float64 BAM following docs/DESIGN.md §1.3 literally."""
    p = params.astype(np.float64)
    w_qkv = p[0:2400].reshape(25, 96)
    b_qkv = p[2400:2496]
    w_o = p[2496:4096].reshape(32, 50)
    b_o = p[4096:4146]
    w_s = p[4146:4171]
    b_s = p[4171]
    r_count, n, _ = z.shape
    out = np.zeros((r_count, n))
    for r in range(r_count):
        xr = z[r].astype(np.float64)
        qkv = xr @ w_qkv + b_qkv
        q, k, v = qkv[:, :32], qkv[:, 32:64], qkv[:, 64:]
        for i in range(n):
            last = n - 1 if window is None else min(n - 1, i + window)
            js = range(i, last + 1)
            logits = np.array([q[i] @ k[j] / math.sqrt(32) for j in js])
            wts = np.exp(logits - logits.max())
            wts /= wts.sum()
            attn = sum(wt * v[j] for wt, j in zip(wts, js, strict=True))
            y = attn @ w_o + b_o
            h = xr[i] * (1 + y[25:]) + y[:25]
            out[r, i] = h @ w_s + b_s
    return out


@pytest.mark.parametrize("window", [None, 0, 3, 20])
@pytest.mark.parametrize("n", [1, 2, 37])
def test_bam_matches_brute_force(n: int, window: int | None) -> None:
    if window is None:
        sc = random_scorer("bam", seed=3)
    else:
        sc = random_scorer("bam-window", seed=3, options={"window": window})
    x = raw_features(3, n, seed=4)
    ref = bam_brute_force(sc.normalize(x), sc.params, window)
    np.testing.assert_allclose(sc.score(x), ref, rtol=1e-4, atol=1e-4)
    # Tiny blocks (16 queries) exercise the block boundaries of the memory-bounded loop.
    got = bam_scores(sc.normalize(x), sc.params, window, block_elems=1)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_bam_window_covering_everything_equals_bam() -> None:
    full = random_scorer("bam", seed=5)
    win = BAMWindowScorer(full.params, full.norm_mean, full.norm_std, options={"window": 64})
    x = raw_features(2, 60)
    np.testing.assert_allclose(win.score(x), full.score(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("type_name", ["bam", "bam-window"])
def test_bam_contains_the_linear_scorer(type_name: str) -> None:
    lin = random_scorer("mlp", seed=8)
    bam = SCORERS[type_name](bam_params_from_linear(lin.params), lin.norm_mean, lin.norm_std)
    x = raw_features(3, 50, seed=9)
    np.testing.assert_allclose(bam.score(x), lin.score(x), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="26 parameters"):
        bam_params_from_linear(np.zeros(25))


@pytest.mark.parametrize("type_name", ["bam", "bam-window"])
def test_bam_backward_mask(type_name: str) -> None:
    opts = {"window": 8} if type_name == "bam-window" else None
    sc = random_scorer(type_name, seed=6, scale=0.1, options=opts)
    x = raw_features(2, 40, seed=7)
    base = sc.score(x)
    # Changing an older cell never changes newer cells' scores.
    older = x.copy()
    older[:, 10] += 3.0
    out = sc.score(older)
    np.testing.assert_array_equal(out[:, 11:], base[:, 11:])
    assert not np.allclose(out[:, 10], base[:, 10])
    # Changing a newer cell changes the older cells that can see it.
    newer = x.copy()
    newer[:, 30] += 3.0
    out = sc.score(newer)
    np.testing.assert_array_equal(out[:, 31:], base[:, 31:])
    seen = slice(22, 30) if type_name == "bam-window" else slice(0, 30)
    assert np.all(np.abs(out[:, seen] - base[:, seen]) > 1e-6)
    if type_name == "bam-window":  # cells more than `window` older do not see it
        np.testing.assert_array_equal(out[:, :22], base[:, :22])


def test_bam_window_option_validation() -> None:
    assert BAMWindowScorer().window == 256
    assert BAMScorer().window is None
    with pytest.raises(ValueError, match="window"):
        BAMWindowScorer(options={"window": -1})
    with pytest.raises(ValueError, match="unknown option"):
        BAMScorer(options={"window": 4})


def test_with_params_makes_new_instance() -> None:
    sc = random_scorer(
        "bam-window", options={"window": 5}, aggregation="max", provenance={"seed": 1}
    )
    new = sc.with_params(np.ones(sc.n_params))
    assert new is not sc and type(new) is type(sc)
    assert np.all(new.params == 1.0) and not np.all(sc.params == 1.0)
    assert np.array_equal(new.norm_mean, sc.norm_mean) and np.array_equal(new.norm_std, sc.norm_std)
    assert new.options == {"window": 5} and new.aggregation == "max"
    assert new.provenance == {"seed": 1}
    with pytest.raises(ValueError, match="expected 4172"):
        sc.with_params(np.zeros(26))


def test_score_input_checks() -> None:
    sc = zero_scorer("mlp")
    with pytest.raises(ValueError, match=r"\[rows, cells, 25\]"):
        sc.score(np.zeros((4, 25), np.float32))
    with pytest.raises(ValueError, match=r"\[rows, cells, 25\]"):
        sc.score(np.zeros((1, 4, 24), np.float32))
    assert sc.score(np.zeros((3, 0, 25))).shape == (3, 0)
    assert random_scorer("bam").score(np.zeros((2, 0, 25))).shape == (2, 0)
    out = random_scorer("mlp").score(raw_features(1, 3).astype(np.float64))
    assert out.dtype == np.float32


# -- aggregation ----------------------------------------------------------------------------------
def test_aggregate() -> None:
    s = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    np.testing.assert_allclose(aggregate(s, "mean"), s.reshape(6, 4).mean(0))
    np.testing.assert_array_equal(aggregate(s, "max"), s[1, 2])
    np.testing.assert_array_equal(aggregate(s.reshape(6, 4), "min"), s[0, 0])
    assert aggregate(s).dtype == np.float32 and aggregate(s).shape == (4,)
    with pytest.raises(ValueError, match="mean"):
        aggregate(s, "median")
    with pytest.raises(ValueError):
        aggregate(s[0, 0])


# -- scorer file ----------------------------------------------------------------------------------
@pytest.mark.parametrize("type_name", TYPES)
def test_file_round_trip(type_name: str, tmp_path) -> None:
    opts = {"window": 7} if type_name == "bam-window" else None
    sc = random_scorer(type_name, options=opts, aggregation="min", provenance={"seed": 3})
    path = tmp_path / "s.json"
    save_scorer(sc, path, provenance={"command": "edge-namm train", "seed": 4})
    doc = json.loads(path.read_text())
    assert doc["format"] == "edge-namm-scorer" and doc["version"] == 1
    assert doc["type"] == type_name and doc["n_params"] == sc.n_params
    assert doc["features"] == DEFAULT_FEATURE_CONFIG
    back = load_scorer(path, expect_features=dict(DEFAULT_FEATURE_CONFIG))
    assert type(back) is type(sc)
    assert np.array_equal(back.params, sc.params)  # bit exact
    assert np.array_equal(back.norm_mean, sc.norm_mean)
    assert np.array_equal(back.norm_std, sc.norm_std)
    assert back.options == sc.options and back.aggregation == "min"
    assert back.provenance == {"seed": 4, "command": "edge-namm train"}
    assert back.feature_config == DEFAULT_FEATURE_CONFIG
    x = raw_features(2, 12)
    np.testing.assert_array_equal(back.score(x), sc.score(x))


class _Cfg:
    """Stand-in for features.FeatureConfig: anything with to_dict() is accepted."""

    def __init__(self, **over) -> None:
        self.d = {**DEFAULT_FEATURE_CONFIG, **over}

    def to_dict(self) -> dict:
        return dict(self.d)


def _write(tmp_path, doc) -> str:
    p = tmp_path / "bad.json"
    p.write_text(doc if isinstance(doc, str) else json.dumps(doc))
    return str(p)


def _good_doc() -> dict:
    from edge_namm.scorers import scorer_to_dict

    return scorer_to_dict(random_scorer("mlp"))


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: "{not json", "not a JSON scorer file"),
        (lambda d: [1, 2], "not a JSON object"),
        (lambda d: {**d, "format": "gguf"}, "'format' is 'gguf'"),
        (lambda d: {k: v for k, v in d.items() if k != "format"}, "'format' is None"),
        (lambda d: {**d, "version": 2}, "unsupported scorer file version 2"),
        (lambda d: {**d, "type": "lstm"}, "unknown scorer type 'lstm'.*bam, bam-window, mlp, mlp2"),
        (lambda d: {**d, "n_params": 27}, "expected 26, got n_params=27"),
        (lambda d: {**d, "params": d["params"][:-1]}, "expected 26, got 25 values"),
        (lambda d: {**d, "type": "bam"}, "expected 4172, got n_params=26"),
        (
            lambda d: {**d, "normalization": {"mean": [0.0] * 16, "std": [1.0] * 17}},
            "17 means and 17 stds, got 16 means and 17 stds",
        ),
        (lambda d: {**d, "normalization": None}, "17 means and 17 stds"),
        (lambda d: {**d, "aggregation": "median"}, "'aggregation' is 'median'"),
        (lambda d: {**d, "features": {**d["features"], "n_fft": 64}}, "41 features"),
        (lambda d: {**d, "params": ["a"] * 26}, "non-numeric"),
        (lambda d: {**d, "params": [1e39] * 26}, "NaN or inf"),
        (lambda d: {**d, "options": {"window": 3}}, "unknown option"),
    ],
)
def test_bad_files(tmp_path, mutate, message) -> None:
    path = _write(tmp_path, mutate(_good_doc()))
    with pytest.raises(ScorerFileError, match=message) as info:
        load_scorer(path)
    assert isinstance(info.value, ValueError)
    assert path in str(info.value)


def test_feature_config_mismatch_names_keys(tmp_path) -> None:
    path = tmp_path / "s.json"
    save_scorer(random_scorer("mlp"), path)
    assert load_scorer(path, expect_features=_Cfg()).type_name == "mlp"
    with pytest.raises(ScorerFileError, match="feature configuration mismatch") as info:
        load_scorer(path, expect_features=_Cfg(hop=8, age_base=10000.0))
    msg = str(info.value)
    assert "hop (scorer 16, expected 8)" in msg and "age_base" in msg and "n_fft" not in msg
    with pytest.raises(ScorerFileError, match="extra"):
        load_scorer(path, expect_features={**DEFAULT_FEATURE_CONFIG, "extra": 1})
    # int vs float of the same value is not a mismatch
    assert load_scorer(path, expect_features={**DEFAULT_FEATURE_CONFIG, "n_fft": 32.0})


def test_save_refuses_non_finite(tmp_path) -> None:
    sc = random_scorer("mlp")
    sc.params.setflags(write=True)
    sc.params[0] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        save_scorer(sc, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()
