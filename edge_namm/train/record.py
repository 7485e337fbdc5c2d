"""Phase 1 of training: record full-cache features once, then evolve against them offline.

One full-cache pass per training prompt (``record_attention=True``) stores, at every update of
the prompt, the raw spectrogram of every cached token for every (layer, KV head) row (float16),
and one importance value per context token: the attention that the question and (teacher-
forced) answer tokens later pay to it, measured in the same pass. Offline fitness of a candidate
scorer replays the updates: at each one it scores the tokens the candidate would still hold
plus the new ones (features as recorded under the full cache), applies the deployment selection
rule (``select_evictions``: score < 0 goes, then the budget), and finally counts the fraction of
importance mass that survived. This costs milliseconds per candidate for the MLP scorers instead
of seconds of LLM time (see docs/TRAINING.md).

Approximation: the features of survivors are those of the full-cache run (with evictions the
softmax renormalises over fewer cells, so real features differ slightly). Phase 2 (on-policy,
true task fitness) corrects for it.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edge_namm.eval.budgets import full_cache_cells
from edge_namm.eval.decoding import answer_tokens
from edge_namm.features import FeatureConfig, NormStats, key_geometry, normalise, raw_features

N_SINK_CAP = 4  # the first tokens soak up attention (attention sinks): cap their importance


@dataclass
class Recording:
    """Everything the offline fitness needs about one training prompt."""

    task: str
    sample_id: str
    n_prompt: int  # tokens of the prompt (what the budget fraction refers to)
    n_total: int  # prompt + generation room (eval sizes its no-eviction check with this)
    n_context: int  # tokens before the question starts
    update_times: list[int]  # tokens seen at each update (<= n_prompt)
    spec: list[np.ndarray]  # per update: float16 [rows, update_time, n_bins] raw spectrogram
    importance: np.ndarray  # float64 [n_context], sums to 1
    # per update: float16 [rows, update_time, 3] raw key geometry (features with `geometry`)
    geometry: list[np.ndarray] = field(default_factory=list, repr=False)
    z: list[np.ndarray] = field(default_factory=list, repr=False)  # normalised, filled lazily

    def nbytes(self) -> int:
        arrays = [*self.spec, *self.geometry, *self.z]
        return int(sum(a.nbytes for a in arrays))


def question_start(builder, sample, mode: str = "after") -> int:
    """Index of the first prompt token of the question (the context ends just before it)."""
    text, add_bos = builder.prompt_text(sample, mode)
    idx = text.rfind(sample.question) if sample.question else -1
    if idx < 0:
        return len(builder.tokenize(text, add_bos=add_bos, special=True))
    return len(builder.tokenize(text[:idx], add_bos=add_bos, special=True))


def context_importance(
    asum_before: np.ndarray, asum_after: np.ndarray, n_context: int
) -> np.ndarray:
    """Attention paid by the question/answer queries to each context token.

    ``asum_*`` are [L, H, n] attention sums (chronological tokens) before the question and
    after the answer. Each (layer, head) row is normalised to sum 1 over the context, the rows
    are averaged, the first ``N_SINK_CAP`` tokens are capped at the largest other value
    (attention sinks), and the result sums to 1.
    """
    diff = np.clip(asum_after[..., :n_context] - asum_before[..., :n_context], 0.0, None)
    diff = diff.reshape(-1, n_context)
    tot = diff.sum(axis=1, keepdims=True)
    rows = diff[tot[:, 0] > 0] / tot[tot[:, 0] > 0]
    imp = rows.mean(axis=0) if len(rows) else np.ones(n_context)
    if n_context > N_SINK_CAP:
        imp[:N_SINK_CAP] = np.minimum(imp[:N_SINK_CAP], imp[N_SINK_CAP:].max())
    total = imp.sum()
    return imp / total if total > 0 else np.full(n_context, 1.0 / max(n_context, 1))


def record_prompts(
    model_path: str,
    builder,
    prepared: Sequence[tuple[str, object]],
    *,
    update_interval: int,
    chunk: int,
    norm: NormStats | None = None,
    progress: Callable[[int], None] | None = None,
    llama_kwargs: dict | None = None,
    mode: str = "after",
    feature_config: FeatureConfig | None = None,
) -> list[Recording]:
    """One full-cache pass per (task, PreparedSample) prepared in prompt ``mode``; see the
    module docstring. ``feature_config`` (default: the paper's) is what the scorer will read;
    with ``repeat`` the context's repeat passes are folded in, but none runs while the
    question and answer are measured, so the importance stays what they attend to."""
    from edge_namm.engine import NammLlama

    recs: list[Recording] = []
    llm = None
    cells = 0
    current: dict[str, Callable] = {}
    try:
        for task, prep in prepared:
            sample = prep.sample
            # LM samples: the importance is the attention the scored continuation pays
            ans = list(prep.continuation) if prep.is_lm else answer_tokens(builder, sample)
            need = prep.n_input + len(ans) + 1
            if llm is None or need > cells:
                if llm is not None:
                    llm.close()
                cells = full_cache_cells(need)
                llm = NammLlama(
                    model_path,
                    policy="full",
                    budget=cells,
                    update_interval=update_interval,
                    chunk=chunk,
                    record_attention=True,
                    feature_config=feature_config,
                    **(llama_kwargs or {}),
                )
                llm.memory.on_update.append(lambda view, _ev: current["fn"](view))
            times: list[int] = []
            specs: list[np.ndarray] = []
            geometry: list[np.ndarray] = []
            n_prompt = prep.n_input

            def _observer(view, times=times, specs=specs, geometry=geometry, n_prompt=n_prompt):
                t = int(view.newest_position) + 1
                if t > n_prompt:
                    return
                spec = view.per_head(view.features.spectrogram)
                rows = spec.reshape(-1, spec.shape[2], spec.shape[3])
                if norm is not None:
                    norm.update(rows)
                times.append(t)
                specs.append(rows.astype(np.float16))
                if view.features.config.geometry:
                    geo = key_geometry(view.keys(), view.values(), view.n_head_kv)
                    geometry.append(geo.astype(np.float16))

            current["fn"] = _observer
            if prep.is_lm:
                n_ctx = n_prompt
            else:
                n_ctx = min(question_start(builder, sample, mode), n_prompt - 1)
            llm.reset()
            llm.repeat_enabled = True
            llm.eval(prep.prompt[:n_ctx])
            before = _chronological_asum(llm)
            llm.repeat_enabled = False
            llm.eval(prep.prompt[n_ctx:] + ans)
            after = _chronological_asum(llm)
            imp = context_importance(before, after[..., : before.shape[-1]], n_ctx)
            recs.append(
                Recording(
                    task=task,
                    sample_id=sample.sample_id,
                    n_prompt=n_prompt,
                    n_total=prep.n_total,
                    n_context=n_ctx,
                    update_times=times,
                    spec=specs,
                    importance=imp,
                    geometry=geometry,
                )
            )
            if progress is not None:
                progress(n_prompt + len(ans))
    finally:
        if llm is not None:
            llm.close()
    return recs


def _chronological_asum(llm) -> np.ndarray:
    view = llm.memory.view()
    return view.per_head(llm.memory.features.attention_sum)


def save_recordings(recs: list[Recording], path: str | Path) -> None:
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump([_strip(r) for r in recs], f, protocol=pickle.HIGHEST_PROTOCOL)
    tmp.replace(path)


def load_recordings(path: str | Path) -> list[Recording]:
    with open(path, "rb") as f:
        return pickle.load(f)


def _strip(rec: Recording) -> Recording:
    return Recording(
        rec.task,
        rec.sample_id,
        rec.n_prompt,
        rec.n_total,
        rec.n_context,
        rec.update_times,
        rec.spec,
        rec.importance,
        rec.geometry,
    )


def norm_stats_of(recs: Sequence[Recording]) -> NormStats:
    """Normalisation statistics pooled over every recorded update (full cache, as the paper)."""
    stats = NormStats()
    for r in recs:
        for s in r.spec:
            stats.update(s)
    return stats


def prepare_z(recs: Sequence[Recording], norm_mean: np.ndarray, norm_std: np.ndarray) -> None:
    """Normalise the recorded spectrograms once with the scorer's frozen statistics."""
    for r in recs:
        r.z = [normalise(s, norm_mean, norm_std) for s in r.spec]


def on_normalized(scorer, backend: str = "numpy"):
    """``scorer`` with identity normalisation, so that its ``score`` takes the recordings'
    already-normalised features; ``backend="auto"`` runs it with ONNX Runtime when installed
    (3-5x faster than numpy for BAM at 1-1.5k cells here, the bulk of an offline candidate)."""
    from edge_namm.scorers import SCORERS
    from edge_namm.scorers.runtime import compile_scorer

    plain = SCORERS[scorer.type_name](
        scorer.params,
        np.zeros_like(scorer.norm_mean),
        np.ones_like(scorer.norm_std),
        feature_config=scorer.feature_config,
        aggregation=scorer.aggregation,
        options=scorer.options,
    )
    return compile_scorer(plain, backend)


def simulate(
    scorer,
    rec: Recording,
    budget_cells: int,
    config: FeatureConfig | None = None,
) -> tuple[float, float]:
    """Replay the updates of one recording under ``scorer``; (importance kept, cache fraction).

    ``scorer.score`` must take normalised features (see :func:`on_normalized`) and ``rec.z``
    must be prepared with the candidate's normalisation (``prepare_z``).
    """
    from edge_namm.policies import NammPolicy

    config = config or FeatureConfig.from_dict(scorer.feature_config or {})
    if config.geometry and len(rec.geometry) != len(rec.update_times):
        raise ValueError(
            f"recording {rec.sample_id} has no key geometry; record it with a geometry scorer"
        )
    policy = NammPolicy(scorer=scorer)  # the engine's scoring and selection rules
    if budget_cells >= rec.n_total:
        return 1.0, 1.0
    kept = np.empty(0, dtype=np.int64)
    prev = 0
    for i, (t, z) in enumerate(zip(rec.update_times, rec.z, strict=True)):
        cand = np.concatenate([kept, np.arange(prev, t, dtype=np.int64)])
        geo = rec.geometry[i][:, cand] if config.geometry else None
        x = raw_features(z[:, cand], (t - 1) - cand, config, geo)  # z: already normalised
        evict = policy.evictions(policy.token_scores(x), budget_cells)
        kept = np.delete(cand, evict)
        prev = t
    ctx = rec.n_context
    retained = rec.importance[kept[kept < ctx]].sum() + rec.importance[min(prev, ctx) :].sum()
    n_now = len(kept) + max(rec.n_prompt - prev, 0)
    return float(retained), n_now / rec.n_prompt


def offline_fitness(
    scorer,
    recs: Sequence[Recording],
    budgets_of: Callable[[Recording], Sequence[int]],
    backend: str = "numpy",
) -> tuple[float, float, dict[str, float]]:
    """(fitness, mean cache fraction kept, per-task fitness): importance retained, mean over
    prompts (and over the budgets ``budgets_of`` gives each prompt) per task, then over tasks
    (as the paper averages its per-task ratios). ``backend``: see :func:`on_normalized`."""
    run = on_normalized(scorer, backend)
    per_task: dict[str, list[float]] = {}
    fracs = []
    for r in recs:
        for cells in budgets_of(r):
            kept, frac = simulate(run, r, cells)
            per_task.setdefault(r.task, []).append(kept)
            fracs.append(frac)
    tasks = {t: float(np.mean(v)) for t, v in per_task.items()}
    return float(np.mean(list(tasks.values()))), float(np.mean(fracs)), tasks
