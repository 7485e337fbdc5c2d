"""Several keyed needles, one asked for."""

from __future__ import annotations

from edge_namm.tasks.sample import Sample
from edge_namm.tasks.synthetic.base import Job, _Insert, _key, _magic, _number, synthetic_task

MULTIKEY_NEEDLES = 4


@synthetic_task("multikey")
def multikey(job: Job, i: int, d: float | None) -> Sample:
    """Several keyed needles, one asked for: the others are distractors. ``depths``: target's."""
    rng = job.rng
    used: set[str] = set()
    keys = [job.draw(_key, used) for _ in range(MULTIKEY_NEEDLES)]
    values = [job.draw(_number(7), used) for _ in range(MULTIKEY_NEEDLES)]
    pos = [rng.random() for _ in range(MULTIKEY_NEEDLES)]
    t = rng.randrange(MULTIKEY_NEEDLES)
    if d is not None:
        pos[t] = d
    needles = [_magic(k, v) for k, v in zip(keys, values, strict=True)]
    q = f"What is the special magic number for {keys[t]} mentioned in the text?"
    ctx, ach = job.assemble(q, [_Insert(n, p) for n, p in zip(needles, pos, strict=True)])
    return job.sample(
        i,
        pos[t],
        context=ctx,
        question=q,
        answer_prefix=f"The special magic number for {keys[t]} is",
        answers=[values[t]],
        metric="exact_contains",
        needles=needles,
        key=keys[t],
        distractors=[v for j, v in enumerate(values) if j != t],
        depths=pos,
        achieved_depth=ach[t],
    )
