"""Key geometry as NAMM input: key norm, key distinctiveness and value norm per row and token.

With ``FeatureConfig(geometry=True)`` (recorded in the scorer file) every scorer reads 28 inputs
instead of 25; a trained 25-input scorer widens with zero weights on the new ones and scores
exactly as before, so training can start from it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_namm import NammLlama
from edge_namm.features import FeatureConfig, key_geometry, raw_features, standardise_rows
from edge_namm.policies import NammPolicy
from edge_namm.scorers import SCORERS, load_scorer, save_scorer
from edge_namm.scorers.registry import zero_scorer
from edge_namm.scorers.runtime import compile_scorer
from edge_namm.train.subspace import bam_diagonal

GEO = FeatureConfig(geometry=True)


def _random_scorer(type_name: str, seed: int = 0):
    base = zero_scorer(type_name)
    rng = np.random.default_rng(seed)
    return base.with_params(rng.normal(scale=0.3, size=base.n_params))


def _features(rows: int = 6, n: int = 200, seed: int = 1):
    rng = np.random.default_rng(seed)
    spec = rng.random((rows, n, 17)).astype(np.float32)
    ages = np.arange(n)[::-1]
    geometry = rng.normal(size=(rows, n, 3)).astype(np.float32)
    return raw_features(spec, ages), raw_features(spec, ages, GEO, geometry)


def test_key_geometry_reads_norms_and_singles_out_the_odd_key():
    rng = np.random.default_rng(0)
    n_layer, n, heads, d = 2, 50, 3, 8
    direction = rng.normal(size=d)
    keys = np.tile(direction, (n_layer, n, heads)) + 0.01 * rng.normal(size=(n_layer, n, heads * d))
    keys[:, 17] = np.tile(-direction, heads)  # one key points the other way in every head
    values = rng.normal(size=(n_layer, n, heads * d)) * 2.0
    geo = key_geometry(keys, values, heads)
    assert geo.shape == (n_layer * heads, n, 3)
    k = keys.reshape(n_layer, n, heads, d).transpose(0, 2, 1, 3).reshape(-1, n, d)
    v = values.reshape(n_layer, n, heads, d).transpose(0, 2, 1, 3).reshape(-1, n, d)
    np.testing.assert_allclose(geo[..., 0], np.log(np.linalg.norm(k, axis=-1)), rtol=1e-5)
    np.testing.assert_allclose(geo[..., 2], np.log(np.linalg.norm(v, axis=-1)), rtol=1e-5)
    assert (geo[..., 1].argmax(axis=1) == 17).all()
    z = standardise_rows(geo)
    np.testing.assert_allclose(z.mean(axis=1), 0.0, atol=1e-4)
    np.testing.assert_allclose(z.std(axis=1), 1.0, atol=1e-3)


def test_geometry_follows_the_spectrogram_and_is_required():
    narrow, wide = _features()
    assert narrow.shape[-1] == 25 and wide.shape[-1] == 28
    np.testing.assert_array_equal(wide[..., :25], narrow)
    with pytest.raises(ValueError, match="pass geometry_rows"):
        raw_features(np.zeros((2, 5, 17)), np.arange(5), GEO)
    with pytest.raises(ValueError, match="geometry_rows must be"):
        raw_features(np.zeros((2, 5, 17)), np.arange(5), GEO, np.zeros((2, 4, 3)))


@pytest.mark.parametrize("type_name", sorted(SCORERS))
def test_a_widened_scorer_scores_exactly_as_before(type_name, tmp_path):
    scorer = _random_scorer(type_name)
    wide = scorer.with_geometry()
    assert wide.n_features == 28 and wide.feature_config["geometry"] is True
    assert wide.n_params == SCORERS[type_name].param_count(28) > scorer.n_params
    narrow_x, wide_x = _features()
    np.testing.assert_allclose(wide.score(wide_x), scorer.score(narrow_x), rtol=1e-4, atol=1e-4)
    # the new inputs count once their weights move: a scorer that reads geometry, reads it
    moved = wide.with_params(np.asarray(wide.params) + 0.5)
    assert not np.allclose(moved.score(wide_x), scorer.score(narrow_x), atol=1e-3)
    onnx = compile_scorer(moved, "onnx")
    np.testing.assert_allclose(onnx.score(wide_x), moved.score(wide_x), rtol=1e-4, atol=1e-4)
    save_scorer(moved, tmp_path / "g.json")
    back = load_scorer(tmp_path / "g.json")
    assert back.n_params == moved.n_params
    np.testing.assert_array_equal(back.params, moved.params)
    with pytest.raises(ValueError, match=r"\[rows, cells, 28\].*reads 28"):
        moved.score(narrow_x)
    with pytest.raises(ValueError, match="already"):
        moved.with_geometry()


def test_a_file_whose_params_do_not_fit_its_features_is_refused(tmp_path):
    save_scorer(zero_scorer("mlp").with_geometry(), tmp_path / "g.json")
    doc = json.loads((tmp_path / "g.json").read_text())
    doc["features"]["geometry"] = False  # 29 parameters no longer fit 25 inputs
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="parameter count mismatch.*expected 26"):
        load_scorer(tmp_path / "bad.json")
    doc["features"]["geometry"] = "yes"
    (tmp_path / "bad.json").write_text(json.dumps(doc))
    with pytest.raises(ValueError, match="'geometry' must be true or false"):
        load_scorer(tmp_path / "bad.json")


def test_the_default_scorer_widens_inside_the_diagonal_subspace():
    default = load_scorer("models/namm-bamw-3budget-g9-smollm2-135m.json")
    wide = default.with_geometry()
    sub = bam_diagonal(np.asarray(wide.params, np.float64))
    assert sub.dims == 84 + 3 * 3  # a residual, a gate and a score weight per new input
    np.testing.assert_array_equal(sub.embed(sub.project(sub.offset)), sub.offset)
    np.testing.assert_array_equal(sub.offset.astype(np.float32), wide.params)


def _engine(path: str, scorer) -> NammLlama:
    return NammLlama(
        path, policy=NammPolicy(scorer=scorer), budget=96, update_interval=32, chunk=32,
        n_threads=1, seed=0,
    )  # fmt: skip


def _tokens(llm: NammLlama, n: int) -> list[int]:
    text = b"a small model keeps a bounded memory of what it was told and recalls it later "
    return llm.tokenize(text * (n // 8 + 2))[:n]


def test_the_engine_feeds_geometry_from_its_own_keys_and_values(any_tiny):
    """A widened scorer keeps exactly what its original keeps (the engine builds 28 inputs from
    the cache's keys and values, llama and iSWA shapes); a scorer that weighs only key
    distinctiveness keeps other tokens."""
    base = _random_scorer("mlp", seed=4)
    linear_distinct = np.zeros(29)
    linear_distinct[26] = 1.0  # the key-distinctiveness input; bias 0: below-average keys go
    kept = {}
    for name, scorer in {
        "base": base,
        "wide": base.with_geometry(),
        "distinct": zero_scorer("mlp").with_geometry().with_params(linear_distinct),
    }.items():
        llm = _engine(any_tiny, scorer)
        try:
            assert llm.memory.features.config.geometry is (name != "base")
            llm.eval(_tokens(llm, 160))
            kept[name] = llm.kept_positions().tolist()
            assert llm.memory.stats.cells_used <= 96 + 32
        finally:
            llm.close()
    assert kept["wide"] == kept["base"]
    assert kept["distinct"] != kept["base"]


def test_export_writes_and_checks_a_geometry_scorer(tmp_path):
    from click.testing import CliRunner

    from edge_namm.cli.main import cli

    scorer = _random_scorer("bam-window").with_geometry()
    save_scorer(scorer.with_params(np.asarray(scorer.params) + 0.1), tmp_path / "g.json")
    args = ["export", "--scorer", str(tmp_path / "g.json"), "--out", str(tmp_path / "g.onnx")]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    assert "4661 params" in result.output
