"""A fact that is updated later in the text."""

from __future__ import annotations

from edge_namm.tasks.sample import Sample
from edge_namm.tasks.synthetic.base import Job, _Insert, _number, synthetic_task
from edge_namm.tasks.synthetic.words import CODE_ITEMS


@synthetic_task("update")
def update(job: Job, i: int, d: float | None) -> Sample:
    """A fact stated early, then changed once or twice later: the newest value must win.

    Checks that a policy keeps the newest fact rather than the first. ``depths`` sets the depth of
    the final update (the older statements go before it); stale values score 0 (``exclude``).
    """
    rng = job.rng
    used: set[str] = set()
    item, other = rng.sample(CODE_ITEMS, 2)
    n_upd = rng.randint(1, 2)
    values = [job.draw(_number(6), used) for _ in range(n_upd + 1)]
    other_value = job.draw(_number(6), used)
    last = rng.uniform(0.5, 0.95) if d is None else d
    pos = sorted(rng.uniform(0.0, last) for _ in range(n_upd)) + [last]
    stmts = [f"The {item} code is {values[0]}."]
    stmts += [f"Update: the {item} code has been changed to {v}." for v in values[1:]]
    inserts = [_Insert(s, p) for s, p in zip(stmts, pos, strict=True)]
    inserts.append(_Insert(f"The {other} code is {other_value}.", rng.random()))
    q = f"What is the current {item} code according to the text?"
    ctx, _ = job.assemble(q, inserts)
    return job.sample(
        i,
        last,
        context=ctx,
        question=q,
        answer_prefix=f"The current {item} code is",
        answers=[values[-1]],
        metric="exact_contains",
        needles=stmts,
        exclude=values[:-1],
        depths=pos,
        distractor=other_value,
    )
