"""The evaluation harness: every policy x budget x task sample, one results row each.

``run_eval`` generates (or loads) the samples, builds one ``NammLlama`` per (policy, cells)
and reuses it with ``reset()`` for every sample that resolves to that many cells, decodes
greedily, scores, and appends one JSON row per sample to ``<out>/results.jsonl``. Rows already
in that file (same key) are skipped, so an interrupted run resumes where it stopped.

Budgets are cells (``"1024"``) or fractions of each sample's input (``"0.25"``, ``"25%"``).
A fraction is resolved per sample against the prompt's token count and rounded to a multiple
of 16 cells, so samples of nearly the same length share one engine. A budget that holds the
whole input plus the generation means nothing has to be evicted: such rows say
``no_eviction: true`` (the engine's cache is then sized to the sample, not to the budget).
The ``full`` policy ignores budgets: it runs once per sample with a cache sized to the input.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

# The names marked F401 are not used here but are the runner's API: callers import them from it.
from edge_namm.eval.budgets import (
    CELL_QUANTUM,  # noqa: F401
    FULL_QUANTUM,  # noqa: F401
    NO_BUDGET,  # noqa: F401
    Budget,
    comma_list,
    full_cache_cells,
    min_budget_cells,
    parse_budget,  # noqa: F401
    parse_budgets,
)
from edge_namm.eval.decoding import run_prepared
from edge_namm.eval.prompting import PreparedSample, PromptBuilder
from edge_namm.eval.results import (
    FULL_BUDGET,
    KEY_FIELDS,  # noqa: F401
    RESULTS_FILE,
    RUNS_FILE,
    read_results,
    row_key,
)
from edge_namm.policies import POLICIES, make_policy
from edge_namm.tasks import (
    LONGBENCH_DATASETS,
    PROMPT_MODES,
    TASKS,
    Haystack,
    Sample,
    load_longbench,
    make_samples,
)

LONGBENCH_PREFIX = "longbench:"
DEFAULT_BUDGETS = ("0.125", "0.25", "0.5")


# --- names -------------------------------------------------------------------------------------
RECALL_SUFFIX = "+recall"


def split_policy(name: str) -> tuple[str, bool]:
    """'tova+recall' -> ('tova', True): recall is a switch on top of any policy."""
    if name.endswith(RECALL_SUFFIX):
        return name[: -len(RECALL_SUFFIX)], True
    return name, False


def parse_policies(names: str | Iterable[str] | None) -> list[str]:
    """Policy names (comma list or iterable; None = all), validated against the registry; any
    name may carry '+recall' (the cold tier with query-aware recall)."""
    if names is None:
        return list(POLICIES)
    out = comma_list(names)
    valid = f"valid policies: {', '.join(POLICIES)} (each also as NAME+recall)"
    if not out:
        raise ValueError(f"no policies given; {valid}")
    for name in out:
        base, recall = split_policy(name)
        if base not in POLICIES or (recall and base == "full"):
            raise ValueError(f"unknown policy {name!r}; {valid}, except full+recall")
    return list(dict.fromkeys(out))


def valid_task_names() -> str:
    return ", ".join([*TASKS, "longbench (every file in --data-dir)", "longbench:<dataset>"])


def parse_tasks(names: str | Iterable[str]) -> list[str]:
    """Task names: synthetic ones (``TASKS``), ``longbench:<dataset>`` or ``longbench``."""
    out = comma_list(names)
    if not out:
        raise ValueError(f"no tasks given; valid tasks: {valid_task_names()}")
    for name in out:
        if name in TASKS or name == "longbench":
            continue
        if name.startswith(LONGBENCH_PREFIX):
            dataset = name[len(LONGBENCH_PREFIX) :]
            base = dataset[:-2] if dataset.endswith("_e") else dataset
            if base not in LONGBENCH_DATASETS:
                raise ValueError(
                    f"unknown LongBench dataset {dataset!r}; known: {', '.join(LONGBENCH_DATASETS)}"
                )
            continue
        raise ValueError(f"unknown task {name!r}; valid tasks: {valid_task_names()}")
    return list(dict.fromkeys(out))


def parse_lengths(lengths: str | Iterable[int | str]) -> list[int]:
    out = []
    for item in comma_list(lengths):
        try:
            n = int(item)
        except ValueError:
            raise ValueError(f"bad length {item!r}: give token counts, e.g. 2048,4096") from None
        if n < 16:
            raise ValueError(f"length {n} is too short (at least 16 tokens)")
        out.append(n)
    return list(dict.fromkeys(out))


def even_depths(n: int) -> list[float]:
    """``n`` needle depths spread evenly over the context (centres of n equal bins)."""
    return [round((i + 0.5) / n, 4) for i in range(n)]


# --- samples -----------------------------------------------------------------------------------
def build_samples(
    tasks: Sequence[str],
    lengths: Sequence[int],
    n_samples: int,
    seed: int,
    builder: PromptBuilder,
    haystack: Haystack | str | Path | None = None,
    data_dir: str | Path | None = None,
    depths: Sequence[float] | None = None,
) -> list[tuple[str, Sample]]:
    """(task name, sample) pairs, in task then length order, deterministic for a seed.

    Synthetic tasks are generated with the model's tokenizer so lengths are real token counts;
    needle depths default to ``even_depths(n_samples)``. LongBench files are read from
    ``data_dir`` (at most ``n_samples`` records each), contexts middle-truncated to the longest
    of ``lengths``; malformed lines are skipped with a warning naming file and line.
    """
    out: list[tuple[str, Sample]] = []
    hay: Haystack | None = haystack if isinstance(haystack, Haystack) else None
    for task in tasks:
        if task in TASKS:
            if hay is None:
                hay = Haystack.from_dir(haystack) if haystack is not None else Haystack.default()
            for length in lengths:
                samples = make_samples(
                    task,
                    n_samples,
                    length,
                    seed,
                    split="eval",
                    haystack=hay,
                    count_tokens=builder.count_tokens,
                    depths=list(depths) if depths else even_depths(n_samples),
                )
                out += [(task, s) for s in samples]
            continue
        if data_dir is None:
            raise ValueError(f"task {task!r} reads LongBench files: pass --data-dir")
        datasets = None if task == "longbench" else [task[len(LONGBENCH_PREFIX) :]]
        samples = load_longbench(
            data_dir,
            datasets,
            count_tokens=builder.count_tokens,
            max_context_tokens=max(lengths) if lengths else None,
            limit=n_samples,
        )
        if not samples:
            warnings.warn(f"{task}: no usable records in {data_dir}", stacklevel=2)
        out += [(f"{LONGBENCH_PREFIX}{s.task}", s) for s in samples]
    return out


# --- jobs --------------------------------------------------------------------------------------
@dataclass
class _Job:
    policy: str
    budget: Budget | None  # None for full
    task: str
    prep: PreparedSample
    key_row: dict
    budget_cells: int  # what the budget asks for
    engine_cells: int  # the engine's budget (clamped / sized to the sample)
    no_eviction: bool
    clamped: bool


def _plan(
    policies: Sequence[str],
    budgets: Sequence[Budget],
    prepared: Sequence[tuple[str, PreparedSample]],
    base: dict,
    min_cells: dict[str, int],
) -> list[_Job]:
    jobs: list[_Job] = []
    for policy in policies:
        for budget in [None] if policy == "full" else budgets:
            for task, prep in prepared:
                key_row = dict(
                    base,
                    policy=policy,
                    budget=FULL_BUDGET if budget is None else budget.label,
                    task=task,
                    sample_id=prep.sample.sample_id,
                )
                if budget is None:
                    cells = prep.n_total
                    engine = full_cache_cells(cells)
                    clamped = False
                elif budget.unbounded:  # no cap: the cache holds the whole sample if need be
                    cells = prep.n_total
                    engine = max(full_cache_cells(cells), min_cells[policy])
                    clamped = False
                else:
                    cells = budget.resolve(prep.n_input)
                    engine = cells
                    if cells >= prep.n_total:  # never evicts: size the cache to the sample
                        engine = full_cache_cells(prep.n_total)
                    clamped = cells < prep.n_total and engine < min_cells[policy]
                    engine = max(engine, min_cells[policy])
                jobs.append(
                    _Job(
                        policy,
                        budget,
                        task,
                        prep,
                        key_row,
                        cells,
                        engine,
                        no_eviction=cells >= prep.n_total and not (budget and budget.unbounded),
                        clamped=clamped,
                    )
                )
    return jobs


# --- one sample --------------------------------------------------------------------------------
class _PeakTracker:
    """Observer on the engine's updates: the most cells held just before an eviction."""

    def __init__(self) -> None:
        self.peak = 0

    def __call__(self, view: Any, evicted: np.ndarray) -> None:
        self.peak = max(self.peak, int(view.n))


def _evaluate(llm: Any, builder: PromptBuilder, job: _Job, tracker: _PeakTracker) -> dict:
    mem = llm.memory
    tracker.peak = 0
    prep, sample = job.prep, job.prep.sample
    t0 = time.perf_counter()
    llm.reset(stats=True)
    answer = run_prepared(llm, builder, prep)
    value, prediction, n_generated = answer.value, answer.prediction, answer.n_generated
    seconds = time.perf_counter() - t0
    st = mem.stats
    used = st.max_cells_after_update if st.updates else st.cells_used
    peak = max(tracker.peak, st.cells_used)
    return dict(
        job.key_row,
        metric=sample.metric,
        score=value,
        prediction=prediction,
        answers=list(sample.answers),
        length=prep.n_input,
        target_length=sample.length,
        depth=sample.depth,
        n_generated=n_generated,
        budget_fraction=None if job.budget is None else job.budget.fraction,
        budget_cells=job.budget_cells,
        engine_cells=job.engine_cells,
        no_eviction=job.no_eviction,
        budget_clamped=job.clamped,
        cells_used=int(used),
        cells_peak=int(peak),
        kv_bytes_in_use=int(used * st.bytes_per_cell),
        kv_bytes_peak=int(peak * st.bytes_per_cell),
        kv_bytes_allocated=int(st.kv_bytes_allocated),
        kv_bytes_full_cache=int(st.kv_bytes_full_cache),
        tokens_seen=int(st.tokens_seen),
        tokens_evicted=int(st.tokens_evicted),
        updates=int(st.updates),
        seconds_total=seconds,
        seconds_llama=float(st.seconds_llama),
        seconds_namm=float(st.seconds_namm),
        tokens_recalled=int(st.tokens_recalled),
        cold_tokens=int(st.cold_tokens),
        seconds_recall=float(st.seconds_recall),
    )


# --- the harness -------------------------------------------------------------------------------
def run_eval(
    model_path: str | Path,
    policies: str | Iterable[str] | None = None,
    budgets: str | Iterable[str | int | float] = DEFAULT_BUDGETS,
    tasks: str | Iterable[str] = ("passkey",),
    lengths: str | Iterable[int] = (2048,),
    samples: int = 2,
    seed: int = 0,
    out_dir: str | Path = "eval-out",
    mode: str = "after",
    data_dir: str | Path | None = None,
    haystack: Haystack | str | Path | None = None,
    update_interval: int = 512,
    chunk: int = 128,
    scorer: Any = None,
    recall_max: int | float | None = None,
    recall_heads: str | None = None,
    n_threads: int | None = None,
    n_gpu_layers: int = 0,
    depths: Sequence[float] | None = None,
    progress: bool = True,
    report: bool = True,
) -> list[dict]:
    """Evaluate policies x budgets on task samples; returns this run's rows (old and new).

    Writes ``<out_dir>/results.jsonl`` (one row per sample, appended as it finishes), appends
    the run's configuration and wall time to ``runs.jsonl`` and, with ``report=True``, writes
    the summary files and plots (``edge_namm.eval.report.write_report``).
    """
    policy_names = parse_policies(policies)
    budget_list = parse_budgets(budgets)
    task_names = parse_tasks(tasks)
    length_list = parse_lengths(lengths)
    if mode not in PROMPT_MODES:
        raise ValueError(f"unknown prompt mode {mode!r}; valid modes: {', '.join(PROMPT_MODES)}")
    if samples < 1:
        raise ValueError(f"--samples must be >= 1, got {samples}")
    if not length_list and any(t in TASKS for t in task_names):
        raise ValueError("no lengths given for the synthetic tasks")
    from edge_namm.engine import NammLlama
    from edge_namm.engine.namm_llama import check_model_file

    model_file = check_model_file(model_path)
    t_start = time.perf_counter()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results_path = out / RESULTS_FILE

    builder = PromptBuilder.from_model_path(model_file)
    pairs = build_samples(
        task_names, length_list, samples, seed, builder, haystack, data_dir, depths
    )
    prepared = [(task, builder.prepare(s, mode)) for task, s in pairs]

    def takes_scorer(policy: str) -> bool:
        return POLICIES[split_policy(policy)[0]].uses_scorer

    scorer_name = None
    if any(takes_scorer(p) for p in policy_names):
        from edge_namm.scorers.default import default_scorer_path

        scorer_name = str(scorer) if scorer is not None else default_scorer_path().name
    base = dict(
        model=model_file.name,
        scorer=None,
        seed=seed,
        mode=mode,
        update_interval=update_interval,
        chunk=chunk,
    )
    min_cells = {}
    for p in policy_names:
        p_base = split_policy(p)[0]
        pol = make_policy(p_base, scorer=scorer if takes_scorer(p) else None)
        min_cells[p] = min_budget_cells(chunk, pol.n_protected)
    jobs = _plan(policy_names, budget_list, prepared, base, min_cells)
    for job in jobs:
        if takes_scorer(job.policy):
            job.key_row["scorer"] = scorer_name
        if recall_max is not None and split_policy(job.policy)[1]:
            job.key_row["recall_max"] = recall_max  # a rerun with another cap is a new row
        if recall_heads is not None and split_policy(job.policy)[1]:
            job.key_row["recall_heads"] = recall_heads
    done = {row_key(r): r for r in read_results(results_path)}
    todo = [j for j in jobs if row_key(j.key_row) not in done]
    _warn_clamped(todo, min_cells)

    groups: dict[tuple[str, int], list[_Job]] = {}
    for job in todo:
        groups.setdefault((job.policy, job.engine_cells), []).append(job)
    order = {p: i for i, p in enumerate(policy_names)}

    bar = None
    if progress and todo:
        from tqdm import tqdm

        bar = tqdm(total=len(todo), desc="eval", unit="sample", dynamic_ncols=True)
    new_rows: dict[tuple, dict] = {}
    try:
        with open(results_path, "a", encoding="utf-8") as fh:
            ordered = sorted(groups.items(), key=lambda kv: (order[kv[0][0]], kv[0][1]))
            for (policy, cells), group in ordered:
                base_policy, recall = split_policy(policy)
                llm = NammLlama(
                    str(model_file),
                    policy=base_policy,
                    recall=recall,
                    recall_max=recall_max if recall else None,
                    recall_heads=recall_heads or "auto",
                    scorer=scorer if takes_scorer(policy) else None,
                    budget=cells,
                    update_interval=update_interval,
                    chunk=chunk,
                    seed=seed,
                    n_threads=n_threads,
                    n_threads_batch=n_threads,
                    n_gpu_layers=n_gpu_layers,
                )
                tracker = _PeakTracker()
                llm.memory.on_update.append(tracker)
                try:
                    for job in group:
                        if bar is not None:
                            bar.set_postfix_str(f"{policy} {job.key_row['budget']} {job.task}")
                        row = _evaluate(llm, builder, job, tracker)
                        fh.write(json.dumps(row, ensure_ascii=False) + "\n")
                        fh.flush()
                        new_rows[row_key(row)] = row
                        if bar is not None:
                            bar.update(1)
                finally:
                    llm.close()
    finally:
        if bar is not None:
            bar.close()
    wall = time.perf_counter() - t_start
    _log_run(
        out,
        dict(
            model=str(model_file),
            policies=policy_names,
            budgets=[b.label for b in budget_list],
            tasks=task_names,
            lengths=length_list,
            samples=samples,
            seed=seed,
            mode=mode,
            update_interval=update_interval,
            chunk=chunk,
            scorer=scorer_name,
            recall_max=recall_max,
            recall_heads=recall_heads,
            n_threads=n_threads,
            rows_total=len(jobs),
            rows_new=len(new_rows),
            wall_seconds=round(wall, 2),
            chat_template=builder.uses_chat_template,
        ),
    )
    rows = [new_rows.get(row_key(j.key_row)) or done[row_key(j.key_row)] for j in jobs]
    if report:
        from edge_namm.eval.report import write_report

        write_report(out)
    return rows


def _warn_clamped(jobs: Sequence[_Job], min_cells: dict[str, int]) -> None:
    seen = set()
    for job in jobs:
        if job.clamped and (job.policy, job.key_row["budget"]) not in seen:
            seen.add((job.policy, job.key_row["budget"]))
            warnings.warn(
                f"budget {job.key_row['budget']} resolves to {job.budget_cells} cells for some "
                f"samples, below the minimum of {min_cells[job.policy]} for policy "
                f"'{job.policy}' (one chunk plus protected tokens): using {min_cells[job.policy]}"
                " (rows marked budget_clamped)",
                stacklevel=3,
            )


def _log_run(out: Path, info: dict) -> None:
    info = dict(info, finished=time.strftime("%Y-%m-%d %H:%M:%S"), cpu_count=os.cpu_count())
    with open(out / RUNS_FILE, "a", encoding="utf-8") as f:
        f.write(json.dumps(info) + "\n")
