"""Loader for LongBench-format JSONL that users bring themselves (the data lives on the HF hub).

Each line of ``<dataset>.jsonl`` (or ``<dataset>_e.jsonl`` for LongBench-E) is a record with
``input, context, answers, length, dataset, language, all_classes, _id``. Records become
``Sample``s with the dataset's metric and generation length (LongBench's values) and a short
prompt of our own. Bad lines are skipped with a warning naming the file and line, so one broken
record does not cost a whole evaluation run.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from edge_namm.tasks.sample import CountTokens, Sample, approx_count_tokens


@dataclass(frozen=True)
class DatasetSpec:
    """How to prompt and score one LongBench dataset."""

    metric: str
    max_new_tokens: int
    question: str  # template with {input}
    answer_prefix: str = ""
    first_line: bool = False  # few-shot tasks: score only the first generated line


_QA = "Answer the question using the text above. Be brief.\nQuestion: {input}"
_QA_ZH = "请根据上面的文章简要回答问题。\n问题：{input}"

LONGBENCH_DATASETS: dict[str, DatasetSpec] = {
    # single-document QA
    "narrativeqa": DatasetSpec(
        "qa_f1",
        128,
        "Answer the question about the story above in a short phrase.\nQuestion: {input}",
        "Answer:",
    ),
    "qasper": DatasetSpec(
        "qa_f1",
        128,
        "Answer the question about the paper above as briefly as possible. "
        'Reply "unanswerable" if the paper does not say, or "yes"/"no" for yes/no questions.\n'
        "Question: {input}",
        "Answer:",
    ),
    "multifieldqa_en": DatasetSpec("qa_f1", 64, _QA, "Answer:"),
    "multifieldqa_zh": DatasetSpec("qa_f1_zh", 64, _QA_ZH, "回答："),
    # multi-document QA
    "hotpotqa": DatasetSpec("qa_f1", 32, _QA, "Answer:"),
    "2wikimqa": DatasetSpec("qa_f1", 32, _QA, "Answer:"),
    "musique": DatasetSpec("qa_f1", 32, _QA, "Answer:"),
    "dureader": DatasetSpec("rouge_zh", 128, _QA_ZH, "回答："),
    # summarisation
    "gov_report": DatasetSpec(
        "rouge", 512, "Summarise the report above in one or two paragraphs.", "Summary:"
    ),
    "qmsum": DatasetSpec(
        "rouge",
        512,
        "Using the meeting transcript above, answer this request in a few "
        "sentences.\nRequest: {input}",
        "Answer:",
    ),
    "multi_news": DatasetSpec(
        "rouge", 512, "Write a short summary covering all the news articles above.", "Summary:"
    ),
    "vcsum": DatasetSpec("rouge_zh", 512, "请用一段话总结上面的会议记录。", "总结："),
    # few-shot
    "trec": DatasetSpec(
        "classification",
        64,
        "Classify the following question with one of the question "
        "types used in the examples above.\n{input}",
        "Type:",
        first_line=True,
    ),
    "triviaqa": DatasetSpec(
        "qa_f1",
        32,
        "Answer the following question in the same style as the examples above.\n{input}",
        "Answer:",
        first_line=True,
    ),
    "samsum": DatasetSpec(
        "rouge",
        128,
        "Summarise the following dialogue in the same style as the examples above.\n{input}",
        "Summary:",
        first_line=True,
    ),
    "lsht": DatasetSpec(
        "classification",
        64,
        "请按照上面示例中的类别，判断下面这则新闻的类别。\n{input}",
        "类别：",
        first_line=True,
    ),
    # synthetic
    "passage_count": DatasetSpec(
        "count",
        32,
        "How many different paragraphs are there in the text above, after "
        "removing duplicates? Reply with a single number.",
        "The number of different paragraphs is",
    ),
    "passage_retrieval_en": DatasetSpec(
        "retrieval",
        32,
        "Which paragraph above does the following summary describe? Reply "
        'in the form "Paragraph N".\nSummary: {input}',
        "The answer is",
    ),
    "passage_retrieval_zh": DatasetSpec(
        "retrieval_zh",
        32,
        '下面的摘要出自上面的哪一个段落？请按"段落N"的格式回答。\n摘要：{input}',
        "答案是",
    ),
    # code
    "lcc": DatasetSpec("code_sim", 64, "Write the next line of the code above.", ""),
    "repobench-p": DatasetSpec(
        "code_sim",
        64,
        "Using the repository files above, write the next line of this code.\n{input}",
        "",
    ),
}


def base_dataset(name: str) -> str:
    """Strip the LongBench-E suffix: ``hotpotqa_e`` -> ``hotpotqa``."""
    return name[:-2] if name.endswith("_e") and name[:-2] in LONGBENCH_DATASETS else name


def truncate_middle(text: str, max_tokens: int, count_tokens: CountTokens) -> str:
    """Keep the head and tail of ``text`` within ``max_tokens`` (LongBench truncates the middle).

    Works on characters, shrinking until the token count fits, so any tokenizer can be used.
    """
    n = count_tokens(text)
    if n <= max_tokens:
        return text
    keep = int(len(text) * max_tokens / n)
    while keep > 0:
        half = keep // 2
        cut = text[:half] + text[len(text) - (keep - half) :]
        if count_tokens(cut) <= max_tokens:
            return cut
        keep = int(keep * 0.95)
    return ""


def _record_to_sample(
    rec: Any,
    dataset: str,
    count_tokens: CountTokens,
    max_context_tokens: int | None,
) -> Sample:
    if not isinstance(rec, dict):
        raise ValueError("record is not a JSON object")
    context = rec.get("context")
    if not isinstance(context, str):
        raise ValueError("field 'context' missing or not a string")
    inp = rec.get("input") or ""
    if not isinstance(inp, str):
        raise ValueError("field 'input' is not a string")
    answers = rec.get("answers")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not answers:
        raise ValueError("field 'answers' missing or empty")
    all_classes = rec.get("all_classes")
    if all_classes is not None and not isinstance(all_classes, list):
        raise ValueError("field 'all_classes' is not a list")
    spec = LONGBENCH_DATASETS[base_dataset(dataset)]
    if max_context_tokens is not None:
        context = truncate_middle(context, max_context_tokens, count_tokens)
    question = spec.question.format(input=inp)
    meta: dict[str, Any] = {
        "dataset": base_dataset(dataset),
        "language": rec.get("language"),
        "source_length": rec.get("length"),
    }
    if all_classes:
        meta["all_classes"] = [str(c) for c in all_classes]
    if spec.first_line:
        meta["first_line"] = True
    sample = Sample(
        task=dataset,
        context=context,
        question=question,
        answer_prefix=spec.answer_prefix,
        answers=[str(a) for a in answers],
        max_new_tokens=spec.max_new_tokens,
        length=0,
        depth=None,
        metric=spec.metric,
        sample_id=str(rec.get("_id") or ""),
        meta=meta,
    )
    # length: measured prompt tokens (records vary in length, there is no target)
    return replace(sample, length=count_tokens(sample.prompt("after")))


def _find_file(data_dir: Path, dataset: str) -> Path | None:
    for name in (f"{dataset}.jsonl", f"{dataset}_e.jsonl"):
        if (data_dir / name).is_file():
            return data_dir / name
    return None


def load_longbench(
    data_dir: str | Path,
    datasets: Sequence[str] | None = None,
    count_tokens: CountTokens = approx_count_tokens,
    max_context_tokens: int | None = None,
    limit: int | None = None,
) -> list[Sample]:
    """Load LongBench JSONL files from ``data_dir`` as ``Sample``s.

    ``datasets``: names such as ``hotpotqa`` (``hotpotqa.jsonl`` is used, else
    ``hotpotqa_e.jsonl``) or explicitly ``hotpotqa_e``; ``None`` loads every known dataset file
    present. ``max_context_tokens`` truncates contexts in the middle; ``limit`` caps records per
    file. Malformed lines are skipped with a ``UserWarning`` naming file and line number.
    """
    root = Path(data_dir).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"LongBench data directory not found: {root}")
    files: list[tuple[str, Path]] = []
    if datasets is None:
        for f in sorted(root.glob("*.jsonl")):
            if base_dataset(f.stem) in LONGBENCH_DATASETS:
                files.append((f.stem, f))
        if not files:
            raise FileNotFoundError(f"no LongBench <dataset>.jsonl files in {root}")
    else:
        for name in datasets:
            if base_dataset(name) not in LONGBENCH_DATASETS:
                known = ", ".join(LONGBENCH_DATASETS)
                raise ValueError(f"unknown LongBench dataset {name!r}; known: {known}")
            f = _find_file(root, name)
            if f is None:
                raise FileNotFoundError(f"no {name}.jsonl or {name}_e.jsonl in {root}")
            files.append((f.stem, f))

    out: list[Sample] = []
    for dataset, path in files:
        n = 0
        with open(path, encoding="utf-8", errors="replace") as fh:
            for lineno, line in enumerate(fh, 1):
                if limit is not None and n >= limit:
                    break
                if not line.strip():
                    continue
                try:
                    rec = json.loads(line)
                    sample = _record_to_sample(rec, dataset, count_tokens, max_context_tokens)
                except (ValueError, TypeError, KeyError) as e:
                    warnings.warn(
                        f"{path}:{lineno}: skipping malformed LongBench record ({e})",
                        stacklevel=2,
                    )
                    continue
                if not sample.sample_id:
                    sample = replace(sample, sample_id=f"{dataset}-{lineno}")
                out.append(sample)
                n += 1
    return out
