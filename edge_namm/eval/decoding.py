"""Running one prepared sample and scoring it: shared by the evaluation harness and training."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_namm.eval.prompting import PreparedSample, PromptBuilder
from edge_namm.tasks import score_sample

SCORE_KINDS = ("task", "logprob")
"""How a question is scored: ``task``, the greedy answer under the task's metric (what eval
reports, mostly 0 or 1); ``logprob``, the probability the model gives the reference answer,
teacher-forced (per-token geometric mean): continuous, so answers that are all wrong still
rank by how close they came. Language-model samples are always scored by perplexity."""


@dataclass
class Answer:
    value: float  # the score (perplexity for language-model samples)
    prediction: str  # the generated answer ("" when none was generated)
    n_generated: int  # tokens generated (or scored, for perplexity)


def answer_tokens(builder: PromptBuilder, sample: Any) -> list[int]:
    """The reference answer as the model would write it after the answer prefix."""
    if not sample.answers:
        return []
    sep = "" if sample.answer_prefix.endswith((" ", "\n")) or not sample.answer_prefix else " "
    return builder.tokenize(sep + ", ".join(str(a) for a in sample.answers))


def run_prepared(
    llm: Any, builder: PromptBuilder, prep: PreparedSample, start: int = 0, kind: str = "task"
) -> Answer:
    """Feed the prompt from token ``start`` (the cache already holds those before it; a
    conversation's turns go in one at a time), then answer and score as ``kind`` says."""
    if kind not in SCORE_KINDS:
        raise ValueError(f"kind must be one of {SCORE_KINDS}, got {kind!r}")
    sample = prep.sample
    if prep.is_lm:
        llm.eval(prep.prompt[start:-1])
        logprobs = llm.eval_logprobs([prep.prompt[-1], *prep.continuation])
        return Answer(float(math.exp(-float(np.mean(logprobs)))), "", len(prep.continuation))
    if kind == "logprob" and sample.answers:
        llm.eval(prep.prompt[start:-1])
        ref = answer_tokens(builder, sample)
        logprobs = llm.eval_logprobs([prep.prompt[-1], *ref])
        return Answer(float(math.exp(float(np.mean(logprobs)))), "", len(ref))
    for end in (*prep.turn_ends, len(prep.prompt)):
        if end > start:
            llm.eval(prep.prompt[start:end])
            start = end
    generated = greedy(llm, builder, sample.max_new_tokens)
    prediction = builder.detokenize(generated)
    return Answer(float(score_sample(sample, prediction)), prediction, len(generated))


def greedy(llm: Any, builder: PromptBuilder, max_new_tokens: int) -> list[int]:
    """Greedy decoding from the logits of the last decoded token, until end of generation."""
    n_vocab = llm.n_vocab()
    out: list[int] = []
    while len(out) < max_new_tokens:
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(n_vocab,))
        token = int(np.argmax(logits))
        if builder.is_end_of_generation(token):
            break
        out.append(token)
        if len(out) < max_new_tokens:
            llm.eval([token])
    return out
