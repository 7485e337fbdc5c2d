"""The cold tier: evicted tokens kept byte-exact and recalled by the queries of a new prompt.

Tiny random GGUFs (llama and Gemma 3 iSWA shapes) check the mechanics exactly; the real SmolLM2
model checks that a fact evicted mid-context comes back when the question needs it.
"""

from __future__ import annotations

import numpy as np
import pytest
from planted import planted

from edge_namm import NammLlama, native
from edge_namm.engine import EngineConfigError
from edge_namm.engine.cold import ColdStoreError
from edge_namm.engine.heap import _TRIM, release_free_heap
from edge_namm.engine.recall import (
    CANDIDATES,
    RELEASE_EVERY,
    _grouped,
    as_float32,
    choose_swaps,
    cold_scores,
    hot_scores,
    pool_tiers,
    recall_scores,
    token_scores,
)


def _tokens(llm: NammLlama, n: int) -> list[int]:
    text = b"edge devices run small language models with a bounded memory of what was said "
    tokens = llm.tokenize(text * (n // 8 + 2))[:n]
    assert len(tokens) == n
    return tokens


def _last_logits(llm: NammLlama) -> np.ndarray:
    return np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),)).copy()


def _engine(path: str, **kw) -> NammLlama:
    args = dict(policy="full", budget=224, update_interval=32, chunk=32, n_threads=1, seed=0)
    args.update(kw)
    return NammLlama(path, **args)


# --- the pure scoring / selection rules -----------------------------------------------------
def test_recall_scores_single_out_the_key_a_query_points_at():
    queries, scales, keys, n_head_kv = planted(50, needle=17)
    hot, cold = recall_scores(queries, scales, keys[:, :20], keys[:, 20:], n_head_kv)
    assert hot.shape == (20,) and cold.shape == (30,)
    assert int(np.argmax(np.r_[hot, cold])) == 17
    # log-attention next to the hot tokens: the needle takes nearly all of it
    assert hot[17] > np.log(0.9) and np.all(hot <= 1e-5)


def test_a_large_cold_store_is_narrowed_without_losing_the_needle():
    n = CANDIDATES * 5
    queries, scales, keys, n_head_kv = planted(n + 100, needle=100 + 5000)
    hot_keys, cold_keys = keys[:, :100], keys[:, 100:].astype(np.float16)
    released = []
    _, cold = recall_scores(
        queries, scales, hot_keys, cold_keys, n_head_kv, release=lambda: released.append(1)
    )
    # a mapped store's pages are handed back as the coarse pass goes and after the gather of
    # its candidates, not only at the end
    assert len(released) == -(-n // RELEASE_EVERY) + 1 > 2
    q = _grouped(queries, scales, n_head_kv)
    _, lse = hot_scores(q, hot_keys, n_head_kv)
    exact = token_scores(q, cold_keys, lse, n_head_kv)
    assert int(np.argmax(cold)) == int(np.argmax(exact)) == 5000
    # only the coarse pass's candidates are scored, and those exactly
    finite = np.isfinite(cold)
    assert finite.sum() == CANDIDATES
    np.testing.assert_allclose(cold[finite], exact[finite], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("stride", [1, 2, 4])
def test_a_coarse_pass_over_every_sth_token_still_finds_a_phrase(stride):
    n = CANDIDATES * 5
    queries, scales, keys, n_head_kv = planted(n + 100, needle=100 + 5001)
    d = keys.shape[2] // n_head_kv
    keys[1, 100 + 5000 : 100 + 5000 + stride, d] = 5.0  # a phrase: the needle and its neighbours
    hot_keys, cold_keys = keys[:, :100], keys[:, 100:].astype(np.float16)
    q = _grouped(queries, scales, n_head_kv)
    _, lse = hot_scores(q, hot_keys, n_head_kv)
    cold = cold_scores(q, lse, cold_keys, n_head_kv, queries.shape[2], coarse_stride=stride)
    exact = token_scores(q, cold_keys, lse, n_head_kv)
    # the coarse pass read the phrase's first token; the tokens stored after it come along
    assert set(range(5000, 5000 + stride)) <= set(np.flatnonzero(np.isfinite(cold)).tolist())
    assert int(np.argmax(cold)) == int(np.argmax(exact))
    finite = np.isfinite(cold)
    assert finite.sum() == CANDIDATES
    np.testing.assert_allclose(cold[finite], exact[finite], rtol=1e-5, atol=1e-5)


def test_a_coarse_stride_that_does_not_divide_the_chunks_is_refused():
    queries, scales, keys, n_head_kv = planted(CANDIDATES + 200, needle=7)
    q = _grouped(queries, scales, n_head_kv)
    _, lse = hot_scores(q, keys[:, :100], n_head_kv)
    with pytest.raises(ValueError, match="coarse_stride must divide"):
        cold_scores(q, lse, keys[:, 100:], n_head_kv, queries.shape[2], coarse_stride=3)


def test_float16_keys_widen_exactly_for_every_bit_pattern():
    every = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    block = np.stack([every, every[::-1]], axis=1)  # rows of two, like a slice of a wider store
    wide = as_float32(block)
    assert wide.dtype == np.float32
    np.testing.assert_array_equal(wide, block.astype(np.float32))  # NaNs compare equal here
    # a non-contiguous slice (a layer's tile of a mapped store is one) widens the same way
    np.testing.assert_array_equal(as_float32(block[::3]), block[::3].astype(np.float32))


def test_hot_scores_match_the_reference_softmax():
    queries, scales, keys, n_head_kv = planted(40, needle=7)
    q = _grouped(queries, scales, n_head_kv)
    hot, lse = hot_scores(q, keys, n_head_kv)
    n_layer, _, n_q, d = q.shape
    expected = np.full(40, -np.inf)
    for layer in range(n_layer):
        for g in range(n_head_kv):
            logits = q[layer, g].astype(np.float64) @ keys[layer][:, g * d : (g + 1) * d].T
            log_attn = logits - np.log(np.exp(logits).sum(axis=1, keepdims=True))
            np.testing.assert_allclose(
                lse[layer, g],
                logits.max(1) + np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)),
                rtol=1e-5,
            )
            expected = np.maximum(expected, log_attn.max(axis=0))
    np.testing.assert_allclose(hot, expected, rtol=1e-4, atol=1e-5)


def test_a_fact_split_between_the_tiers_is_pooled_across_them():
    # the key ("tulip", logical 10) stayed hot and scores high; its value (11-16) went cold
    hot_logical = np.array([0, 7, 10, 40])
    hot = np.array([-9.0, -9.0, 3.0, -9.0])
    cold_logical = np.array([11, 12, 16, 30, 5])
    cold = np.full(5, -9.0)
    pooled_hot, pooled_cold = pool_tiers(hot, hot_logical, cold, cold_logical)
    # the value follows the key and comes back with it; far tokens do not
    np.testing.assert_array_equal(pooled_cold, [3.0, 3.0, 3.0, -9.0, -9.0])
    # a hot token up to 4 before a high scorer shares its score and is not swapped out
    np.testing.assert_array_equal(pooled_hot, [-9.0, 3.0, 3.0, -9.0])


def test_choose_swaps_only_trades_up_and_never_moves_protected():
    hot = np.array([5.0, 0.1, 0.2, 0.9, 0.05])
    cold = np.array([0.15, 0.8, 0.01])
    protected = np.array([False, False, False, False, True])
    out_hot, in_cold = choose_swaps(hot, cold, protected)
    # cold 0.8 beats hot 0.1; cold 0.15 beats hot 0.2? no -> one swap
    assert out_hot.tolist() == [1] and in_cold.tolist() == [1]
    assert len(choose_swaps(hot, np.array([0.0]), protected)[0]) == 0


# --- native export / import ------------------------------------------------------------------
def test_export_import_round_trip_is_byte_exact(any_tiny):
    llm = _engine(any_tiny)
    try:
        llm.eval(_tokens(llm, 100))
        ctx, layout = llm._ctx.ctx, native.cell_layout(llm._ctx.ctx)
        cells = llm.memory.view().cells[20:40]
        k, v = native.export_cells(ctx, cells, layout)
        assert k.shape == (layout.n_layer, 20, layout.k_bytes) and k.any() and v.any()
        positions = native.cell_positions(ctx)[cells]
        native.remove_positions(ctx, positions)
        fresh = native.import_cells(ctx, positions, k, v)
        assert sorted(native.cell_positions(ctx)[fresh]) == sorted(positions)
        k2, v2 = native.export_cells(ctx, fresh, layout)
        assert np.array_equal(k, k2) and np.array_equal(v, v2)
        with pytest.raises(native.NoFreeCellsError):
            native.import_cells(
                ctx,
                np.arange(1000, 2000),
                *native.export_cells(ctx, np.zeros(1000, dtype=np.int32), layout),
            )
    finally:
        llm.close()


def test_span_evicted_to_cold_and_recalled_gives_the_same_logits(any_tiny):
    """Against a cache that never evicted: the recalled K/V are the very bytes, in other cells.
    The span lies outside Gemma 3's 64-token window: its windowed layers never see it again
    (recall restores the full-attention layers, where old tokens live)."""
    tokens = _tokens(_probe := _engine(any_tiny), 120)
    _probe.close()
    ref = _engine(any_tiny)
    ours = _engine(any_tiny, recall=True)
    try:
        ref.eval(tokens)
        ref.eval([tokens[5]])
        want = _last_logits(ref)

        ours.eval(tokens)
        span = np.arange(10, 50)
        assert ours.memory.evict_positions(span) == len(span)
        assert ours.stats.cold_tokens == len(span)
        assert (
            ours.stats.cold_bytes >= len(span) * native.cell_layout(ours._ctx.ctx).bytes_per_token
        )
        # without the span the next logits differ (the test can fail) ...
        state = ours.save_state()
        ours.eval([tokens[5]])
        assert not np.allclose(_last_logits(ours), want, atol=1e-4)
        ours.load_state(state)
        # ... and with it recalled they are the same
        assert ours.memory.restore() == len(span)
        assert ours.stats.cold_tokens == 0
        assert sorted(ours.kept_positions().tolist()) == list(range(len(tokens)))
        ours.eval([tokens[5]])
        np.testing.assert_allclose(_last_logits(ours), want, atol=1e-4, rtol=1e-4)
    finally:
        ref.close()
        ours.close()


def test_recall_keeps_hot_size_and_accounts_for_every_token(any_tiny):
    """A streaming cache evicts the middle; each new prompt swaps, never grows the hot cache,
    and every token seen is hot, cold or (with cold_budget) counted as forgotten."""
    llm = _engine(any_tiny, policy="streaming", budget=96, recall=True, policy_kwargs={"n_sink": 4})
    peaks: list[int] = []
    llm.memory.on_update.append(lambda view, evicted: peaks.append(view.n - len(evicted)))
    try:
        tokens = _tokens(llm, 400)
        llm.eval(tokens[:300])
        hot_before = len(llm.kept_positions())
        llm.eval(tokens[300:340])
        st = llm.stats
        assert st.recalls >= 1 and st.cold_tokens > 0
        assert len(llm.kept_positions()) <= max(hot_before, 96 + 32)
        assert max(peaks) <= 96
        hot = set(llm.kept_positions().tolist())
        cold = set(llm.memory.cold.logical.tolist())
        assert not hot & cold
        assert hot | cold == set(range(340))
        out = llm.create_completion(tokens[340:360], max_tokens=8, temperature=0.0)
        assert out["choices"][0]["text"] is not None
    finally:
        llm.close()


@pytest.mark.parametrize("recall_max, cap", [(0.25, 24), (10, 10)])
def test_recall_max_caps_each_prompts_recall_in_tokens_or_as_a_share(tiny_model, recall_max, cap):
    llm = _engine(tiny_model, policy="streaming", budget=96, recall=True, recall_max=recall_max)
    try:
        assert llm.recall_max == cap
        tokens = _tokens(llm, 400)
        llm.eval(tokens[:300])
        before = llm.stats.tokens_recalled
        assert before <= cap * llm.stats.recalls
        llm.eval(tokens[300:340])
        assert 0 < llm.stats.tokens_recalled - before <= cap
    finally:
        llm.close()


def test_an_edited_message_leaves_no_cold_copy_of_the_old_branch(tiny_model):
    """llama-cpp-python reuses the longest common prefix: a message edited (or regenerated)
    moves the history back, and tokens the old branch sent to the cold store must not be
    recalled into the new one."""
    llm = _engine(tiny_model, policy="streaming", budget=96, recall=True)
    try:
        tokens = _tokens(llm, 400)
        n0 = 300
        llm.create_completion(tokens[:390], max_tokens=1, temperature=0.0)
        assert (llm.memory.cold.logical >= n0).any()  # the old branch left cold copies
        edited = tokens[:n0] + tokens[390:300:-1]
        llm.create_completion(edited, max_tokens=1, temperature=0.0)
        assert llm.stats.tokens_seen < 390 + 100  # the common prefix was reused, not re-read
        cold = llm.memory.cold
        branch = cold.logical >= n0
        assert np.array_equal(cold.tokens[branch], llm.input_ids[cold.logical[branch]])
        hot = set(llm.kept_positions().tolist())
        assert not hot & set(cold.logical.tolist())
        assert hot | set(cold.logical.tolist()) == set(range(llm.n_tokens))
    finally:
        llm.close()


def test_cold_budget_forgets_lowest_scored_and_counts_them(tiny_model):
    llm = _engine(tiny_model, policy="streaming", budget=96, recall=True, cold_budget=50)
    try:
        llm.eval(_tokens(llm, 300))
        assert llm.stats.cold_tokens == 50
        assert llm.stats.tokens_forgotten == llm.stats.tokens_evicted - 50 > 0
        assert "cold 50 tok" in llm.stats.status_line()
    finally:
        llm.close()


def test_cold_dir_spills_to_memory_mapped_files(tiny_model, tmp_path):
    llm = _engine(tiny_model, policy="streaming", budget=96, recall=True, cold_dir=str(tmp_path))
    try:
        llm.eval(_tokens(llm, 300))
        assert llm.stats.cold_on_disk and llm.stats.cold_tokens > 0
        files = list(tmp_path.rglob("*.bin"))
        # K, V and scoring keys: not one file per token
        assert {f.name for f in files} == {"k.bin", "v.bin", "keys.bin"}
        assert sum(f.stat().st_size for f in files) >= llm.memory.cold.kv_bytes
    finally:
        llm.close()
    assert not list(tmp_path.rglob("*.bin"))  # closing removes its files


def test_unwritable_cold_dir_warns_and_keeps_everything_in_ram(tiny_model, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.warns(RuntimeWarning, match="cannot use cold_dir"):
        llm = _engine(tiny_model, policy="streaming", budget=96, recall=True, cold_dir=str(blocker))
    try:
        llm.eval(_tokens(llm, 300))
        assert not llm.stats.cold_on_disk
        assert llm.stats.cold_tokens == llm.stats.tokens_evicted > 0
    finally:
        llm.close()


def test_save_and_load_state_carry_the_cold_store(tiny_model):
    llm = _engine(tiny_model, policy="streaming", budget=96, recall=True)
    try:
        tokens = _tokens(llm, 300)
        llm.eval(tokens[:250])
        state = llm.save_state()
        cold_before = llm.memory.cold.logical.copy()
        llm.eval(tokens[250:])
        llm.load_state(state)
        assert np.array_equal(llm.memory.cold.logical, cold_before)
        assert llm.stats.cold_tokens == len(cold_before)
    finally:
        llm.close()
    other = _engine(tiny_model, policy="streaming", budget=96, recall=True, type_k=0)  # f32 K
    try:
        with pytest.raises(ColdStoreError, match="another model or KV cache shape"):
            other.load_state(state)
    finally:
        other.close()


def _repositioning(path: str, policy: str) -> NammLlama:
    """Recall with re-positioning at the smallest limit: a renumbering every few updates."""
    return _engine(
        path, policy=policy, budget=96, recall=True, reposition=True, reposition_limit=96 + 64
    )


def test_recall_with_repositioning_recalls_at_renumbered_positions(tiny_model):
    llm = _repositioning(tiny_model, "streaming")
    try:
        tokens = _tokens(llm, 600)
        llm.eval(tokens[:500])
        llm.eval(tokens[500:540])
        positions = native.cell_positions(llm._ctx.ctx)
        assert positions.max() < 96 + 2 * 32 + 40
        out = llm.create_completion(tokens[540:560], max_tokens=8, temperature=0.0)
        assert out["usage"]["completion_tokens"] > 0
    finally:
        llm.close()


@pytest.mark.parametrize("policy", ["streaming", "tova"])
def test_no_token_is_lost_across_renumberings_and_recalls(tiny_model, policy):
    """Every token of the conversation stays hot or cold through many recalls and
    renumberings. A recalled token can share its position with a survivor after a
    renumbering; evicting one of them must not take the other (eviction is by cell)."""
    llm = _repositioning(tiny_model, policy)
    try:
        tokens = _tokens(llm, 1400)
        at = 0
        for turn in range(14):
            prompt, reply = tokens[at : at + 60], tokens[at + 60 : at + 100]
            llm.eval(prompt)  # a prompt: recall runs after it
            for t in reply:  # then one token at a time, as generation decodes
                llm.eval([t])
            at += 100
            hot = set(llm.kept_positions().tolist())
            cold = set(llm.memory.cold.logical.tolist())
            assert not hot & cold, f"turn {turn}: a token is both hot and cold"
            assert hot | cold == set(range(llm.n_tokens)), f"turn {turn}: tokens went missing"
            sinks = set(range(llm.policy.n_sink))
            assert sinks <= hot, f"turn {turn}: an attention sink was evicted"
        assert llm.stats.tokens_recalled > 0 and llm.stats.renumberings > 1
    finally:
        llm.close()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(recall=True, flash_attn=True), "flash attention"),
        (dict(recall=True, cold_budget=-1), "cold_budget"),
        (dict(recall=True, recall_window=0), "recall_window"),
        (dict(recall=True, recall_max=0), "recall_max"),
        (dict(recall=True, recall_max=1.5), "recall_max"),
        (dict(recall=True, recall_max="half"), "recall_max"),
    ],
)
def test_bad_recall_settings_are_refused_with_the_reason(tiny_model, kwargs, match):
    with pytest.raises(EngineConfigError, match=match):
        _engine(tiny_model, policy="streaming", **kwargs)


# --- the real model ----------------------------------------------------------------------------
FACT = "The secret pass key is 73914. Remember it."
QUESTION = "What is the secret pass key? Answer with the number only."


def _passkey_messages(n_filler: int) -> list[dict]:
    filler = "The grass is green. The sky is blue. The sun is yellow. Here we go. " * n_filler
    half = len(filler) // 2
    return [{"role": "user", "content": filler[:half] + FACT + " " + filler[half:] + QUESTION}]


def _answer(llm: NammLlama, messages: list[dict]) -> str:
    out = llm.create_chat_completion(messages=messages, max_tokens=12, temperature=0.0)
    return out["choices"][0]["message"]["content"]


PASSKEY_ENGINE = dict(budget=384, update_interval=256, chunk=128, seed=0)  # ~25% of ~1.7k tokens


def test_full_cache_finds_the_passkey_and_streaming_loses_it(model_path):
    """The baseline that makes the next test able to fail."""
    messages = _passkey_messages(90)
    full = NammLlama(model_path, policy="full", budget=2048, update_interval=256, chunk=128)
    try:
        assert "73914" in _answer(full, messages)
    finally:
        full.close()
    without = NammLlama(model_path, policy="streaming", **PASSKEY_ENGINE)
    try:
        assert "73914" not in _answer(without, messages)
    finally:
        without.close()


@pytest.mark.parametrize("policy, recall", [("streaming", True), ("namm", True), ("kvzip", False)])
def test_passkey_evicted_mid_context_comes_back(model_path, policy, recall):
    """At a ~25% budget the pass key is evicted by streaming; the question recalls it (+recall),
    or the repeat pass keeps it (kvzip, no question needed)."""
    llm = NammLlama(model_path, policy=policy, recall=recall, **PASSKEY_ENGINE)
    try:
        assert "73914" in _answer(llm, _passkey_messages(90))
        assert llm.stats.max_cells_after_update <= 384
        assert (llm.stats.tokens_recalled > 0) == recall
    finally:
        llm.close()


def test_recalling_everything_makes_greedy_output_equal_to_full(model_path):
    prompt = "Edge devices keep a bounded memory. " * 40 + "Tell me about memory:"
    full = NammLlama(model_path, policy="full", budget=1024, update_interval=256, chunk=128)
    ours = NammLlama(
        model_path, policy="streaming", budget=1024, update_interval=256, chunk=128, recall=True
    )
    try:
        want = full.create_completion(prompt, max_tokens=24, temperature=0.0)["choices"][0]
        tokens = ours.tokenize(prompt.encode())
        ours.eval(tokens)
        ours.memory.evict_positions(np.arange(10, len(tokens) - 20))
        assert ours.memory.restore() > 0
        # the prompt is cached exactly: generation continues from the restored cache
        got = ours.create_completion(tokens, max_tokens=24, temperature=0.0)["choices"][0]
        assert got["text"] == want["text"] and got["text"]
    finally:
        full.close()
        ours.close()


@pytest.mark.parametrize("on_disk", [False, True])
def test_cold_store_take_returns_those_entries_and_keeps_the_rest(tiny_model, tmp_path, on_disk):
    cold_dir = str(tmp_path) if on_disk else None
    llm = _engine(tiny_model, policy="streaming", budget=96, recall=True, cold_dir=cold_dir)
    try:
        llm.eval(_tokens(llm, 400))
        cold = llm.memory.cold
        before = {int(lg): cold.keys()[:, i].copy() for i, lg in enumerate(cold.logical)}
        index = np.array([3, 17, 40])
        taken = cold.take(index)
        assert len(cold) == len(before) - 3
        for i, lg in enumerate(taken.logical):
            np.testing.assert_array_equal(taken.keys[:, i], before.pop(int(lg)))
        # the holes were filled by moving survivors: every survivor kept its own bytes
        assert sorted(before) == sorted(cold.logical.tolist())
        for i, lg in enumerate(cold.logical):
            np.testing.assert_array_equal(cold.keys()[:, i], before[int(lg)])
    finally:
        llm.close()


def test_kvzip_with_recall_when_an_update_lands_in_the_prompts_last_tokens(tiny_model):
    """The repeat pass runs inside the query window: the window's queries survive it."""
    llm = _engine(tiny_model, policy="kvzip", budget=96, recall=True, recall_window=16)
    try:
        tokens = _tokens(llm, 400)
        llm.eval(tokens[:200])
        for cut in range(200, 400, 25):  # prompts ending at every offset from an update
            llm.eval(tokens[cut : cut + 25])
        assert llm.stats.recalls >= 1 and llm.stats.updates >= 10
    finally:
        llm.close()


def _rss_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))


@pytest.mark.skipif(_TRIM is None, reason="no glibc malloc_trim on this platform")
def test_release_free_heap_hands_freed_blocks_back_to_the_os():
    # 64 MiB in blocks small enough for the heap, then one more block so that the freed ones
    # are not at the heap's top (glibc trims the top by itself, never the middle)
    blocks = [np.ones(8192) for _ in range(1024)]
    pin = np.ones(8192)
    del blocks
    before = _rss_kib()
    assert release_free_heap() is True
    assert before - _rss_kib() > 32 * 1024  # most of the 64 MiB came back
    del pin
