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
def llm(model_path):
    engine = NammLlama(model_path, policy="namm", budget=256, update_interval=128, chunk=128)
    yield engine
    engine.close()


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
