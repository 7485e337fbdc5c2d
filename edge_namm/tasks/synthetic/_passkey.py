"""Passkey retrieval."""

from __future__ import annotations

from edge_namm.tasks.sample import Sample
from edge_namm.tasks.synthetic.base import Job, _Insert, _number, synthetic_task


@synthetic_task("passkey")
def passkey(job: Job, i: int, d: float | None) -> Sample:
    """Classic passkey retrieval: a 5-digit key hidden at a depth, asked for at the end."""
    depth = job.rng.random() if d is None else d
    key = job.draw(_number(5), set())
    needle = f"The pass key is {key}. Remember it."
    q = "What is the pass key mentioned in the text? Answer with the number only."
    ctx, ach = job.assemble(q, [_Insert(needle, depth)])
    return job.sample(
        i,
        depth,
        context=ctx,
        question=q,
        answer_prefix="The pass key is",
        answers=[key],
        metric="exact_contains",
        needles=[needle],
        achieved_depth=ach[0],
    )
