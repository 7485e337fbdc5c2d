"""Greedy answer decoding shared by the evaluation harness and training fitness."""

from __future__ import annotations

from typing import Any

import numpy as np

from edge_namm.eval.prompting import PromptBuilder


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
