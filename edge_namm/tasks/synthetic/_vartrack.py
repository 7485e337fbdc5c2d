"""Variable tracking through chains of assignments."""

from __future__ import annotations

from edge_namm.tasks.sample import Sample
from edge_namm.tasks.synthetic.base import Job, _Insert, _number, _varname, synthetic_task

VARTRACK_HOPS = 5


@synthetic_task("vartrack", uses_depths=False)
def vartrack(job: Job, i: int, d: float | None) -> Sample:
    """Variable tracking: follow a chain of assignments spread over the text, plus a decoy chain.

    ``depths`` is ignored: each chain's statements sit at sorted random depths.
    """
    used: set[str] = set()
    chains = []
    for _ in range(2):  # target chain, decoy chain
        names = [job.draw(_varname, used) for _ in range(VARTRACK_HOPS)]
        value = job.draw(_number(5), used)
        stmts = [f"VAR {names[0]} = {value}."]
        stmts += [f"VAR {names[j]} = VAR {names[j - 1]}." for j in range(1, len(names))]
        pos = sorted(job.rng.random() for _ in stmts)
        chains.append((names, value, stmts, pos))
    names, value, _, _ = chains[0]
    inserts = [_Insert(s, p) for _, _, st, ps in chains for s, p in zip(st, ps, strict=True)]
    q = (
        f"Which variables are assigned the value {value}, directly or through other "
        "variables? List all their names."
    )
    ctx, _ = job.assemble(q, inserts)
    return job.sample(
        i,
        None,
        context=ctx,
        question=q,
        answer_prefix=f"The variables with the value {value} are:",
        answers=names,
        metric="fraction",
        needles=[s for _, _, st, _ in chains for s in st],
        value=value,
        decoy=chains[1][0],
        depths=chains[0][3],
    )
