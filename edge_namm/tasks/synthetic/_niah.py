"""Single needle-in-a-haystack."""

from __future__ import annotations

from edge_namm.tasks.sample import Sample
from edge_namm.tasks.synthetic.base import Job, _Insert, _key, _magic, _number, synthetic_task


@synthetic_task("niah")
def niah(job: Job, i: int, d: float | None) -> Sample:
    """Single needle-in-a-haystack: a keyed 7-digit number at a depth (see ``grid``)."""
    depth = job.rng.random() if d is None else d
    used: set[str] = set()
    key = job.draw(_key, used)
    value = job.draw(_number(7), used)
    needle = _magic(key, value)
    q = f"What is the special magic number for {key} mentioned in the text?"
    ctx, ach = job.assemble(q, [_Insert(needle, depth)])
    return job.sample(
        i,
        depth,
        context=ctx,
        question=q,
        answer_prefix=f"The special magic number for {key} is",
        answers=[value],
        metric="exact_contains",
        needles=[needle],
        key=key,
        achieved_depth=ach[0],
    )
