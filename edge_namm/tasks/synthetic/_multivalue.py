"""One key with several values, all asked for."""

from __future__ import annotations

from edge_namm.tasks.sample import Sample
from edge_namm.tasks.synthetic.base import Job, _Insert, _key, _magic, _number, synthetic_task

MULTIVALUE_VALUES = 4


@synthetic_task("multivalue", uses_depths=False)
def multivalue(job: Job, i: int, d: float | None) -> Sample:
    """One key with several values spread over the text; all must be returned (recall).

    ``depths`` is ignored: the values are placed at random depths (``meta["depths"]``).
    """
    used: set[str] = set()
    key = job.draw(_key, used)
    values = [job.draw(_number(7), used) for _ in range(MULTIVALUE_VALUES)]
    pos = [job.rng.random() for _ in range(MULTIVALUE_VALUES)]
    needles = [_magic(key, v) for v in values]
    q = (
        f"What are all the special magic numbers for {key} mentioned in the text? "
        "List every one of them."
    )
    ctx, _ = job.assemble(q, [_Insert(n, p) for n, p in zip(needles, pos, strict=True)])
    return job.sample(
        i,
        None,
        context=ctx,
        question=q,
        answer_prefix=f"The special magic numbers for {key} are:",
        answers=values,
        metric="fraction",
        needles=needles,
        key=key,
        depths=pos,
    )
