"""Turn task samples into the token ids the model is evaluated on.

Question-answering samples go through the model's own chat template (read from the GGUF
metadata) as one user turn, and the assistant turn is opened with ``sample.answer_prefix`` so a
small model answers in the expected shape ("The pass key is ..."). A model without a template
gets plain text. Language-modelling samples (``metric == "perplexity"``) are plain text: the
context, then the held-out continuation whose perplexity is measured.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import llama_cpp
from llama_cpp.llama_chat_format import Jinja2ChatFormatter

from edge_namm.tasks import Sample

PLAIN_SEPARATOR = "\n\n"


@dataclass(frozen=True)
class PreparedSample:
    """A sample with its tokens. ``prompt`` is prefilled; then either up to ``max_new_tokens``
    are generated greedily (QA), or ``continuation`` is scored for perplexity (LM)."""

    sample: Sample
    prompt: list[int]
    continuation: list[int]  # empty except for perplexity samples
    turn_ends: tuple[int, ...] = ()  # multi-turn samples: prompt[:e] ends a message

    @property
    def is_lm(self) -> bool:
        return self.sample.metric == "perplexity"

    @property
    def n_input(self) -> int:
        """Tokens prefilled before the model answers (what the budget compresses)."""
        return len(self.prompt)

    @property
    def n_generate(self) -> int:
        """Tokens that enter the cache after the prompt (generation or scored continuation)."""
        return len(self.continuation) if self.is_lm else self.sample.max_new_tokens

    @property
    def n_total(self) -> int:
        return self.n_input + self.n_generate


class PromptBuilder:
    """Formats and tokenizes samples for one model (any ``llama_cpp.Llama`` of that model).

    ``from_model_path`` loads only the vocabulary, which is fast and needs no KV memory, so the
    harness can count tokens and build prompts before any evaluation context exists.
    """

    def __init__(self, llm: llama_cpp.Llama) -> None:
        self._llm = llm
        self.template: str | None = llm.metadata.get("tokenizer.chat_template") or None
        self._formatter: Jinja2ChatFormatter | None = None
        if self.template:
            eos_id, bos_id = llm.token_eos(), llm.token_bos()
            self._formatter = Jinja2ChatFormatter(
                template=self.template,
                eos_token=llm._model.token_get_text(eos_id) if eos_id != -1 else "",
                bos_token=llm._model.token_get_text(bos_id) if bos_id != -1 else "",
                add_generation_prompt=True,
            )

    @classmethod
    def from_model_path(cls, model_path: str | Path) -> PromptBuilder:
        from llama_cpp._utils import suppress_stdout_stderr

        with suppress_stdout_stderr(disable=False):
            llm = llama_cpp.Llama(str(model_path), vocab_only=True, verbose=False)
        return cls(llm)

    @property
    def uses_chat_template(self) -> bool:
        return self._formatter is not None

    # --- tokens --------------------------------------------------------------------------
    def tokenize(self, text: str, add_bos: bool = False, special: bool = False) -> list[int]:
        return self._llm.tokenize(text.encode("utf-8"), add_bos=add_bos, special=special)

    def count_tokens(self, text: str) -> int:
        """Token count of plain text (no BOS): what the task generators aim lengths with."""
        return len(self.tokenize(text))

    def detokenize(self, tokens: list[int]) -> str:
        return self._llm.detokenize(tokens).decode("utf-8", errors="replace")

    def is_end_of_generation(self, token: int) -> bool:
        return bool(llama_cpp.llama_vocab_is_eog(self._llm._model.vocab, token))

    # --- formatting ----------------------------------------------------------------------
    def prompt_text(self, sample: Sample, mode: str = "after") -> tuple[str, bool]:
        """(text, add_bos): the chat-formatted prompt, assistant turn opened with the prefix."""
        messages = self._messages(sample, mode)
        if self._formatter is None:
            user = PLAIN_SEPARATOR.join(m["content"] for m in messages)
            return user + PLAIN_SEPARATOR + sample.answer_prefix, True
        result: Any = self._formatter(messages=messages)
        # as llama-cpp-python does: templates render their own BOS when they want one
        return result.prompt + sample.answer_prefix, not result.added_special

    @staticmethod
    def _messages(sample: Sample, mode: str) -> list[dict]:
        """One user turn, or a multi-turn conversation (``meta["messages"]``) then the question."""
        turns = sample.meta.get("messages")
        if turns:
            return [*turns, {"role": "user", "content": sample.question}]
        return [{"role": "user", "content": sample.prompt(mode)}]

    def _turn_ends(self, sample: Sample, mode: str, n_prompt: int) -> tuple[int, ...]:
        """Token index where each earlier message ends in the formatted prompt (the prefix
        formatted alone, tokenized), so a harness can feed a conversation turn by turn."""
        turns = sample.meta.get("messages") or []
        if not turns or self._formatter is None:
            return ()
        formatter = Jinja2ChatFormatter(
            template=self.template,
            eos_token=self._formatter.eos_token,
            bos_token=self._formatter.bos_token,
            add_generation_prompt=False,
        )
        ends = []
        for k in range(1, len(turns) + 1):
            result: Any = formatter(messages=turns[:k])
            n = len(self.tokenize(result.prompt, add_bos=not result.added_special, special=True))
            if ends and n <= ends[-1] or n >= n_prompt:
                return ()  # the template does not render prefixes stably: one piece
            ends.append(n)
        return tuple(ends)

    def prepare(self, sample: Sample, mode: str = "after") -> PreparedSample:
        if sample.metric == "perplexity":
            context = self.tokenize(sample.context, add_bos=True)
            cont_text = sample.meta.get("continuation", "")
            if not cont_text:
                raise ValueError(f"sample {sample.sample_id} has no continuation to score")
            continuation = self.tokenize(" " + cont_text)
            return PreparedSample(sample, context, continuation)
        text, add_bos = self.prompt_text(sample, mode)
        tokens = self.tokenize(text, add_bos=add_bos, special=True)
        return PreparedSample(sample, tokens, [], self._turn_ends(sample, mode, len(tokens)))
