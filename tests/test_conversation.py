"""Token-exact conversations: each chat turn decodes only its new tokens, whatever the chat
template or the tokenizer would make of the re-rendered history."""

from __future__ import annotations

import pytest

from edge_namm import NammLlama

QUESTIONS = [
    "Name a colour.",
    "Why is the sky blue? One sentence.",
    "Give me a number between 1 and 10.",
    "What is 2 + 2?",
    "Say hello in French.",
]


@pytest.fixture(scope="module")
def llm(model_path, module_engines):
    return module_engines(model_path, policy="namm", budget=256, update_interval=128, chunk=128)


@pytest.mark.parametrize("stream", [False, True])
def test_twenty_turns_decode_each_token_once(llm, stream):
    llm.reset(stats=True)
    messages = [{"role": "system", "content": "You are a terse assistant."}]
    for turn in range(20):
        messages.append({"role": "user", "content": QUESTIONS[turn % len(QUESTIONS)]})
        seen, n_before = llm.stats.tokens_seen, llm.n_tokens
        kw = dict(messages=messages, max_tokens=12, temperature=0.0, stream=stream)
        if stream:
            reply = "".join(
                c["choices"][0]["delta"].get("content") or ""
                for c in llm.create_chat_completion(**kw)
            )
        else:
            reply = llm.create_chat_completion(**kw)["choices"][0]["message"]["content"]
        messages.append({"role": "assistant", "content": reply})
        decoded = llm.stats.tokens_seen - seen
        # everything decoded this turn is new: the history was not read again
        assert decoded == llm.n_tokens - n_before, (turn, decoded, llm.n_tokens - n_before)
        # and the new part is this turn's message (+ template) and the reply, not the history
        user = len(llm.tokenize(messages[-2]["content"].encode(), add_bos=False))
        assert decoded <= user + 16 + 12, (turn, decoded, user)
    assert llm.stats.tokens_seen == llm.n_tokens  # no token of 20 turns was decoded twice
    assert llm.stats.tokens_evicted > 0  # the conversation outgrew the 256-cell budget


def test_a_rewritten_history_is_read_again_from_where_it_changed(llm):
    llm.reset(stats=True)
    messages = [{"role": "user", "content": "Name a fruit."}]
    reply = llm.create_chat_completion(messages=messages, max_tokens=8, temperature=0.0)
    messages.append({"role": "assistant", "content": "Something else entirely."})  # edited
    messages.append({"role": "user", "content": "And a vegetable?"})
    n_first = llm.n_tokens
    out = llm.create_chat_completion(messages=messages, max_tokens=8, temperature=0.0)
    assert reply["choices"][0]["message"]["content"] != "Something else entirely."
    assert out["choices"][0]["message"]["content"]
    assert llm.stats.tokens_seen < 2 * n_first + 64  # re-read from the edit, not from scratch


def test_session_saved_and_loaded_continues_without_rereading(model_path, tmp_path):
    kw = dict(policy="namm", budget=256, update_interval=128, chunk=128, recall=True)
    first = NammLlama(model_path, **kw)
    messages = [{"role": "user", "content": "My locker code is 4821. " + "Tell me a story. " * 40}]
    try:
        reply = first.create_chat_completion(messages=messages, max_tokens=24, temperature=0.0)
        messages += [reply["choices"][0]["message"], {"role": "user", "content": "Thanks!"}]
        path = first.save_session(tmp_path / "chat.session", extra={"messages": messages})
        n_saved = first.n_tokens
        want = first.create_chat_completion(messages=messages, max_tokens=16, temperature=0.0)
        n_tokens = first.n_tokens
    finally:
        first.close()
    second = NammLlama(model_path, **kw)
    try:
        extra = second.load_session(path)
        assert extra["messages"] == messages
        seen = second.stats.tokens_seen
        got = second.create_chat_completion(messages=messages, max_tokens=16, temperature=0.0)
        assert got["choices"][0]["message"] == want["choices"][0]["message"]
        assert second.n_tokens == n_tokens
        # only the new turn was decoded: the loaded history was not read again
        assert second.stats.tokens_seen - seen == n_tokens - n_saved
    finally:
        second.close()


@pytest.mark.parametrize(
    "change, match",
    [(dict(budget=384), "budget"), (dict(recall=False), "recall")],
)
def test_session_from_other_settings_or_corrupt_is_refused(model_path, tmp_path, change, match):
    from edge_namm.engine import SessionError

    kw = dict(policy="streaming", budget=256, update_interval=128, chunk=128, recall=True)
    llm = NammLlama(model_path, **kw)
    try:
        llm.create_completion("Hello there, how are you?", max_tokens=4, temperature=0.0)
        path = llm.save_session(tmp_path / "s.session")
    finally:
        llm.close()
    other = NammLlama(model_path, **{**kw, **change})
    try:
        with pytest.raises(SessionError, match=match):
            other.load_session(path)
        bad = tmp_path / "bad.session"
        bad.write_bytes(path.read_bytes()[:1000])
        with pytest.raises(SessionError, match="not an edge-namm session file"):
            other.load_session(bad)
        assert other.n_tokens == 0  # nothing was lost or half-loaded
    finally:
        other.close()


def _max_repeat(text: str, n: int = 4) -> int:
    words = text.split()
    grams = [" ".join(words[i : i + n]) for i in range(len(words) - n + 1)]
    return max((grams.count(g) for g in set(grams)), default=0)


@pytest.mark.parametrize("question", ["What is the capital of France?", "Tell me about cats."])
def test_default_chat_sampling_gives_a_reply_that_ends_not_a_loop(model_path, question):
    """The chat's defaults (the model card's sampling on llama.cpp's) on the default model."""
    from edge_namm.cli.chat import sampling_options

    s = sampling_options(model_path, None, None, None, None, None)
    llm = NammLlama(model_path, budget=1024, recall=True, last_n_tokens_size=64)
    try:
        out = llm.create_chat_completion(
            messages=[
                {"role": "system", "content": "You are a helpful assistant."},
                {"role": "user", "content": question},
            ],
            temperature=s["temp"],
            top_k=s["top_k"],
            top_p=s["top_p"],
            min_p=s["min_p"],
            repeat_penalty=s["repeat_penalty"],
            max_tokens=512,
            seed=0,
        )
    finally:
        llm.close()
    reply = out["choices"][0]["message"]["content"]
    assert out["choices"][0]["finish_reason"] == "stop", reply[-200:]
    assert _max_repeat(reply) <= 3, reply
