"""One sample schema shared by the synthetic tasks, LongBench and the eval/train harnesses.

Keeping every task in the same shape lets the engine, the trainer and the report code treat a
passkey prompt and a LongBench record identically, and lets a sampled set be frozen to JSONL so
that train and eval runs are reproducible without regenerating anything.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

CountTokens = Callable[[str], int]

PROMPT_MODES = ("after", "both")


def approx_count_tokens(text: str) -> int:
    """Cheap tokenizer-free estimate (about 4 characters per token) for tests and defaults.

    The engine passes the model's tokenizer instead; this only has to be roughly right.
    """
    return (len(text) + 3) // 4


@dataclass(frozen=True)
class Sample:
    """One prompt with its references and how to score it.

    ``length`` is the target prompt length in tokens (of ``prompt("after")``), ``depth`` the
    relative position of the answer in the context (0 = start, 1 = end) where that is defined.
    ``answer_prefix`` is meant to start the assistant turn; it is not part of ``prompt()``.
    """

    task: str
    context: str
    question: str
    answer_prefix: str
    answers: list[str]
    max_new_tokens: int
    length: int
    depth: float | None
    metric: str
    sample_id: str
    meta: dict[str, Any] = field(default_factory=dict)

    def prompt(self, mode: str = "after") -> str:
        """User text for a prompt mode.

        ``"after"``: context then question, so the cache policy cannot know the question while the
        context streams in (query-agnostic, like a real chat). ``"both"``: the question also comes
        before the context (query-aware), the easier setting most papers report.
        """
        if mode == "after":
            parts = [self.context, self.question]
        elif mode == "both":
            parts = [self.question, self.context, self.question]
        else:
            raise ValueError(f"unknown prompt mode {mode!r}; expected one of {PROMPT_MODES}")
        return "\n\n".join(p for p in parts if p)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (one JSONL line)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sample:
        """Inverse of ``to_dict``; unknown keys are ignored, ``depth``/``meta`` may be missing."""
        names = {f.name for f in fields(cls)}
        missing = names - set(d) - {"depth", "meta"}
        if missing:
            raise ValueError(f"sample dict lacks fields: {sorted(missing)}")
        kw = {k: d[k] for k in names if k in d}
        kw.setdefault("depth", None)
        kw["answers"] = [str(a) for a in kw["answers"]]
        kw["meta"] = dict(kw.get("meta") or {})
        kw["max_new_tokens"] = int(kw["max_new_tokens"])
        kw["length"] = int(kw["length"])
        if kw["depth"] is not None:
            kw["depth"] = float(kw["depth"])
        return cls(**kw)


def save_jsonl(samples: Iterable[Sample], path: str | Path) -> None:
    """Freeze a sampled set to disk so a run can be repeated exactly."""
    with open(path, "w", encoding="utf-8") as f:
        for s in samples:
            f.write(json.dumps(s.to_dict(), ensure_ascii=False) + "\n")


def load_jsonl(path: str | Path) -> list[Sample]:
    """Read samples written by ``save_jsonl``."""
    out = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                out.append(Sample.from_dict(json.loads(line)))
    return out
