"""Recall's coarse pass over a model's retrieval heads only: the scoring, the files, the engine."""

from __future__ import annotations

import json

import numpy as np
import pytest
from planted import planted

from edge_namm import NammLlama
from edge_namm.engine import EngineConfigError
from edge_namm.engine.recall import CANDIDATES, _grouped, cold_scores, hot_scores, token_scores
from edge_namm.engine.retrieval_heads import (
    FILE_GLOB,
    find_heads_file,
    fingerprint,
    heads_mask,
    resolve_recall_heads,
    write_heads_file,
)
from edge_namm.scorers.default import MODELS_DIR

META = {
    "general.architecture": "llama",
    "general.name": "Tiny",
    "llama.block_count": "2",
    "llama.attention.head_count": "4",
    "llama.attention.head_count_kv": "2",
    "llama.embedding_length": "16",
}


def _planted_grouped(n: int, needle: int):
    """planted() with the queries grouped by KV head, as token_scores takes them."""
    queries, scales, keys, n_head_kv = planted(n, needle)
    return _grouped(queries, scales, n_head_kv), keys, n_head_kv


@pytest.mark.parametrize("dtype", [np.float16, np.float32])
@pytest.mark.parametrize("marked", [[(1, 1)], [(0, 0), (1, 1)], [(0, 1)], [(0, 0), (0, 1)]])
def test_token_scores_take_the_max_over_the_marked_pairs_only(dtype, marked):
    q, keys, g = _planted_grouped(300, needle=40)
    keys = keys.astype(dtype)
    _, lse = hot_scores(q, keys[:, :50].astype(np.float32), g)
    mask = heads_mask(marked, 2, g)
    d = keys.shape[2] // g
    k32 = keys.astype(np.float32)
    reference = np.max(
        [
            (q[lay, h] @ k32[lay, :, h * d : (h + 1) * d].T - lse[lay, h][:, None]).max(axis=0)
            for lay, h in marked
        ],
        axis=0,
    )
    np.testing.assert_allclose(token_scores(q, keys, lse, g, mask), reference, rtol=1e-5, atol=1e-5)


def test_the_coarse_pass_finds_a_needle_through_its_head_and_misses_it_without():
    n = CANDIDATES * 16  # the coarse pass keeps 1 in 16: noise lets the needle through rarely
    q, keys, g = _planted_grouped(n + 100, needle=100 + 5000)  # a token the coarse pass reads
    hot, cold = keys[:, :100], keys[:, 100:].astype(np.float16)
    _, lse = hot_scores(q, hot, g)
    window = q.shape[2] // 2
    with_it = heads_mask([(1, 1), (0, 0)], 2, g)
    found = cold_scores(q, lse, cold, g, window, coarse_heads=with_it)
    assert int(np.argmax(found)) == 5000
    # exact scoring of the candidates still reads every pair
    exact = token_scores(q, cold, lse, g)
    finite = np.isfinite(found)
    np.testing.assert_allclose(found[finite], exact[finite], rtol=1e-5, atol=1e-5)
    without = heads_mask([(0, 0)], 2, g)  # the coarse pass then ranks the needle among noise
    missed = cold_scores(q, lse, cold, g, window, coarse_heads=without)
    assert np.isneginf(missed[5000]) and int(np.argmax(missed)) != 5000


def test_a_heads_file_applies_to_its_model_only(tmp_path):
    path = tmp_path / "recall-heads-tiny.json"
    write_heads_file(path, META, [(1, 1), (0, 0)], {"rule": "test"})
    mask, source = resolve_recall_heads(str(path), META, 2, 2)
    assert mask.tolist() == [[True, False], [False, True]]
    assert "2 of 4 heads" in source
    # "auto" finds it by the model's fingerprint; the quantization does not matter
    assert find_heads_file({**META, "general.file_type": "3"}, tmp_path) == path
    auto, _ = resolve_recall_heads("auto", META, 2, 2, folder=tmp_path)
    assert np.array_equal(auto, mask)
    other = {**META, "general.name": "Other"}
    assert resolve_recall_heads("auto", other, 2, 2, folder=tmp_path)[0] is None
    with pytest.raises(EngineConfigError, match="not for this model"):
        resolve_recall_heads(str(path), other, 2, 2)
    assert resolve_recall_heads("all", META, 2, 2) == (None, "all heads")


@pytest.mark.parametrize(
    "spec, match",
    [
        ([(2, 0)], "outside this model's 2 layers x 2 KV heads"),
        ([(0, 0, 1)], r"\(layer, KV head\) pairs"),
        ([], "the list is empty"),
        ("missing.json", "cannot read recall heads"),
    ],
)
def test_bad_recall_heads_are_refused_with_what_to_do(tmp_path, spec, match):
    if spec == "missing.json":
        spec = str(tmp_path / spec)
    with pytest.raises(EngineConfigError, match=match):
        resolve_recall_heads(spec, META, 2, 2)


def test_a_file_that_is_not_a_heads_file_is_refused(tmp_path):
    path = tmp_path / "scorer.json"
    path.write_text(json.dumps({"type": "mlp"}))
    with pytest.raises(EngineConfigError, match="not a recall-heads file"):
        resolve_recall_heads(str(path), META, 2, 2)


def test_the_engine_reads_the_heads_it_is_given(tiny_model):
    llm = NammLlama(tiny_model, policy="streaming", budget=224, update_interval=32, chunk=32,
                    n_threads=1, recall=True, recall_heads=[(0, 0)])  # fmt: skip
    try:
        mem = llm.memory
        assert mem.coarse_heads.sum() == 1 and mem.coarse_heads[0, 0]
        assert llm.recall_heads == f"1 of {mem.coarse_heads.size} heads (given)"
    finally:
        llm.close()
    llm = NammLlama(tiny_model, policy="streaming", budget=224, update_interval=32, chunk=32,
                    n_threads=1, recall=True)  # fmt: skip
    try:  # no calibration ships for the tiny model: every head
        assert llm.memory.coarse_heads is None
        assert llm.recall_heads == "all heads (no calibration for this model)"
    finally:
        llm.close()


def test_the_shipped_calibration_is_found_for_smollm2(model_path):
    import llama_cpp

    meta = llama_cpp.Llama(model_path, vocab_only=True, verbose=False).metadata
    path = find_heads_file(meta)
    assert path is not None and path.parent == MODELS_DIR
    mask, source = resolve_recall_heads("auto", meta, 30, 3)
    assert 0 < mask.sum() < mask.size and path.name in source
    assert json.loads(path.read_text())["model"] == fingerprint(meta)


@pytest.mark.parametrize("heads", ["all", [(0, 0)]])
def test_recall_over_a_large_cold_store_through_chosen_heads_keeps_the_budget(
    tiny_model, heads, monkeypatch
):
    from edge_namm.engine import recall

    monkeypatch.setattr(recall, "CANDIDATES", 256)  # a "large" store without a long prefill
    llm = NammLlama(tiny_model, policy="streaming", budget=224, update_interval=32, chunk=32,
                    n_threads=1, recall=True, recall_heads=heads)  # fmt: skip
    try:
        text = b"edge devices run small language models with a bounded memory of what was said "
        tokens = llm.tokenize(text * 100)[:640]
        llm.eval(tokens[:-40])
        assert len(llm.memory.cold) > recall.CANDIDATES  # the coarse pass runs
        recalled = llm.stats.tokens_recalled
        llm.eval(tokens[-40:])
        assert llm.stats.recalls >= 1 and llm.stats.tokens_recalled >= recalled
        assert llm.memory.view().n <= 224 + 32
    finally:
        llm.close()


@pytest.mark.parametrize("path", sorted(MODELS_DIR.glob(FILE_GLOB)), ids=lambda p: p.name)
def test_every_shipped_heads_file_is_valid_and_documented(path):
    """A calibration in models/ loads, says how it was found and is described in its README."""
    from edge_namm.engine.retrieval_heads import read_heads_file

    data = read_heads_file(path)
    assert data["heads"] and data["provenance"].get("command") and data["provenance"].get("rule")
    assert data["model"].get("general.name")
    assert f"`{path.name}`" in (MODELS_DIR / "README.md").read_text(encoding="utf-8")


def test_the_engine_refuses_heads_made_for_another_model(tiny_model, tmp_path):
    path = tmp_path / "recall-heads-other.json"
    write_heads_file(path, {**META, "general.name": "Other"}, [(0, 0)], {"rule": "test"})
    with pytest.raises(EngineConfigError, match="not for this model"):
        NammLlama(tiny_model, policy="streaming", budget=224, update_interval=32, chunk=32,
                  n_threads=1, recall=True, recall_heads=str(path))  # fmt: skip
