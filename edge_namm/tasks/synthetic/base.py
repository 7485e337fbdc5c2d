"""What every synthetic task shares: seeding, split-owned values, sample ids, needle placement,
and ``synthetic_task``, the one prologue that turns a per-sample function into a generator."""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from edge_namm.tasks.haystack import SPLITS, Haystack
from edge_namm.tasks.sample import CountTokens, Sample
from edge_namm.tasks.synthetic.words import CONSONANTS, KEY_WORDS, VOWELS

TASK_MAX_NEW_TOKENS = {
    "passkey": 16,
    "niah": 24,
    "multikey": 24,
    "multivalue": 64,
    "vartrack": 48,
    "freqword": 32,
    "update": 16,
    "conversation": 16,
    "lm": 0,
}


# ---- deterministic helpers ---------------------------------------------------------------------


def derive_rng(task: str, length: int, seed: int, split: str) -> random.Random:
    """RNG seeded from (task, length, seed, split) with a stable hash (not Python's ``hash``)."""
    _check_split(split)
    h = hashlib.sha256(f"{task}|{length}|{seed}|{split}".encode()).digest()
    return random.Random(int.from_bytes(h[:8], "big"))


def split_of(token: str) -> str:
    """Which split owns a key/value/word: a fixed hash, so the two splits never share one."""
    return SPLITS[hashlib.sha256(token.encode()).digest()[0] & 1]


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")


def _draw(
    rng: random.Random,
    make: Callable[[random.Random], str],
    split: str,
    used: set[str],
    avoid: Collection[str] = (),
) -> str:
    """Draw ``make(rng)`` until it belongs to ``split`` and is neither used nor to be avoided."""
    for _ in range(10_000):
        v = make(rng)
        if v not in used and split_of(v) == split and v not in avoid:
            used.add(v)
            return v
    raise RuntimeError("could not draw a fresh value for this split")


def _number(digits: int) -> Callable[[random.Random], str]:
    return lambda rng: str(rng.randrange(10 ** (digits - 1), 10**digits))


def _key(rng: random.Random) -> str:
    return rng.choice(KEY_WORDS)


def _varname(rng: random.Random) -> str:
    return "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))


def _nonce(rng: random.Random) -> str:
    return "".join(rng.choice(CONSONANTS) + rng.choice(VOWELS) for _ in range(3))


def _magic(key: str, value: str) -> str:
    return f"The special magic number for {key} is {value}."


def _depths_for(n: int, depths: Sequence[float] | None) -> list[float | None]:
    if depths:
        for d in depths:
            if not 0.0 <= d <= 1.0:
                raise ValueError(f"depth {d} outside [0, 1]")
        return [float(depths[i % len(depths)]) for i in range(n)]
    return [None] * n


def _sample_id(task: str, split: str, length: int, seed: int, i: int, depth: float | None) -> str:
    sid = f"{task}-{split}-L{length}-s{seed}-{i}"
    return sid if depth is None else f"{sid}-d{depth:.3f}"


def _make(
    task: str,
    split: str,
    length: int,
    seed: int,
    i: int,
    depth: float | None,
    *,
    context: str,
    question: str,
    answer_prefix: str,
    answers: list[str],
    metric: str,
    **meta: object,
) -> Sample:
    """A generated Sample: the id, generation length and split tag follow from the task."""
    return Sample(
        task=task,
        context=context,
        question=question,
        answer_prefix=answer_prefix,
        answers=answers,
        max_new_tokens=TASK_MAX_NEW_TOKENS[task],
        length=length,
        depth=depth,
        metric=metric,
        sample_id=_sample_id(task, split, length, seed, i, depth),
        meta={"split": split, **meta},
    )


# ---- placing text in the filler -----------------------------------------------------------------


@dataclass
class _Insert:
    text: str
    depth: float


def _place(fill: list[tuple[str, int]], inserts: list[_Insert]) -> tuple[str, list[float]]:
    """Put each insert at the sentence boundary nearest its depth (fraction of filler tokens).

    Returns the context and the achieved depth of each insert (same order as ``inserts``).
    """
    total = sum(c for _, c in fill)
    cum = [0]
    for _, c in fill:
        cum.append(cum[-1] + c)
    at: dict[int, list[int]] = {}
    for k, ins in enumerate(inserts):
        target = ins.depth * total
        # boundary b means "before filler sentence b"; cum[b] tokens precede it
        b = bisect.bisect_left(cum, target)
        if b == len(cum) or (b > 0 and target - cum[b - 1] <= cum[b] - target):
            b -= 1
        at.setdefault(b, []).append(k)
    pieces: list[str] = []
    achieved = [0.0] * len(inserts)
    for b in range(len(fill) + 1):
        for k in sorted(at.get(b, []), key=lambda k: (inserts[k].depth, k)):
            pieces.append(inserts[k].text)
            achieved[k] = cum[b] / total if total else 0.0
        if b < len(fill):
            pieces.append(fill[b][0])
    return " ".join(pieces), achieved


# ---- the shared prologue ------------------------------------------------------------------------


@dataclass(frozen=True)
class Job:
    """One generator call: its arguments and its RNG, which every sample of the call draws from
    in turn (so sample ``i`` depends on the samples before it, as the seed promises)."""

    task: str
    length: int
    seed: int
    split: str
    haystack: Haystack
    count_tokens: CountTokens
    rng: random.Random

    def draw(
        self, make: Callable[[random.Random], str], used: set[str], avoid: Collection[str] = ()
    ) -> str:
        """A fresh value of this job's split (see ``_draw``)."""
        return _draw(self.rng, make, self.split, used, avoid)

    def assemble(self, question: str, inserts: list[_Insert]) -> tuple[str, list[float]]:
        """Filler around ``inserts`` such that ``context + question`` is about this job's
        length in tokens; returns the context and the achieved depth of each insert."""
        start = self.haystack.random_offset(self.rng, self.split)
        bare = Sample("", " ".join(i.text for i in inserts), question, "", [], 0, 0, None, "", "")
        n_fill = max(0, self.length - self.count_tokens(bare.prompt("after")))
        context, achieved = "", [0.0] * len(inserts)
        for _ in range(2):  # second pass corrects tokenizer non-additivity
            fill, _ = self.haystack.take(start, n_fill, self.count_tokens, self.split)
            context, achieved = _place(fill, inserts)
            probe = Sample("", context, question, "", [], 0, 0, None, "", "")
            err = self.length - self.count_tokens(probe.prompt("after"))
            if abs(err) <= max(8, self.length // 100) or n_fill + err <= 0:
                break
            n_fill += err
        return context, achieved

    def sample(self, i: int, depth: float | None, **fields: Any) -> Sample:
        """Sample ``i`` of this job (``fields`` as for ``_make``)."""
        return _make(self.task, self.split, self.length, self.seed, i, depth, **fields)


OneSample = Callable[[Job, int, float | None], Sample]
Generator = Callable[..., list[Sample]]


def synthetic_task(task: str, *, uses_depths: bool = True) -> Callable[[OneSample], Generator]:
    """Decorator: make ``one(job, i, depth)`` (sample ``i``) into the task's ``Generator``.

    The generator seeds the job's RNG from (task, length, seed, split) and calls ``one`` for
    ``i = 0 .. n_samples - 1`` in order. ``depth`` is the i-th entry of ``depths`` (cycled) when
    ``uses_depths`` and depths are given, else None; a task that places its text itself passes
    ``uses_depths=False`` and then ignores ``depths`` without checking them. The generator takes
    the name and docstring of ``one``, and the signature the package docstring gives.
    """

    def wrap(one: OneSample) -> Generator:
        def generate(
            n_samples: int,
            length: int,
            seed: int,
            haystack: Haystack,
            count_tokens: CountTokens,
            depths: Sequence[float] | None = None,
            *,
            split: str = "eval",
        ) -> list[Sample]:
            rng = derive_rng(task, length, seed, split)
            job = Job(task, length, seed, split, haystack, count_tokens, rng)
            if uses_depths:
                targets = _depths_for(n_samples, depths)
            else:
                targets = [None for _ in range(n_samples)]
            return [one(job, i, d) for i, d in enumerate(targets)]

        generate.__name__ = one.__name__
        generate.__qualname__ = one.__qualname__
        generate.__doc__ = one.__doc__
        generate.__module__ = one.__module__
        return generate

    return wrap
