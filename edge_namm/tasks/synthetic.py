"""Synthetic long-context tasks (passkey, needle-in-a-haystack, RULER-like probes, LM).

Every generator has the signature
``(n_samples, length, seed, haystack, count_tokens, depths=None, *, split="eval") -> list[Sample]``
and is deterministic: its RNG is derived from ``(task, length, seed, split)``. Train and eval
never overlap: they draw filler from disjoint halves of the haystack, and every key, value and
nonce word is assigned to exactly one split by a hash of its text.

Prompt length (``prompt("after")`` under ``count_tokens``) is aimed at ``length`` tokens: the
fixed parts are measured first, filler fills the rest, and one correction pass absorbs the
difference between per-sentence and whole-text token counts of real tokenizers.
"""

from __future__ import annotations

import bisect
import hashlib
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from functools import partial

from edge_namm.tasks.haystack import SPLITS, Haystack
from edge_namm.tasks.sample import CountTokens, Sample

LM_CONTINUATION_TOKENS = 256
MULTIKEY_NEEDLES = 4
MULTIVALUE_VALUES = 4
VARTRACK_HOPS = 5
FREQWORD_TOP = 3
FREQWORD_DISTRACTORS = 5

# Needle keys: concrete nouns, disjoint from the synthetic haystack's vocabulary.
KEY_WORDS = (
    "apple",
    "anchor",
    "badger",
    "balloon",
    "bamboo",
    "beacon",
    "beetle",
    "biscuit",
    "blizzard",
    "bottle",
    "bracelet",
    "bucket",
    "butterfly",
    "cactus",
    "camera",
    "candle",
    "canyon",
    "carpet",
    "castle",
    "cathedral",
    "cello",
    "cherry",
    "chimney",
    "circus",
    "cobra",
    "compass",
    "coral",
    "cricket",
    "crystal",
    "cupboard",
    "dolphin",
    "dragon",
    "drum",
    "eagle",
    "elephant",
    "engine",
    "falcon",
    "feather",
    "ferry",
    "fiddle",
    "flamingo",
    "fountain",
    "galaxy",
    "garlic",
    "giraffe",
    "glacier",
    "goblet",
    "gorilla",
    "guitar",
    "hammer",
    "helmet",
    "hippo",
    "honey",
    "hurricane",
    "iceberg",
    "igloo",
    "island",
    "jacket",
    "jaguar",
    "jelly",
    "jungle",
    "kangaroo",
    "kayak",
    "kite",
    "koala",
    "lemon",
    "leopard",
    "library",
    "lighthouse",
    "lizard",
    "lobster",
    "magnet",
    "mango",
    "marble",
    "mirror",
    "monkey",
    "mosaic",
    "mountain",
    "napkin",
    "necklace",
    "needle",
    "octopus",
    "olive",
    "onion",
    "oyster",
    "panda",
    "parrot",
    "peacock",
    "pencil",
    "penguin",
    "piano",
    "pillow",
    "pirate",
    "planet",
    "pumpkin",
    "puzzle",
    "rabbit",
    "raccoon",
    "rainbow",
    "rocket",
    "saddle",
    "salmon",
    "satellite",
    "scarf",
    "scorpion",
    "shark",
    "skeleton",
    "sparrow",
    "spider",
    "squirrel",
    "statue",
    "submarine",
    "sunflower",
    "teapot",
    "telescope",
    "tiger",
    "tomato",
    "tornado",
    "tractor",
    "trumpet",
    "tulip",
    "turtle",
    "umbrella",
    "unicorn",
    "violin",
    "volcano",
    "walnut",
    "walrus",
    "whistle",
    "window",
    "wizard",
    "yacht",
    "zebra",
    "zeppelin",
)
# Things with a code that gets updated (the "update" task).
CODE_ITEMS = (
    "vault",
    "locker",
    "safe",
    "alarm",
    "server room",
    "wifi",
    "archive",
    "garage",
    "mailbox",
    "storage unit",
    "bike lock",
    "studio",
    "cellar",
    "attic",
    "workshop",
    "greenhouse",
)
_CONS = "bdfgklmnprstvz"
_VOWELS = "aeiou"

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


def _number(digits: int):
    return lambda rng: str(rng.randrange(10 ** (digits - 1), 10**digits))


def _key(rng: random.Random) -> str:
    return rng.choice(KEY_WORDS)


def _varname(rng: random.Random) -> str:
    return "".join(rng.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ") for _ in range(5))


def _nonce(rng: random.Random) -> str:
    return "".join(rng.choice(_CONS) + rng.choice(_VOWELS) for _ in range(3))


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


def _assemble(
    haystack: Haystack,
    count_tokens: CountTokens,
    rng: random.Random,
    split: str,
    length: int,
    question: str,
    inserts: list[_Insert],
) -> tuple[str, list[float]]:
    """Context of filler + inserts such that ``context + question`` is about ``length`` tokens."""
    start = haystack.random_offset(rng, split)
    bare = Sample("", " ".join(i.text for i in inserts), question, "", [], 0, 0, None, "", "")
    n_fill = max(0, length - count_tokens(bare.prompt("after")))
    context, achieved = "", [0.0] * len(inserts)
    for _ in range(2):  # second pass corrects tokenizer non-additivity
        fill, _ = haystack.take(start, n_fill, count_tokens, split)
        context, achieved = _place(fill, inserts)
        probe = Sample("", context, question, "", [], 0, 0, None, "", "")
        err = length - count_tokens(probe.prompt("after"))
        if abs(err) <= max(8, length // 100) or n_fill + err <= 0:
            break
        n_fill += err
    return context, achieved


# ---- generators ---------------------------------------------------------------------------------


def passkey(
    n_samples: int,
    length: int,
    seed: int,
    haystack: Haystack,
    count_tokens: CountTokens,
    depths: Sequence[float] | None = None,
    *,
    split: str = "eval",
) -> list[Sample]:
    """Classic passkey retrieval: a 5-digit key hidden at a depth, asked for at the end."""
    rng = derive_rng("passkey", length, seed, split)
    make = partial(_make, "passkey", split, length, seed)
    out = []
    for i, d in enumerate(_depths_for(n_samples, depths)):
        depth = rng.random() if d is None else d
        key = _draw(rng, _number(5), split, set())
        needle = f"The pass key is {key}. Remember it."
        q = "What is the pass key mentioned in the text? Answer with the number only."
        ctx, ach = _assemble(
            haystack, count_tokens, rng, split, length, q, [_Insert(needle, depth)]
        )
        out.append(
            make(
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
        )
    return out


def _magic(key: str, value: str) -> str:
    return f"The special magic number for {key} is {value}."


def niah(
    n_samples: int,
    length: int,
    seed: int,
    haystack: Haystack,
    count_tokens: CountTokens,
    depths: Sequence[float] | None = None,
    *,
    split: str = "eval",
) -> list[Sample]:
    """Single needle-in-a-haystack: a keyed 7-digit number at a depth (see ``grid``)."""
    rng = derive_rng("niah", length, seed, split)
    make = partial(_make, "niah", split, length, seed)
    out = []
    for i, d in enumerate(_depths_for(n_samples, depths)):
        depth = rng.random() if d is None else d
        used: set[str] = set()
        key = _draw(rng, _key, split, used)
        value = _draw(rng, _number(7), split, used)
        needle = _magic(key, value)
        q = f"What is the special magic number for {key} mentioned in the text?"
        ctx, ach = _assemble(
            haystack, count_tokens, rng, split, length, q, [_Insert(needle, depth)]
        )
        out.append(
            make(
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
        )
    return out


def multikey(
    n_samples: int,
    length: int,
    seed: int,
    haystack: Haystack,
    count_tokens: CountTokens,
    depths: Sequence[float] | None = None,
    *,
    split: str = "eval",
) -> list[Sample]:
    """Several keyed needles, one asked for: the others are distractors. ``depths``: target's."""
    rng = derive_rng("multikey", length, seed, split)
    make = partial(_make, "multikey", split, length, seed)
    out = []
    for i, d in enumerate(_depths_for(n_samples, depths)):
        used: set[str] = set()
        keys = [_draw(rng, _key, split, used) for _ in range(MULTIKEY_NEEDLES)]
        values = [_draw(rng, _number(7), split, used) for _ in range(MULTIKEY_NEEDLES)]
        pos = [rng.random() for _ in range(MULTIKEY_NEEDLES)]
        t = rng.randrange(MULTIKEY_NEEDLES)
        if d is not None:
            pos[t] = d
        needles = [_magic(k, v) for k, v in zip(keys, values, strict=True)]
        q = f"What is the special magic number for {keys[t]} mentioned in the text?"
        inserts = [_Insert(n, p) for n, p in zip(needles, pos, strict=True)]
        ctx, ach = _assemble(haystack, count_tokens, rng, split, length, q, inserts)
        out.append(
            make(
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
        )
    return out


def multivalue(
    n_samples: int,
    length: int,
    seed: int,
    haystack: Haystack,
    count_tokens: CountTokens,
    depths: Sequence[float] | None = None,
    *,
    split: str = "eval",
) -> list[Sample]:
    """One key with several values spread over the text; all must be returned (recall).

    ``depths`` is ignored: the values are placed at random depths (``meta["depths"]``).
    """
    rng = derive_rng("multivalue", length, seed, split)
    make = partial(_make, "multivalue", split, length, seed)
    out = []
    for i in range(n_samples):
        used: set[str] = set()
        key = _draw(rng, _key, split, used)
        values = [_draw(rng, _number(7), split, used) for _ in range(MULTIVALUE_VALUES)]
        pos = [rng.random() for _ in range(MULTIVALUE_VALUES)]
        needles = [_magic(key, v) for v in values]
        q = (
            f"What are all the special magic numbers for {key} mentioned in the text? "
            "List every one of them."
        )
        inserts = [_Insert(n, p) for n, p in zip(needles, pos, strict=True)]
        ctx, _ = _assemble(haystack, count_tokens, rng, split, length, q, inserts)
        out.append(
            make(
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
        )
    return out


def vartrack(
    n_samples: int,
    length: int,
    seed: int,
    haystack: Haystack,
    count_tokens: CountTokens,
    depths: Sequence[float] | None = None,
    *,
    split: str = "eval",
) -> list[Sample]:
    """Variable tracking: follow a chain of assignments spread over the text, plus a decoy chain.

    ``depths`` is ignored: each chain's statements sit at sorted random depths.
    """
    rng = derive_rng("vartrack", length, seed, split)
    make = partial(_make, "vartrack", split, length, seed)
    out = []
    for i in range(n_samples):
        used: set[str] = set()
        chains = []
        for _ in range(2):  # target chain, decoy chain
            names = [_draw(rng, _varname, split, used) for _ in range(VARTRACK_HOPS)]
            value = _draw(rng, _number(5), split, used)
            stmts = [f"VAR {names[0]} = {value}."]
            stmts += [f"VAR {names[j]} = VAR {names[j - 1]}." for j in range(1, len(names))]
            pos = sorted(rng.random() for _ in stmts)
            chains.append((names, value, stmts, pos))
        names, value, _, _ = chains[0]
        inserts = [_Insert(s, p) for _, _, st, ps in chains for s, p in zip(st, ps, strict=True)]
        q = (
            f"Which variables are assigned the value {value}, directly or through other "
            "variables? List all their names."
        )
        ctx, _ = _assemble(haystack, count_tokens, rng, split, length, q, inserts)
        out.append(
            make(
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
        )
    return out


def freqword(
    n_samples: int,
    length: int,
    seed: int,
    haystack: Haystack,
    count_tokens: CountTokens,
    depths: Sequence[float] | None = None,
    *,
    split: str = "eval",
) -> list[Sample]:
    """Aggregation: nonce words inserted with different frequencies; name the 3 most frequent.

    Frequencies scale with length (k = length // 1000): the top words appear 4k, 3k and 2k times,
    distractors 1..k times, so the answer is unambiguous. ``depths`` is ignored.
    """
    rng = derive_rng("freqword", length, seed, split)
    make = partial(_make, "freqword", split, length, seed)
    vocab = haystack.vocabulary()
    out = []
    k = max(1, length // 1000)

    for i in range(n_samples):
        used: set[str] = set()
        words = [
            _draw(rng, _nonce, split, used, vocab)
            for _ in range(FREQWORD_TOP + FREQWORD_DISTRACTORS)
        ]
        counts = [(FREQWORD_TOP + 1 - j) * k for j in range(FREQWORD_TOP)]
        counts += [rng.randint(1, k) for _ in range(FREQWORD_DISTRACTORS)]
        inserts = [
            _Insert(f"The coded word is {w}.", rng.random())
            for w, c in zip(words, counts, strict=True)
            for _ in range(c)
        ]
        q = "Which three coded words appear most often in the text? Answer with the three words."
        ctx, _ = _assemble(haystack, count_tokens, rng, split, length, q, inserts)
        out.append(
            make(
                i,
                None,
                context=ctx,
                question=q,
                answer_prefix="The three most frequent coded words are:",
                answers=words[:FREQWORD_TOP],
                metric="fraction",
                counts=dict(zip(words, counts, strict=True)),
            )
        )
    return out


def update(
    n_samples: int,
    length: int,
    seed: int,
    haystack: Haystack,
    count_tokens: CountTokens,
    depths: Sequence[float] | None = None,
    *,
    split: str = "eval",
) -> list[Sample]:
    """A fact stated early, then changed once or twice later: the newest value must win.

    Checks that a policy keeps the newest fact rather than the first. ``depths`` sets the depth of
    the final update (the older statements go before it); stale values score 0 (``exclude``).
    """
    rng = derive_rng("update", length, seed, split)
    make = partial(_make, "update", split, length, seed)
    out = []
    for i, d in enumerate(_depths_for(n_samples, depths)):
        used: set[str] = set()
        item, other = rng.sample(CODE_ITEMS, 2)
        n_upd = rng.randint(1, 2)
        values = [_draw(rng, _number(6), split, used) for _ in range(n_upd + 1)]
        other_value = _draw(rng, _number(6), split, used)
        last = rng.uniform(0.5, 0.95) if d is None else d
        pos = sorted(rng.uniform(0.0, last) for _ in range(n_upd)) + [last]
        stmts = [f"The {item} code is {values[0]}."]
        stmts += [f"Update: the {item} code has been changed to {v}." for v in values[1:]]
        inserts = [_Insert(s, p) for s, p in zip(stmts, pos, strict=True)]
        inserts.append(_Insert(f"The {other} code is {other_value}.", rng.random()))
        q = f"What is the current {item} code according to the text?"
        ctx, _ = _assemble(haystack, count_tokens, rng, split, length, q, inserts)
        out.append(
            make(
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
        )
    return out


def lm(
    n_samples: int,
    length: int,
    seed: int,
    haystack: Haystack,
    count_tokens: CountTokens,
    depths: Sequence[float] | None = None,
    *,
    split: str = "eval",
) -> list[Sample]:
    """Long-text language modelling: ``length`` tokens of context, then a held-out continuation.

    The harness measures the perplexity of ``meta["continuation"]`` (about 256 tokens) after the
    context under the memory budget. There is no question. ``depths`` is ignored.
    """
    rng = derive_rng("lm", length, seed, split)
    make = partial(_make, "lm", split, length, seed)
    out = []
    for i in range(n_samples):
        start = haystack.random_offset(rng, split)
        ctx_sents, nxt = haystack.take(start, length, count_tokens, split)
        err = length - count_tokens(" ".join(s for s, _ in ctx_sents))
        if abs(err) > max(8, length // 100) and length + err > 0:  # tokenizer non-additivity
            ctx_sents, nxt = haystack.take(start, length + err, count_tokens, split)
        cont_sents, _ = haystack.take(nxt, LM_CONTINUATION_TOKENS, count_tokens, split)
        out.append(
            make(
                i,
                None,
                context=" ".join(s for s, _ in ctx_sents),
                question="",
                answer_prefix="",
                answers=[],
                metric="perplexity",
                continuation=" ".join(s for s, _ in cont_sents),
            )
        )
    return out


def grid(lengths: Sequence[int], depths: Sequence[float]) -> list[tuple[int, float]]:
    """All (length, depth) cells of a needle-in-a-haystack sweep, lengths outermost."""
    return [(int(n), float(d)) for n in lengths for d in depths]
