"""Phase 2 fitness: the true task score with the LLM in the loop (paper protocol, §1.5).

Prompts are built by the evaluation harness's ``PromptBuilder`` and scored with the tasks'
``score_sample``, and budgets resolve exactly as ``edge-namm eval`` resolves them, so the
training fitness of a scorer is the evaluation score it gets (normalised by the full cache).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from edge_namm.eval.budgets import full_cache_cells
from edge_namm.eval.decoding import SCORE_KINDS, run_prepared
from edge_namm.eval.prompting import PreparedSample, PromptBuilder
from edge_namm.eval.results import ratio_to_full
from edge_namm.tasks.metrics import LOWER_IS_BETTER

FITNESS_KINDS = SCORE_KINDS


def run_sample(llm: Any, builder: PromptBuilder, prep: PreparedSample, kind: str = "task") -> float:
    """Reset, prefill, answer (or score perplexity), return the score ``kind`` asks for."""
    llm.reset()
    return run_prepared(llm, builder, prep, 0, kind).value


def run_from_prefix(
    llm: Any,
    builder: PromptBuilder,
    prep: PreparedSample,
    state: Any,
    n: int,
    kind: str = "task",
) -> float:
    """As ``run_sample`` but starting from ``state``, saved after the first ``n`` prompt tokens
    (fewer than one update interval, so no policy decision was taken yet)."""
    llm.load_state(state)
    return run_prepared(llm, builder, prep, n, kind).value


def task_ratio(
    scores: Sequence[float], full: Sequence[float], lower_is_better: bool = False
) -> float:
    """Per-task normalised score: mean score / mean full-cache score on the same prompts,
    inverted (full / score) where lower is better (perplexity), as ``edge-namm eval`` does.

    When the full cache scores 0 on every prompt of a task the ratio is undefined; the mean
    score itself is used (any success is a gain over the full cache).
    """
    mine = float(np.mean(scores)) if len(scores) else 0.0
    ref = float(np.mean(full)) if len(full) else 0.0
    return ratio_to_full(mine, ref, lower_is_better, undefined="score")


class OnlineFitness:
    """Evaluates candidate scorers on a fixed list of (task, PreparedSample) with the LLM.

    One ``NammLlama`` per resolved cell budget is kept and reused; the candidate scorer is
    swapped into its policy. Full-cache scores are computed once per prompt (``full_scores``
    can be pre-filled from a checkpoint). ``kind`` (``FITNESS_KINDS``) says how a retrieval
    prompt is scored; ``feature_config`` is the candidates' (a repeat pass runs when it asks).
    """

    def __init__(
        self,
        model_path: str,
        builder: PromptBuilder,
        prepared: Sequence[tuple[str, PreparedSample]],
        budgets_of: Callable[[PreparedSample], Sequence[int]],
        *,
        update_interval: int,
        chunk: int,
        seed: int = 0,
        full_scores: dict[str, float] | None = None,
        llama_kwargs: dict | None = None,
        reuse_prefix: bool = True,
        kind: str = "task",
    ) -> None:
        if kind not in FITNESS_KINDS:
            raise ValueError(f"fitness kind must be one of {FITNESS_KINDS}, got {kind!r}")
        self.kind = kind
        self.model_path = model_path
        self.builder = builder
        self.prepared = list(prepared)
        self.budgets_of = budgets_of
        self.update_interval = update_interval
        self.chunk = chunk
        self.seed = seed
        self.full_scores: dict[str, float] = dict(full_scores or {})
        self.llama_kwargs = dict(llama_kwargs or {})
        self.reuse_prefix = reuse_prefix
        self._engines: dict[int, Any] = {}
        self._prefix: dict[tuple[int, str], Any] = {}

    def _engine(self, cells: int, policy: Any) -> Any:
        from edge_namm.engine import NammLlama

        llm = self._engines.get(cells)
        if llm is None:
            llm = NammLlama(
                self.model_path,
                policy=policy,
                budget=cells,
                update_interval=self.update_interval,
                chunk=self.chunk,
                seed=self.seed,
                **self.llama_kwargs,
            )
            self._engines[cells] = llm
        return llm

    def key(self, prep: PreparedSample) -> str:
        """Full-cache scores of the two kinds differ: they are kept apart (checkpoints too)."""
        sid = prep.sample.sample_id
        return sid if self.kind == "task" or prep.is_lm else f"{sid}:{self.kind}"

    def ensure_full_scores(self, progress: Callable[[], None] | None = None) -> dict[str, float]:
        from edge_namm.engine import NammLlama

        missing = [p for _, p in self.prepared if self.key(p) not in self.full_scores]
        if not missing:
            return self.full_scores
        llm = None
        cells = 0
        try:
            for prep in missing:
                need = full_cache_cells(prep.n_total)
                if llm is None or need > cells:
                    if llm is not None:
                        llm.close()
                    cells = need
                    llm = NammLlama(
                        self.model_path,
                        policy="full",
                        budget=cells,
                        update_interval=self.update_interval,
                        chunk=self.chunk,
                        seed=self.seed,
                        **self.llama_kwargs,
                    )
                self.full_scores[self.key(prep)] = run_sample(llm, self.builder, prep, self.kind)
                if progress is not None:
                    progress()
        finally:
            if llm is not None:
                llm.close()
        return self.full_scores

    def evaluate(self, scorer: Any) -> tuple[float, float, dict[str, float]]:
        """(fitness, mean cache fraction kept, per-task ratio) of one candidate scorer, over
        every prompt and every budget ``budgets_of`` gives it."""
        self.ensure_full_scores()
        scores: dict[str, list[float]] = {}
        fulls: dict[str, list[float]] = {}
        fracs: list[float] = []
        for task, prep in self.prepared:
            for cells in self.budgets_of(prep):
                value, frac = self._run(scorer, prep, cells)
                scores.setdefault(task, []).append(value)
                fulls.setdefault(task, []).append(self.full_scores[self.key(prep)])
                fracs.append(frac)
        lower = {t for t, prep in self.prepared if prep.sample.metric in LOWER_IS_BETTER}
        per_task = {t: task_ratio(scores[t], fulls[t], t in lower) for t in scores}
        return float(np.mean(list(per_task.values()))), float(np.mean(fracs)), per_task

    def _run(self, scorer: Any, prep: PreparedSample, cells: int) -> tuple[float, float]:
        """(task score, cache fraction kept) of one prompt under ``scorer`` and ``cells``."""
        from edge_namm.policies import NammPolicy

        sid = prep.sample.sample_id
        if cells >= prep.n_total:  # nothing would be evicted: the full cache's answer
            return self.full_scores[self.key(prep)], 1.0
        llm = self._engine(cells, NammPolicy(scorer=scorer))
        llm.policy.scorer = scorer
        llm.memory.policy.scorer = scorer
        llm.memory.reset_stats()
        n_pre = self.update_interval - 1 if self.reuse_prefix and not prep.is_lm else 0
        if 0 < n_pre < prep.n_input:
            key = (cells, sid)
            if key not in self._prefix:
                # every candidate shares the tokens before the first update
                llm.reset()
                llm.eval(prep.prompt[:n_pre])
                self._prefix[key] = llm.save_state()
            value = run_from_prefix(llm, self.builder, prep, self._prefix[key], n_pre, self.kind)
        else:
            value = run_sample(llm, self.builder, prep, self.kind)
        st = llm.stats
        return value, min(1.0, st.cells_used / max(st.tokens_seen, 1))  # load_state restores stats

    def close(self) -> None:
        for llm in self._engines.values():
            llm.close()
        self._engines.clear()
