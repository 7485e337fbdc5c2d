"""Reconstruction attention as NAMM input: a repeat pass folded into the feature stream.

With ``FeatureConfig(repeat=True)`` (recorded in the scorer file) the engine asks the model to
repeat each interval before the update and folds those queries' attention into the STFT/EMA
state. The repeat must leave no trace besides the features: same cache, same logits.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from edge_namm import NammLlama
from edge_namm.features import FeatureConfig
from edge_namm.policies import NammPolicy
from edge_namm.scorers import DEFAULT_FEATURE_CONFIG, feature_config_diff, load_scorer, save_scorer
from edge_namm.scorers.registry import zero_scorer


def _engine(path: str, **kw) -> NammLlama:
    args = dict(policy="full", budget=224, update_interval=32, chunk=32, n_threads=1, seed=0)
    args.update(kw)
    return NammLlama(path, **args)


def _tokens(llm: NammLlama, n: int) -> list[int]:
    text = b"a small model keeps a bounded memory of what it was told and recalls it later "
    return llm.tokenize(text * (n // 8 + 2))[:n]


def _last_logits(llm: NammLlama) -> np.ndarray:
    return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).copy()


def test_repeat_pass_changes_features_only(any_tiny):
    plain = _engine(any_tiny, record_attention=True)
    rep = _engine(any_tiny, record_attention=True, feature_config=FeatureConfig(repeat=True))
    try:
        toks = _tokens(plain, 150)  # four updates, each with a repeat pass
        for llm in (plain, rep):
            llm.eval(toks)
        np.testing.assert_allclose(_last_logits(rep), _last_logits(plain), rtol=1e-4, atol=1e-4)
        assert rep.kept_positions().tolist() == plain.kept_positions().tolist()
        cells = plain.memory.occupied()
        assert rep.memory.occupied().tolist() == cells.tolist()
        a = plain.memory.features.spectrogram[:, :, cells]
        b = rep.memory.features.spectrogram[:, :, cells]
        assert not np.allclose(a, b), "the repeat's attention never reached the features"
        # no cell outside the cached tokens keeps state from the repeat's own tokens
        free = np.setdiff1d(np.arange(rep.memory.n_cells), cells)
        assert not rep.memory.features.spectrogram[:, :, free].any()
        assert not rep.memory.features.attention_sum[:, :, free].any()
    finally:
        plain.close()
        rep.close()


def test_a_scorer_trained_with_the_repeat_makes_namm_run_it(tiny_model):
    flagged = zero_scorer("mlp", feature_config={**DEFAULT_FEATURE_CONFIG, "repeat": True})
    assert NammPolicy(scorer=flagged).needs_repeat
    assert not NammPolicy(scorer=zero_scorer("mlp")).needs_repeat
    runs = []
    for scorer in (zero_scorer("mlp"), flagged):
        llm = _engine(tiny_model, policy=NammPolicy(scorer=scorer), budget=96)
        try:
            llm.eval(_tokens(llm, 150))
            assert llm.memory.features.config.repeat is scorer.feature_config["repeat"]
            assert llm.memory.stats.cells_used <= 96 + 32
            cells = llm.memory.occupied()
            runs.append(llm.memory.features.spectrogram[:, :, cells].sum())
        finally:
            llm.close()
    assert runs[0] != pytest.approx(runs[1])


def test_scorer_files_carry_the_flag_and_older_files_mean_no_repeat(tmp_path):
    flagged = zero_scorer("mlp", feature_config={**DEFAULT_FEATURE_CONFIG, "repeat": True})
    save_scorer(flagged, tmp_path / "r.json")
    assert load_scorer(tmp_path / "r.json").feature_config["repeat"] is True
    save_scorer(zero_scorer("mlp"), tmp_path / "old.json")
    doc = json.loads((tmp_path / "old.json").read_text())
    doc["features"].pop("repeat")  # as written before the flag existed
    (tmp_path / "old.json").write_text(json.dumps(doc))
    old = load_scorer(tmp_path / "old.json", expect_features=FeatureConfig())
    assert FeatureConfig.from_dict(old.feature_config) == FeatureConfig()
    assert feature_config_diff(old.feature_config, FeatureConfig()) == []
    assert feature_config_diff(flagged.feature_config, FeatureConfig()) == [
        "repeat (scorer True, expected False)"
    ]
    with pytest.raises(ValueError, match="repeat must be true or false"):
        FeatureConfig(repeat="yes")
