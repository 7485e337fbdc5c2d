"""Long-text language modelling."""

from __future__ import annotations

from edge_namm.tasks.sample import Sample
from edge_namm.tasks.synthetic.base import Job, synthetic_task

LM_CONTINUATION_TOKENS = 256


@synthetic_task("lm", uses_depths=False)
def lm(job: Job, i: int, d: float | None) -> Sample:
    """Long-text language modelling: ``length`` tokens of context, then a held-out continuation.

    The harness measures the perplexity of ``meta["continuation"]`` (about 256 tokens) after the
    context under the memory budget. There is no question. ``depths`` is ignored.
    """
    haystack, count_tokens, split, length = job.haystack, job.count_tokens, job.split, job.length
    start = haystack.random_offset(job.rng, split)
    ctx_sents, nxt = haystack.take(start, length, count_tokens, split)
    err = length - count_tokens(" ".join(s for s, _ in ctx_sents))
    if abs(err) > max(8, length // 100) and length + err > 0:  # tokenizer non-additivity
        ctx_sents, nxt = haystack.take(start, length + err, count_tokens, split)
    cont_sents, _ = haystack.take(nxt, LM_CONTINUATION_TOKENS, count_tokens, split)
    return job.sample(
        i,
        None,
        context=" ".join(s for s, _ in ctx_sents),
        question="",
        answer_prefix="",
        answers=[],
        metric="perplexity",
        continuation=" ".join(s for s, _ in cont_sents),
    )
