"""NammLlama on the real model: parity with llama-cpp-python, the budget, state, bad input."""

from __future__ import annotations

import llama_cpp
import numpy as np
import pytest

from edge_namm.engine import EngineConfigError, ModelFileError, NammLlama

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a village by the sea,",
]


@pytest.fixture(scope="module")
def namm_llm(model_path, module_engines):
    return module_engines(model_path, policy="namm", budget=512, update_interval=256, chunk=128)


def test_full_policy_matches_plain_llama_token_for_token(model_path):
    ours = NammLlama(model_path, policy="full", budget=1024, update_interval=512, chunk=128)
    plain = llama_cpp.Llama(
        model_path, n_ctx=ours.n_ctx(), n_batch=128, n_ubatch=128, verbose=False
    )
    try:
        for prompt in PROMPTS:
            kw = dict(max_tokens=32, temperature=0.0, seed=3)
            a = ours.create_completion(prompt, **kw)["choices"][0]["text"]
            b = plain.create_completion(prompt, **kw)["choices"][0]["text"]
            assert a == b
            assert len(a) > 0
    finally:
        ours.close()
        plain.close()


def test_budget_holds_at_every_update_over_prompt_and_generation(namm_llm, counting_text):
    llm = namm_llm
    llm.reset()
    after_update: list[int] = []
    llm.memory.on_update.append(lambda view, evict: after_update.append(view.n - len(evict)))
    try:
        prompt = llm.tokenize(counting_text.encode())[:3000]
        out = llm.create_completion(prompt, max_tokens=200, temperature=0.0)
    finally:
        llm.memory.on_update.clear()
    n_generated = out["usage"]["completion_tokens"]
    assert llm.stats.tokens_seen >= 3000 + n_generated - 1
    assert len(after_update) >= (3000 + n_generated - 1) // 256
    assert max(after_update) <= 512
    assert llm.stats.max_cells_after_update <= 512
    assert llm.stats.tokens_evicted >= 3000 - 512 - 256
    assert len(llm.kept_positions()) <= 512 + 256
    assert llm.stats.seconds_namm > 0 and llm.stats.seconds_llama > 0


def test_logical_history_outlives_physical_cache(namm_llm, counting_text):
    llm = namm_llm
    llm.reset()
    tokens = llm.tokenize(counting_text.encode())[:2000]
    llm.eval(tokens)
    assert llm.n_tokens == 2000
    np.testing.assert_array_equal(llm.input_ids[:2000], tokens)
    kept = llm.kept_positions()
    assert kept[-1] == 1999 and len(kept) <= 512 + 256


def _greedy(llm: NammLlama, first: int, n: int) -> list[int]:
    out = [first]
    for _ in range(n):
        llm.eval([out[-1]])
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        out.append(int(np.argmax(logits)))
    return out


def test_save_and_load_state_round_trip(namm_llm):
    llm = namm_llm
    llm.reset()
    prompt = llm.tokenize(("A long story about memory. " * 60).encode())
    llm.eval(prompt)
    state = llm.save_state()
    spec_before = llm.memory.features.spectrogram.copy()
    evictions: list[list[int]] = []
    llm.memory.on_update.append(
        lambda view, evict: evictions.append(view.positions[evict].tolist())
    )
    steps = llm.update_interval - llm._since_update + 8  # run through one memory update
    try:
        first = _greedy(llm, prompt[-1], steps)
        first_evictions, evictions[:] = list(evictions), []
        llm.load_state(state)
        np.testing.assert_array_equal(llm.memory.features.spectrogram, spec_before)
        assert llm.n_tokens == len(prompt)
        second = _greedy(llm, prompt[-1], steps)
    finally:
        llm.memory.on_update.clear()
    assert first_evictions and first_evictions == evictions
    assert first == second


def test_stream_and_chat_completion(namm_llm):
    llm = namm_llm
    pieces = [
        c["choices"][0]["text"]
        for c in llm.create_completion(
            "Count: 1, 2, 3,", max_tokens=8, temperature=0.0, stream=True
        )
    ]
    assert len(pieces) >= 2
    reply = llm.create_chat_completion(
        [{"role": "user", "content": "Say hello."}], max_tokens=16, temperature=0.0
    )
    assert reply["choices"][0]["message"]["content"].strip()


def test_bad_inputs_raise_clear_errors(model_path, tmp_path, namm_llm):
    with pytest.raises(EngineConfigError, match="too small"):
        NammLlama(model_path, budget=64, chunk=128, update_interval=512)
    with pytest.raises(EngineConfigError, match="flash attention"):
        NammLlama(model_path, policy="namm", flash_attn=True)
    with pytest.raises(EngineConfigError, match="quantized V cache"):
        NammLlama(model_path, policy="namm", type_v=8)
    with pytest.raises(EngineConfigError, match="multiple of 16"):
        NammLlama(model_path, update_interval=100)
    with pytest.raises(ModelFileError, match="not found"):
        NammLlama(str(tmp_path / "missing.gguf"))
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a model at all")
    with pytest.raises(ModelFileError, match="not a GGUF"):
        NammLlama(str(junk))
    truncated = tmp_path / "truncated.gguf"
    with open(model_path, "rb") as f:
        truncated.write_bytes(f.read(1 << 20))
    with pytest.raises(ModelFileError, match="could not load"):
        NammLlama(str(truncated))
    with pytest.raises(ValueError, match="unknown policy"):
        NammLlama(model_path, policy="nope")
    with pytest.raises(ValueError, match="empty prompt"):
        namm_llm.create_completion("", max_tokens=4)
    # the model stays usable after a refused request
    out = namm_llm.create_completion("Hello", max_tokens=4, temperature=0.0)
    assert out["choices"][0]["text"] is not None


def test_reposition_keeps_positions_below_the_limit(model_path, counting_text):
    llm = NammLlama(
        model_path,
        policy="streaming",
        budget=256,
        update_interval=128,
        chunk=64,
        reposition=True,
        reposition_limit=640,
    )
    newest_physical: list[int] = []
    llm.memory.on_update.append(lambda view, evict: newest_physical.append(view.newest_position))
    try:
        tokens = llm.tokenize(counting_text.encode())[:2000]
        llm.eval(tokens)
        assert max(newest_physical) < 640
        assert llm.kept_positions()[-1] == 1999  # logical positions are kept
        assert len(llm.kept_positions()) <= 256 + 128
        # generation continues the count after several renumberings
        text = llm.detokenize(tokens).decode()
        out = llm.create_completion(text, max_tokens=6, temperature=0.0)["choices"][0]["text"]
        full = (text + out).split()
        last = len(text.split())
        assert full[last] == str(int(full[last - 1]) + 1)
    finally:
        llm.close()
