"""Offline long-context task suite: synthetic probes, LongBench loader, metrics.

``TASKS`` maps a task name to its generator; ``make_samples`` is the one entry point the eval and
train harnesses use, so that the train/eval split is always applied the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from edge_namm.tasks.conversation import conversation
from edge_namm.tasks.haystack import Haystack, fetch_essays
from edge_namm.tasks.longbench import LONGBENCH_DATASETS, load_longbench
from edge_namm.tasks.metrics import METRICS, score, score_sample
from edge_namm.tasks.sample import (
    PROMPT_MODES,
    CountTokens,
    Sample,
    approx_count_tokens,
    load_jsonl,
    save_jsonl,
)
from edge_namm.tasks.synthetic import (
    freqword,
    grid,
    lm,
    multikey,
    multivalue,
    niah,
    passkey,
    update,
    vartrack,
)

Generator = Callable[..., list[Sample]]

TASKS: dict[str, Generator] = {
    "passkey": passkey,
    "niah": niah,
    "multikey": multikey,
    "multivalue": multivalue,
    "vartrack": vartrack,
    "freqword": freqword,
    "update": update,
    "conversation": conversation,
    "lm": lm,
}


def make_samples(
    task: str,
    n: int,
    length: int,
    seed: int,
    split: str = "eval",
    haystack: Haystack | None = None,
    count_tokens: CountTokens = approx_count_tokens,
    depths: Sequence[float] | None = None,
) -> list[Sample]:
    """Generate ``n`` samples of a synthetic task for a split.

    The RNG comes from (task, length, seed, split), and the splits use disjoint filler and
    needle values, so a trained policy is never evaluated on prompts it was trained on.
    ``haystack`` defaults to the Paul Graham essays (``edge-namm pull haystack``).
    """
    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; available: {', '.join(TASKS)}")
    if haystack is None:
        haystack = Haystack.default()
    return TASKS[task](n, length, seed, haystack, count_tokens, depths, split=split)


def make_grid(
    task: str,
    lengths: Sequence[int],
    depths: Sequence[float],
    n_per_cell: int,
    seed: int,
    split: str = "eval",
    haystack: Haystack | None = None,
    count_tokens: CountTokens = approx_count_tokens,
) -> list[Sample]:
    """Samples for every (length, depth) cell of ``grid`` (needle-in-a-haystack heat maps).

    At one length every depth reuses the same needles and filler, so cells differ only in depth.
    """
    if haystack is None:
        haystack = Haystack.default()
    out: list[Sample] = []
    for length, depth in grid(lengths, depths):
        out += make_samples(task, n_per_cell, length, seed, split, haystack, count_tokens, [depth])
    return out


__all__ = [
    "LONGBENCH_DATASETS",
    "METRICS",
    "PROMPT_MODES",
    "TASKS",
    "CountTokens",
    "Haystack",
    "Sample",
    "approx_count_tokens",
    "fetch_essays",
    "grid",
    "load_jsonl",
    "load_longbench",
    "make_grid",
    "make_samples",
    "save_jsonl",
    "score",
    "score_sample",
]
