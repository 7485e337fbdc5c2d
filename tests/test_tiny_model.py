"""Fast checks on tiny random-weight GGUFs (tests/tiny_gguf.py): the native capture and the
engine's budget on models that load in milliseconds, a llama one and a Gemma 3 one whose
sliding-window layers give llama.cpp's iSWA cache. The real-model tests cover the rest."""

from __future__ import annotations

import llama_cpp
import llama_cpp.llama_cpp as low
import numpy as np
import pytest
from test_native import python_capture_llama

from edge_namm import NammLlama, native


def _llama(path: str) -> llama_cpp.Llama:
    return llama_cpp.Llama(path, n_ctx=256, n_batch=64, n_ubatch=64, n_threads=1, verbose=False)


@pytest.mark.parametrize(
    "arch, layers, n_model_layers, n_head_kv", [("llama", [0, 1], 2, 3), ("gemma3", [5, 11], 12, 2)]
)
def test_tiny_capture_equals_independent_python_callback(
    request, arch, layers, n_model_layers, n_head_kv
):
    """Rows equal an independent Python callback's copy of each captured layer's softmax. For
    Gemma 3 (iSWA) only the full-attention layers (every 6th) are captured: the windowed
    layers' columns are cells of their own small cache."""
    path = request.getfixturevalue("tiny_model" if arch == "llama" else "tiny_gemma3")
    sink: dict = {}
    ref = python_capture_llama(lambda: _llama(path), n_head_kv, sink)
    ours = _llama(path)
    cap = native.AttentionCapture(ours._ctx.ctx, max_queries=64)
    try:
        assert cap.layers == layers and cap.n_layer == len(layers)
        assert cap.n_head_kv == low.llama_model_n_head_kv(ours._model.model) == n_head_kv
        tokens = ours.tokenize(b"the quick brown fox jumps over the lazy dog " * 3)[:40]
        cap.arm()
        for piece in (tokens, [tokens[-1]]):
            sink.clear()
            ref.eval(piece)
            ours.eval(piece)
            rows = cap.rows()
            assert sink.pop("host") and sorted(sink) == list(range(n_model_layers))
            for slot, il in enumerate(cap.layers):
                n_kv = sink[il][0].shape[-1]
                np.testing.assert_allclose(rows[slot, :, :, :n_kv], sink[il][0], atol=1e-5)
                assert rows[slot].sum() > 0
            cap.clear()
    finally:
        cap.close()
        ours.close()
        ref.close()


def _last_logits(llm: llama_cpp.Llama) -> np.ndarray:
    """A copy of the logits of the last decoded token, as llama.cpp holds them."""
    ptr = low.llama_get_logits_ith(llm._ctx.ctx, -1)
    return np.ctypeslib.as_array(ptr, shape=(llm.n_vocab(),)).copy()


def test_device_group_mean_gives_the_host_rows_and_reads_a_group_th(any_tiny):
    """The graph's per-GQA-group mean (read by default) equals the host's mean of the whole
    softmax bit for bit, reads n_head / n_head_kv times fewer bytes, and leaves logits alone."""
    out = {}
    for device_mean in (True, False):
        llm = _llama(any_tiny)
        cap = native.AttentionCapture(llm._ctx.ctx, max_queries=64)
        try:
            cap.set_device_mean(device_mean)
            tokens = llm.tokenize(b"the quick brown fox jumps over the lazy dog " * 3)[:40]
            cap.arm()
            llm.eval(tokens)
            logits = _last_logits(llm)
            cap.disarm()  # the stock graph again: decoding goes on unchanged
            llm.eval([tokens[0]])
            after = _last_logits(llm)
            out[device_mean] = (cap.rows().copy(), cap.bytes_read, logits, after)
            group = low.llama_model_n_head(llm._model.model) // cap.n_head_kv
        finally:
            cap.close()
            llm.close()
    (dev, dev_bytes, dev_logits, dev_after), (host, host_bytes, host_logits, host_after) = (
        out[True],
        out[False],
    )
    assert group > 1 and dev.sum() > 0
    np.testing.assert_array_equal(dev, host)
    assert host_bytes == group * dev_bytes > 0
    np.testing.assert_array_equal(dev_logits, host_logits)
    np.testing.assert_array_equal(dev_after, host_after)


def test_iswa_windowed_layer_keys_are_refused(tiny_gemma3):
    llm = _llama(tiny_gemma3)
    try:
        native.read_keys(llm._ctx.ctx, 5, 256, 32)  # a full-attention layer: fine
        with pytest.raises(ValueError, match="layer 0"):
            native.read_keys(llm._ctx.ctx, 0, 256, 32)
    finally:
        llm.close()


def test_iswa_full_policy_matches_plain_llama(tiny_gemma3):
    ours = NammLlama(tiny_gemma3, policy="full", budget=192, update_interval=32, chunk=32)
    plain = llama_cpp.Llama(tiny_gemma3, n_ctx=ours.n_ctx(), n_batch=32, n_ubatch=32, verbose=False)
    try:
        # every layer counts: llama.cpp's full-size window cache holds a cell per kept token too
        assert ours.stats.bytes_per_cell == 12 * 2 * (16 + 16) * 2  # layers, KV heads, K+V, f16
        for prompt in ("edge devices run small language models " * 4, "the quick brown fox"):
            kw = dict(max_tokens=16, temperature=0.0, seed=3)
            a = ours.create_completion(prompt, **kw)["choices"][0]["text"]
            b = plain.create_completion(prompt, **kw)["choices"][0]["text"]
            assert a == b and a
    finally:
        ours.close()
        plain.close()


@pytest.mark.parametrize("policy", ["namm", "h2o", "streaming", "l2"])
def test_tiny_engine_keeps_the_budget_through_prefill_and_generation(any_tiny, policy):
    llm = NammLlama(
        any_tiny, policy=policy, budget=96, update_interval=32, chunk=32, n_threads=1, seed=0
    )
    peaks: list[int] = []
    llm.memory.on_update.append(lambda view, evicted: peaks.append(view.n - len(evicted)))
    try:
        prompt = llm.tokenize(b"edge devices run small language models " * 200)[:600]
        assert len(prompt) == 600
        out = llm.create_completion(prompt, max_tokens=40, temperature=0.0)
        assert out["usage"]["completion_tokens"] > 0
        assert llm.stats.tokens_evicted > 0 and llm.stats.updates >= 600 // 32
        assert peaks and max(peaks) <= 96
    finally:
        llm.close()


def test_eval_logprobs_equal_plain_llama_log_softmax(any_tiny):
    """Perplexity's log-probabilities, reduced chunk by chunk inside the engine, against a plain
    Llama's full logits put through a float64 log-softmax."""
    llm = NammLlama(any_tiny, policy="full", budget=256, update_interval=32, chunk=32)
    plain = llama_cpp.Llama(
        any_tiny, n_ctx=llm.n_ctx(), n_batch=32, n_ubatch=32, logits_all=True, verbose=False
    )
    try:
        tokens = llm.tokenize(b"edge devices run small language models with bounded memory " * 12)
        assert len(tokens) > 2 * 32  # several chunks
        got = llm.eval_logprobs(tokens)
        plain.eval(tokens)
        scores = np.asarray(plain.scores[: len(tokens) - 1], dtype=np.float64)
        scores -= scores.max(axis=1, keepdims=True)
        want = scores[np.arange(len(scores)), tokens[1:]] - np.log(np.exp(scores).sum(axis=1))
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, atol=1e-4)
    finally:
        llm.close()
        plain.close()
