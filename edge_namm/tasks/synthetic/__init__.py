"""Synthetic long-context tasks (passkey, needle-in-a-haystack, RULER-like probes, LM).

Every generator has the signature
``(n_samples, length, seed, haystack, count_tokens, depths=None, *, split="eval") -> list[Sample]``
and is deterministic: its RNG is derived from ``(task, length, seed, split)``. Train and eval
never overlap: they draw filler from disjoint halves of the haystack, and every key, value and
nonce word is assigned to exactly one split by a hash of its text.

Prompt length (``prompt("after")`` under ``count_tokens``) is aimed at ``length`` tokens: the
fixed parts are measured first, filler fills the rest, and one correction pass absorbs the
difference between per-sentence and whole-text token counts of real tokenizers.

Layout: ``base`` holds the shared helpers and ``synthetic_task``, the prologue that makes a
per-sample function into a generator; each task is one private module (``_passkey`` ...), whose
generator is imported from this package; ``words`` holds the word lists.
"""

from __future__ import annotations

from collections.abc import Sequence

from edge_namm.tasks.synthetic._freqword import (
    FREQWORD_DISTRACTORS,
    FREQWORD_TOP,
    freqword,
)
from edge_namm.tasks.synthetic._lm import LM_CONTINUATION_TOKENS, lm
from edge_namm.tasks.synthetic._multikey import MULTIKEY_NEEDLES, multikey
from edge_namm.tasks.synthetic._multivalue import MULTIVALUE_VALUES, multivalue
from edge_namm.tasks.synthetic._niah import niah
from edge_namm.tasks.synthetic._passkey import passkey
from edge_namm.tasks.synthetic._update import update
from edge_namm.tasks.synthetic._vartrack import VARTRACK_HOPS, vartrack
from edge_namm.tasks.synthetic.base import (
    TASK_MAX_NEW_TOKENS,
    Generator,
    Job,
    derive_rng,
    split_of,
    synthetic_task,
)

# conversation.py builds its samples with these
from edge_namm.tasks.synthetic.base import _depths_for as _depths_for
from edge_namm.tasks.synthetic.base import _draw as _draw
from edge_namm.tasks.synthetic.base import _key as _key
from edge_namm.tasks.synthetic.base import _make as _make
from edge_namm.tasks.synthetic.base import _number as _number
from edge_namm.tasks.synthetic.words import CODE_ITEMS, KEY_WORDS


def grid(lengths: Sequence[int], depths: Sequence[float]) -> list[tuple[int, float]]:
    """All (length, depth) cells of a needle-in-a-haystack sweep, lengths outermost."""
    return [(int(n), float(d)) for n in lengths for d in depths]


__all__ = [
    "CODE_ITEMS",
    "FREQWORD_DISTRACTORS",
    "FREQWORD_TOP",
    "KEY_WORDS",
    "LM_CONTINUATION_TOKENS",
    "MULTIKEY_NEEDLES",
    "MULTIVALUE_VALUES",
    "TASK_MAX_NEW_TOKENS",
    "VARTRACK_HOPS",
    "Generator",
    "Job",
    "derive_rng",
    "freqword",
    "grid",
    "lm",
    "multikey",
    "multivalue",
    "niah",
    "passkey",
    "split_of",
    "synthetic_task",
    "update",
    "vartrack",
]
