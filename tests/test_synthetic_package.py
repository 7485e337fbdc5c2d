"""The synthetic task package keeps the generator API it had as one module."""

from __future__ import annotations

import inspect

import pytest

from edge_namm.tasks import TASKS, Haystack, Sample, approx_count_tokens
from edge_namm.tasks.synthetic import Job, synthetic_task

PUBLIC_PARAMS = ["n_samples", "length", "seed", "haystack", "count_tokens", "depths", "split"]


@pytest.mark.parametrize("task", sorted(TASKS))
def test_generators_keep_their_signature(task: str) -> None:
    sig = inspect.signature(TASKS[task])
    assert list(sig.parameters) == PUBLIC_PARAMS
    assert sig.parameters["depths"].default is None
    assert sig.parameters["split"].kind is inspect.Parameter.KEYWORD_ONLY
    assert TASKS[task].__name__ == task
    assert TASKS[task].__doc__


def test_tasks_that_ignore_depths_do_not_check_them() -> None:
    seen: list[float | None] = []

    @synthetic_task("lm", uses_depths=False)
    def ignoring(job: Job, i: int, d: float | None) -> Sample:
        seen.append(d)
        return job.sample(i, d, context="", question="", answer_prefix="", answers=[], metric="")

    @synthetic_task("lm")
    def using(job: Job, i: int, d: float | None) -> Sample:
        seen.append(d)
        return job.sample(i, d, context="", question="", answer_prefix="", answers=[], metric="")

    hs = Haystack.synthetic(0)
    assert len(ignoring(2, 100, 0, hs, approx_count_tokens, [7.0])) == 2
    assert seen == [None, None]
    with pytest.raises(ValueError, match="outside"):
        using(2, 100, 0, hs, approx_count_tokens, [7.0])
    seen.clear()
    using(3, 100, 0, hs, approx_count_tokens, [0.25, 0.5])
    assert seen == [0.25, 0.5, 0.25]
