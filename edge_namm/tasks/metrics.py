"""Task metrics, re-implemented from their definitions (LongBench's and our synthetic ones).

Every metric in ``METRICS`` has the signature ``(prediction, answers, **kw) -> float in [0, 1]``
so that the harness can score any sample the same way (``score`` / ``score_sample``). LongBench
scores a prediction against each reference and keeps the best, which ``_best`` does for the
per-reference metrics. Deviations from upstream, made to avoid extra dependencies: Chinese
ROUGE-L and F1 work on characters (upstream segments words with jieba), and the code similarity
is not rounded to whole percent.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Callable, Sequence
from typing import Any

Metric = Callable[..., float]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = set(string.punctuation)


# ---- normalisation ------------------------------------------------------------------------------


def normalize_answer(text: str) -> str:
    """English QA normalisation: lowercase, drop punctuation and articles, squeeze whitespace."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def _is_punct(ch: str) -> bool:
    return ch in _PUNCT or unicodedata.category(ch)[0] in "PS"


def normalize_zh_answer(text: str) -> str:
    """Chinese normalisation: lowercase, drop all punctuation/symbols (CJK too) and whitespace."""
    return "".join(ch for ch in text.lower() if not ch.isspace() and not _is_punct(ch))


# ---- building blocks ----------------------------------------------------------------------------


def token_f1(pred_tokens: Sequence[str], ref_tokens: Sequence[str]) -> float:
    """Bag-of-tokens F1: overlap counted with multiplicity."""
    common = Counter(pred_tokens) & Counter(ref_tokens)
    same = sum(common.values())
    if same == 0:
        return 0.0
    precision = same / len(pred_tokens)
    recall = same / len(ref_tokens)
    return 2 * precision * recall / (precision + recall)


def lcs_length(a: Sequence[Any], b: Sequence[Any]) -> int:
    """Length of the longest common subsequence (two-row dynamic programme)."""
    if len(a) < len(b):
        a, b = b, a
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l_f(pred_tokens: Sequence[str], ref_tokens: Sequence[str]) -> float:
    """ROUGE-L F1 = 2PR/(P+R) with P = LCS/|pred|, R = LCS/|ref|."""
    if not pred_tokens or not ref_tokens:
        return 0.0
    lcs = lcs_length(pred_tokens, ref_tokens)
    if lcs == 0:
        return 0.0
    p, r = lcs / len(pred_tokens), lcs / len(ref_tokens)
    return 2 * p * r / (p + r)


def levenshtein_distance(a: str, b: str, substitution_cost: int = 1) -> int:
    """Edit distance with unit insert/delete and a configurable substitution cost."""
    if len(a) < len(b):
        a, b = b, a
    prev = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        cur = [i]
        for j, y in enumerate(b, 1):
            sub = prev[j - 1] + (0 if x == y else substitution_cost)
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, sub))
        prev = cur
    return prev[-1]


def levenshtein_ratio(a: str, b: str) -> float:
    """Similarity in [0, 1]: ``1 - d / (|a| + |b|)`` with substitutions costing 2.

    This is the normalised Levenshtein ratio that fuzzy-matching libraries report (and that
    LongBench's code metric uses); two empty strings are identical (1.0).
    """
    total = len(a) + len(b)
    if total == 0:
        return 1.0
    return 1.0 - levenshtein_distance(a, b, substitution_cost=2) / total


# ---- per-reference LongBench metrics ------------------------------------------------------------


def qa_f1(prediction: str, reference: str, **_: Any) -> float:
    """LongBench English QA F1 on normalised whitespace tokens."""
    return token_f1(normalize_answer(prediction).split(), normalize_answer(reference).split())


def qa_f1_zh(prediction: str, reference: str, **_: Any) -> float:
    """Chinese QA F1 on characters after removing punctuation and whitespace."""
    return token_f1(list(normalize_zh_answer(prediction)), list(normalize_zh_answer(reference)))


def rouge_l(prediction: str, reference: str, **_: Any) -> float:
    """ROUGE-L F on lower-cased whitespace tokens."""
    return rouge_l_f(prediction.lower().split(), reference.lower().split())


def rouge_l_zh(prediction: str, reference: str, **_: Any) -> float:
    """ROUGE-L F on characters (punctuation and whitespace removed)."""
    return rouge_l_f(list(normalize_zh_answer(prediction)), list(normalize_zh_answer(reference)))


def classification(
    prediction: str, reference: str, all_classes: Sequence[str] | None = None, **_: Any
) -> float:
    """LongBench classification: share of the class names found in the prediction that is right.

    Class names mentioned in the prediction are collected; names that are only substrings of the
    true class (e.g. "ABBR" inside "ABBR:exp") are not counted against it. The score is
    ``1 / (number of matched names)`` if the true class is among them, else 0.
    """
    if not all_classes:
        return 1.0 if reference and reference in prediction else 0.0
    matched = [c for c in all_classes if c in prediction]
    matched = [c for c in matched if not (c in reference and c != reference)]
    if reference in matched:
        return 1.0 / len(matched)
    return 0.0


def _retrieval(prediction: str, reference: str, pattern: str) -> float:
    found = re.findall(pattern, reference)
    target = found[0] if found else "".join(re.findall(r"\d+", reference)[:1])
    numbers = re.findall(r"\d+", prediction)
    if not numbers or not target:
        return 0.0
    return sum(n == target for n in numbers) / len(numbers)


def retrieval(prediction: str, reference: str, **_: Any) -> float:
    """Passage retrieval: fraction of numbers in the prediction equal to the "Paragraph N" id."""
    return _retrieval(prediction, reference, r"Paragraph (\d+)")


def retrieval_zh(prediction: str, reference: str, **_: Any) -> float:
    """Chinese passage retrieval ("段落N")."""
    return _retrieval(prediction, reference, r"段落(\d+)")


def count(prediction: str, reference: str, **_: Any) -> float:
    """Passage count: fraction of numbers in the prediction equal to the true count."""
    numbers = re.findall(r"\d+", prediction)
    if not numbers:
        return 0.0
    return sum(n == str(reference).strip() for n in numbers) / len(numbers)


def first_code_line(prediction: str) -> str:
    """First line that is neither empty nor a comment / markdown fence (LongBench's rule)."""
    for line in prediction.lstrip("\n").split("\n"):
        if line.strip() and "`" not in line and "#" not in line and "//" not in line:
            return line
    return prediction


def code_sim(prediction: str, reference: str, **_: Any) -> float:
    """Code completion: Levenshtein ratio between the first code line and the reference."""
    return levenshtein_ratio(first_code_line(prediction), reference)


# ---- synthetic-task metrics (act on the whole answer list) ---------------------------------------


def _norm_contains(haystack: str, needle: str) -> bool:
    needle = " ".join(needle.lower().split())
    return bool(needle) and needle in " ".join(haystack.lower().split())


def exact_contains(
    prediction: str, answers: Sequence[str], exclude: Sequence[str] = (), **_: Any
) -> float:
    """1 if any reference occurs in the prediction (case/whitespace-insensitive), else 0.

    ``exclude``: values that must not appear (e.g. stale facts in the update task).
    """
    if any(_norm_contains(prediction, x) for x in exclude):
        return 0.0
    return 1.0 if any(_norm_contains(prediction, a) for a in answers) else 0.0


def fraction(prediction: str, answers: Sequence[str], **_: Any) -> float:
    """Fraction of the references recalled in the prediction (all of them are required)."""
    if not answers:
        return 0.0
    return sum(_norm_contains(prediction, a) for a in answers) / len(answers)


def _best(metric: Metric) -> Metric:
    def best_over_refs(prediction: str, answers: Sequence[str], **kw: Any) -> float:
        return max((metric(prediction, a, **kw) for a in answers), default=0.0)

    best_over_refs.__name__ = metric.__name__
    best_over_refs.__doc__ = metric.__doc__
    return best_over_refs


METRICS: dict[str, Metric] = {
    "qa_f1": _best(qa_f1),
    "qa_f1_zh": _best(qa_f1_zh),
    "rouge": _best(rouge_l),
    "rouge_zh": _best(rouge_l_zh),
    "classification": _best(classification),
    "retrieval": _best(retrieval),
    "retrieval_zh": _best(retrieval_zh),
    "count": _best(count),
    "code_sim": _best(code_sim),
    "exact_contains": exact_contains,
    "fraction": fraction,
}

#: Metrics where a lower value is better (normalised against the full cache as full / policy).
LOWER_IS_BETTER = frozenset({"perplexity"})

# Sample.meta keys forwarded to metrics by ``score_sample``.
_META_KWARGS = ("all_classes", "exclude", "first_line")


def score(metric: str, prediction: str, answers: Sequence[str], **kw: Any) -> float:
    """Score a prediction in [0, 1]. ``first_line=True`` keeps only the first line (LongBench
    does this for few-shot tasks whose models keep generating new examples)."""
    if metric == "perplexity":
        raise ValueError("'perplexity' is computed by the eval harness from logits, not scored")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; available: {', '.join(METRICS)}")
    if isinstance(answers, str):
        answers = [answers]
    if kw.pop("first_line", False):
        prediction = prediction.lstrip("\n").split("\n")[0]
    value = float(METRICS[metric](prediction, list(answers), **kw))
    return min(1.0, max(0.0, value))


def score_sample(sample: Any, prediction: str) -> float:
    """Score a ``Sample`` (passes the metric options stored in its ``meta``)."""
    kw = {k: sample.meta[k] for k in _META_KWARGS if k in sample.meta}
    return score(sample.metric, prediction, sample.answers, **kw)
