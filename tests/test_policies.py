"""One matrix every registered policy must pass, on the real model, plus the selection rule."""

from __future__ import annotations

import numpy as np
import pytest

from edge_namm.engine import NammLlama
from edge_namm.policies import POLICIES, make_policy
from edge_namm.policies.selection import select_evictions

BUDGET, INTERVAL, CHUNK = 256, 128, 64
PROMPT_TOKENS, NEW_TOKENS = 600, 100


def _run(model_path: str, name: str, text: str, seed: int = 7) -> dict:
    budget = BUDGET if name != "full" else 1024
    llm = NammLlama(
        model_path, policy=name, budget=budget, update_interval=INTERVAL, chunk=CHUNK, seed=seed
    )
    log: list[tuple[int, np.ndarray, int]] = []
    llm.memory.on_update.append(
        lambda view, evict: log.append(
            (view.newest_position, view.positions[evict], view.n - len(evict))
        )
    )
    try:
        prompt = llm.tokenize(text.encode())[:PROMPT_TOKENS]
        llm.create_completion(prompt, max_tokens=NEW_TOKENS, temperature=0.0)
        kept = llm.kept_positions()
        newest = llm.n_tokens - 1
    finally:
        llm.close()
    return {"log": log, "kept": kept, "newest": newest, "budget": budget}


@pytest.fixture(scope="module")
def essay_text() -> str:
    from edge_namm.tasks.haystack import Haystack

    return " ".join(Haystack.default().sentences)[:20000]


@pytest.mark.parametrize("name", sorted(POLICIES))
def test_policy_matrix(model_path, essay_text, name):
    first = _run(model_path, name, essay_text)
    log = first["log"]
    assert len(log) >= (PROMPT_TOKENS + NEW_TOKENS // 2) // INTERVAL
    for newest, evicted, kept_after in log:
        assert kept_after <= first["budget"], "budget exceeded after an update"
        assert newest not in set(evicted.tolist()), "the newest token was evicted"
    assert first["kept"][-1] == first["newest"] or first["newest"] in first["kept"]
    during_generation = [entry for entry in log if entry[0] >= PROMPT_TOKENS]
    assert during_generation, "no memory update ran during generation"
    if name != "full":
        assert sum(len(e[1]) for e in during_generation) > 0, "nothing evicted while generating"
    else:
        assert sum(len(e[1]) for e in log) == 0
    second = _run(model_path, name, essay_text)
    assert [e[1].tolist() for e in second["log"]] == [e[1].tolist() for e in log], (
        "not deterministic"
    )


def test_unknown_policy_lists_valid_ones():
    with pytest.raises(ValueError, match="valid policies: .*streaming"):
        make_policy("nope")


def test_selection_rule():
    scores = np.array([5.0, -1.0, 0.5, -2.0, 3.0, 0.1])
    # paper rule alone (budget large): negatives go, the newest never does
    assert select_evictions(scores, 10, evict_negative=True).tolist() == [1, 3]
    # hard budget: lowest scores go until 3 remain; the newest (index 5, 0.1) is protected
    assert sorted(select_evictions(scores, 3).tolist()) == [1, 2, 3]
    # the newest token is protected even with the lowest score
    low_newest = np.array([1.0, 2.0, 3.0, -9.0])
    assert -9.0 not in scores[select_evictions(low_newest, 2)]
    assert 3 not in select_evictions(low_newest, 2).tolist()
    # sinks and recent window are protected
    assert select_evictions(np.zeros(10), 6, n_sink=2, n_recent=2).tolist() == [2, 3, 4, 5]
    with pytest.raises(ValueError, match="protected"):
        select_evictions(np.zeros(10), 3, n_sink=2, n_recent=2)
    assert len(select_evictions(None, 1)) == 0
