"""Fast checks on a tiny random-weight GGUF (tests/tiny_gguf.py): the native capture and the
engine's budget on a model that loads in milliseconds. The real-model tests cover the rest."""

from __future__ import annotations

import llama_cpp
import llama_cpp.llama_cpp as low
import numpy as np
import pytest
from test_native import python_capture_llama
from tiny_gguf import write_llama_gguf

from edge_namm import NammLlama, native


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> str:
    return str(write_llama_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", seed=1))


def _llama(path: str) -> llama_cpp.Llama:
    return llama_cpp.Llama(path, n_ctx=256, n_batch=64, n_ubatch=64, n_threads=1, verbose=False)


def test_tiny_capture_equals_independent_python_callback(tiny_model):
    sink: dict = {}
    ref = python_capture_llama(lambda: _llama(tiny_model), 3, sink)
    ours = _llama(tiny_model)
    cap = native.AttentionCapture(ours._ctx.ctx, max_queries=64)
    try:
        assert low.llama_model_n_head_kv(ours._model.model) == 3
        tokens = ours.tokenize(b"the quick brown fox jumps over the lazy dog " * 3)[:40]
        cap.arm()
        for piece in (tokens, [tokens[-1]]):
            sink.clear()
            ref.eval(piece)
            ours.eval(piece)
            rows = cap.rows()
            assert sink.pop("host") and len(sink) == rows.shape[0] == 2
            for il, captured in sink.items():
                n_kv = captured[0].shape[-1]
                np.testing.assert_allclose(rows[il, :, :, :n_kv], captured[0], atol=1e-5)
            cap.clear()
    finally:
        cap.close()
        ours.close()
        ref.close()


@pytest.mark.parametrize("policy", ["namm", "h2o", "streaming"])
def test_tiny_engine_keeps_the_budget_through_prefill_and_generation(tiny_model, policy):
    llm = NammLlama(
        tiny_model, policy=policy, budget=96, update_interval=32, chunk=32, n_threads=1, seed=0
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
