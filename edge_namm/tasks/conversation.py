"""A multi-turn conversation task: facts told in early user turns, many turns of unrelated chat,
then a question about one of them.

Unlike a single long prompt, the question does not exist while the facts stream by, and each
turn is decoded on its own (the harness feeds the turns one at a time through
``sample.meta["messages"]``), which is how a chat under a memory budget meets them. Three keyed
facts are told; the question asks for one, so the others are distractors.
"""

from __future__ import annotations

from edge_namm.tasks.sample import Sample
from edge_namm.tasks.synthetic import _key, _number
from edge_namm.tasks.synthetic.base import Job, synthetic_task

N_FACTS = 3
USER_TURN_TOKENS = 140  # filler a user turn pastes
REPLY_TOKENS = 60  # filler an assistant turn answers with
ACK = "Got it, I will remember that."
MESSAGE_OVERHEAD = 6  # tokens a chat template adds around one message (ChatML: ~5)


def _fact(key: str, value: str) -> str:
    # worded like niah's needle: a small model read "the code for my ..." as a request for
    # program code and failed the task even with the full cache
    return f"Please remember this for later: the special magic number for {key} is {value}."


def _plain(messages: list[dict]) -> str:
    """The conversation as plain text (what token counts are aimed with)."""
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


@synthetic_task("conversation")
def conversation(job: Job, i: int, d: float | None) -> Sample:
    """Facts in the first turns (``depth`` places the asked one among the first 40% of the
    conversation), unrelated chat up to ``length`` tokens, then the question."""
    rng = job.rng
    depth = rng.random() if d is None else d
    used: set[str] = set()
    keys = [job.draw(_key, used) for _ in range(N_FACTS)]
    values = [job.draw(_number(6), used) for _ in range(N_FACTS)]
    asked = rng.randrange(N_FACTS)
    question = (
        f"What is the special magic number for {keys[asked]} that I asked you to remember? "
        "Answer with the number only."
    )
    messages = _chat(job, question, keys, values, depth)
    return job.sample(
        i,
        depth,
        context=_plain(messages),
        question=question,
        answer_prefix=f"The special magic number for {keys[asked]} is",
        answers=[values[asked]],
        metric="exact_contains",
        needles=[_fact(keys[asked], values[asked])],
        messages=messages,
        key=keys[asked],
    )


def _chat(job: Job, question: str, keys: list[str], values: list[str], depth: float) -> list[dict]:
    """User/assistant turns of filler around the fact turns, about the job's length in tokens
    with the question; the asked fact (keys[asked] is not known here) sits at ``depth`` x 40%."""
    haystack, count_tokens, split, length = job.haystack, job.count_tokens, job.split, job.length
    offset = haystack.random_offset(job.rng, split)

    def filler(n: int) -> str:
        nonlocal offset
        sentences, offset = haystack.take(offset, n, count_tokens, split)
        return " ".join(s for s, _ in sentences)

    turns: list[list[dict]] = []
    # template tokens per message (role headers, end markers) and the fact turns come on top
    budget = length - count_tokens(question) - 16 - N_FACTS * (count_tokens(_fact("x", "1")) + 24)
    pair_tokens = USER_TURN_TOKENS + REPLY_TOKENS + 2 * MESSAGE_OVERHEAD + 12
    while budget > pair_tokens // 4:
        scale = min(1.0, budget / pair_tokens)  # the last pair shrinks to land on the length
        user = filler(max(8, int(USER_TURN_TOKENS * scale)))
        user = f"Here is something I read today: {user} What do you think?"
        reply = filler(max(8, int(REPLY_TOKENS * scale)))
        pair = [{"role": "user", "content": user}, {"role": "assistant", "content": reply}]
        budget -= count_tokens(_plain(pair)) + 2 * MESSAGE_OVERHEAD
        turns.append(pair)
    # fact turns go in the first 40% of the turns, in order, near `depth`
    n = len(turns)
    first = min(int(depth * 0.4 * n), max(n - 1, 0))
    for j, (key, value) in enumerate(zip(keys, values, strict=True)):
        at = min(first + j, n)
        turns.insert(
            at,
            [{"role": "user", "content": _fact(key, value)}, {"role": "assistant", "content": ACK}],
        )
    return [m for pair in turns for m in pair]
