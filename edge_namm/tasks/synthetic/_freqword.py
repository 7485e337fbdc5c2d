"""Frequent-word aggregation."""

from __future__ import annotations

from edge_namm.tasks.sample import Sample
from edge_namm.tasks.synthetic.base import Job, _Insert, _nonce, synthetic_task

FREQWORD_TOP = 3
FREQWORD_DISTRACTORS = 5


@synthetic_task("freqword", uses_depths=False)
def freqword(job: Job, i: int, d: float | None) -> Sample:
    """Aggregation: nonce words inserted with different frequencies; name the 3 most frequent.

    Frequencies scale with length (k = length // 1000): the top words appear 4k, 3k and 2k times,
    distractors 1..k times, so the answer is unambiguous. ``depths`` is ignored.
    """
    rng = job.rng
    vocab = job.haystack.vocabulary()
    k = max(1, job.length // 1000)
    used: set[str] = set()
    words = [job.draw(_nonce, used, vocab) for _ in range(FREQWORD_TOP + FREQWORD_DISTRACTORS)]
    counts = [(FREQWORD_TOP + 1 - j) * k for j in range(FREQWORD_TOP)]
    counts += [rng.randint(1, k) for _ in range(FREQWORD_DISTRACTORS)]
    inserts = [
        _Insert(f"The coded word is {w}.", rng.random())
        for w, c in zip(words, counts, strict=True)
        for _ in range(c)
    ]
    q = "Which three coded words appear most often in the text? Answer with the three words."
    ctx, _ = job.assemble(q, inserts)
    return job.sample(
        i,
        None,
        context=ctx,
        question=q,
        answer_prefix="The three most frequent coded words are:",
        answers=words[:FREQWORD_TOP],
        metric="fraction",
        counts=dict(zip(words, counts, strict=True)),
    )
