"""CMA-ES training of NAMM scorers (docs/DESIGN.md §1.5), made feasible on a small CPU.

The run is a schedule of steps: for every stage (a task list), ``offline_generations`` on
recorded full-cache features against an importance signal (phase 1, ``record.py``), then
``online_generations`` with the LLM in the loop and the true task fitness (phase 2,
``fitness.py``). One CMA-ES state (``cmaes.SepCMA`` or ``cmaes.CMA``, ask/tell) runs through
every step and stage; the deployed parameters are its mean.

Everything needed to continue is pickled to ``<out>/checkpoint.pkl`` after every generation
(optimizer, RNG, normalisation, schedule position, log, cached full-cache scores); recordings
are cached under ``<out>/recordings/``. ``<out>/log.csv``, ``<out>/curve.png`` and
``<out>/scorer.json`` (the current mean) are rewritten each generation.
"""

from __future__ import annotations

import copy
import csv
import dataclasses
import os
import pickle
import platform
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

PAPER_POPULATION = 32
PAPER_ELITES = 16
PAPER_SIGMA = 0.065
CHECKPOINT = "checkpoint.pkl"
LOG_FILE = "log.csv"
CURVE_FILE = "curve.png"
SCORER_FILE = "scorer.json"
LOG_FIELDS = (
    "gen",
    "stage",
    "phase",
    "fitness_mean",
    "fitness_best",
    "fitness_pop_mean",
    "sigma",
    "kept_fraction",
    "seconds",
)
ONLINE_SEED_OFFSET = 7919  # online prompts use another seed than the recorded ones


class TrainConfigError(ValueError):
    """A training configuration that cannot work (message says why and what is valid)."""


@dataclass
class TrainConfig:
    model_path: str
    scorer_type: str = "mlp2"
    stages: list[list[str]] = field(default_factory=lambda: [["passkey"]])
    lengths: list[int] = field(default_factory=lambda: [1024])
    budget: str = "0.25"  # one budget or a comma list (fitness = mean over the budgets)
    update_interval: int = 256
    chunk: int = 128
    population: int = PAPER_POPULATION
    elites: int = PAPER_ELITES
    sigma: float = PAPER_SIGMA
    offline_generations: int = 20
    online_generations: int = 2
    prompts: int = 4  # recorded prompts per task and length (phase 1)
    online_prompts: int = 1  # prompts per task and length with the LLM in the loop (phase 2)
    online_population: int | None = None  # phase 2 population (None: same as phase 1)
    seed: int = 0
    optimizer: str = "auto"  # sep | full | auto (sep for BAM, full CMA for the MLPs)
    init_scorer: str | None = None  # start from this scorer's parameters and normalisation
    subspace: str = "full"  # "full" or a name in SUBSPACES: the coordinates CMA-ES searches
    window: int | None = None  # bam-window only: newer cells attended (None: the init's or 256)
    aggregation: str = "mean"
    online_fitness: str = "task"  # how phase 2 scores retrieval prompts (fitness.FITNESS_KINDS)
    repeat_features: bool = False  # fold a context-repeat pass into the features (KVzip signal)
    mode: str = "after"
    llama_kwargs: dict = field(default_factory=dict)
    command: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @property
    def budgets(self) -> list[str]:
        """The budgets a candidate is judged under (``"0.25,0.5"`` -> two)."""
        return [b.strip() for b in self.budget.split(",") if b.strip()]

    @property
    def all_tasks(self) -> list[str]:
        return list(dict.fromkeys(t for stage in self.stages for t in stage))

    @property
    def scorer_options(self) -> dict:
        """Options of the evolved scorer (bam-window's window when one is set)."""
        if self.scorer_type == "bam-window" and self.window is not None:
            return {"window": self.window}
        return {}

    def optimizer_kind(self) -> str:
        if self.optimizer != "auto":
            return self.optimizer
        big = self.scorer_type.startswith("bam") and self.subspace == "full"
        return "sep" if big else "full"

    def validate(self) -> None:
        from edge_namm.scorers import SCORERS
        from edge_namm.tasks import TASKS

        if self.scorer_type not in SCORERS:
            raise TrainConfigError(
                f"unknown scorer type {self.scorer_type!r}; valid types: {', '.join(SCORERS)}"
            )
        if not self.stages or any(not s for s in self.stages):
            raise TrainConfigError("every stage needs at least one task")
        for task in self.all_tasks:
            if task not in TASKS:
                raise TrainConfigError(
                    f"unknown task {task!r}; valid training tasks: {', '.join(TASKS)}"
                )
        if self.population < 2:
            raise TrainConfigError(
                f"population must be at least 2 (CMA-ES needs parents to recombine), "
                f"got {self.population}"
            )
        if self.elites != self.population // 2:
            raise TrainConfigError(
                f"elites must be population // 2 = {self.population // 2}: the cmaes library "
                f"always recombines the best half (the paper's 16 of 32); got {self.elites}"
            )
        if self.online_population is not None and self.online_population < 2:
            raise TrainConfigError(
                f"online population must be at least 2, got {self.online_population}"
            )
        if not self.sigma > 0:
            raise TrainConfigError(f"sigma must be > 0, got {self.sigma}")
        if self.update_interval <= 0 or self.update_interval % 16:
            raise TrainConfigError(
                f"update interval must be a positive multiple of 16, got {self.update_interval}"
            )
        if not 0 < self.chunk <= self.update_interval:
            raise TrainConfigError(
                f"chunk must be in [1, update interval = {self.update_interval}], got {self.chunk}"
            )
        if self.offline_generations < 0 or self.online_generations < 0:
            raise TrainConfigError("generation counts must be >= 0")
        if self.prompts < 1 or self.online_prompts < 1:
            raise TrainConfigError("need at least one prompt per task")
        if not self.lengths or min(self.lengths) < 64:
            raise TrainConfigError(f"lengths must be >= 64 tokens, got {self.lengths}")
        from edge_namm.train.subspace import SUBSPACES

        if self.subspace != "full" and self.subspace not in SUBSPACES:
            raise TrainConfigError(
                f"unknown subspace {self.subspace!r}; valid: full, {', '.join(SUBSPACES)}"
            )
        if self.subspace != "full" and not self.scorer_type.startswith("bam"):
            raise TrainConfigError(
                f"subspace {self.subspace!r} is for BAM scorers; a {self.scorer_type!r} scorer "
                "is small enough to search in full (--subspace full)"
            )
        if self.window is not None and self.scorer_type != "bam-window":
            raise TrainConfigError(
                f"--window is for --scorer-type bam-window, not {self.scorer_type!r}"
            )
        if self.window is not None and self.window < 0:
            raise TrainConfigError(f"--window must be >= 0 newer cells, got {self.window}")
        from edge_namm.train.fitness import FITNESS_KINDS

        if self.online_fitness not in FITNESS_KINDS:
            raise TrainConfigError(
                f"online fitness must be one of {', '.join(FITNESS_KINDS)}, "
                f"got {self.online_fitness!r}"
            )
        if self.optimizer not in ("auto", "sep", "full"):
            raise TrainConfigError(f"optimizer must be auto, sep or full, got {self.optimizer!r}")
        if not self.budgets:
            raise TrainConfigError("--budget needs at least one value, e.g. 0.25 or 0.25,0.5")
        budget_cells(self, min(self.lengths))  # every budget parses and fits the shortest prompt

    @property
    def min_cells(self) -> int:
        from edge_namm.eval.budgets import min_budget_cells

        return min_budget_cells(self.chunk, n_protected=1)  # the newest token


def budget_cells(config: TrainConfig, n_input: int) -> list[int]:
    """Cells of every training budget on an ``n_input``-token prompt; TrainConfigError when a
    budget does not parse or leaves no room for one chunk plus the newest token."""
    from edge_namm.eval.budgets import parse_budget

    out = []
    for text in config.budgets:
        try:
            cells = parse_budget(text).resolve(n_input)
        except ValueError as exc:
            raise TrainConfigError(str(exc)) from None
        if cells < config.min_cells:
            raise TrainConfigError(
                f"budget {text} gives {cells} cells on {n_input}-token prompts, too small: the "
                f"cache must hold one chunk ({config.chunk}) plus the newest token, i.e. >= "
                f"{config.min_cells} cells. Raise --budget or the lengths, or lower --chunk"
            )
        out.append(cells)
    return out


# --- prompts ---------------------------------------------------------------------------------
def training_samples(
    tasks: Sequence[str],
    lengths: Sequence[int],
    n: int,
    seed: int,
    builder: Any,
    haystack: Any = None,
) -> list[tuple[str, Any]]:
    """(task, Sample) pairs from the TRAIN split (never overlapping the eval split)."""
    from edge_namm.tasks import Haystack, make_samples

    hay = haystack if haystack is not None else Haystack.default()
    out = []
    for task in tasks:
        for length in lengths:
            for s in make_samples(
                task,
                n,
                length,
                seed,
                split="train",
                haystack=hay,
                count_tokens=builder.count_tokens,
            ):
                out.append((task, s))
    return out


# --- state -----------------------------------------------------------------------------------
@dataclass
class TrainState:
    config: TrainConfig
    optimizer: Any
    rng: np.random.Generator
    norm_mean: np.ndarray
    norm_std: np.ndarray
    norm_source: str
    start_params: np.ndarray
    subspace: Any = None  # a train.subspace.Subspace: the optimizer searches its coordinates
    step: int = 0  # index into the schedule
    step_gen: int = 0  # generations done within that step
    gen: int = 0  # generations done overall
    log: list[dict] = field(default_factory=list)
    full_scores: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    started: str = field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))

    # cmaes' own pickling drops the sampling RNG (reseeded from the OS on load) and rebuilds the
    # covariance from its upper triangle, which can turn the eigenbasis of a near-isotropic C:
    # either way a resumed run would draw other candidates than an uninterrupted one. The
    # checkpoint therefore stores the optimizer's attributes exactly, bypassing that pickling.
    def __getstate__(self) -> dict:
        attrs = dict(self.__dict__)
        opt = attrs["optimizer"]
        attrs["optimizer"] = (type(opt), dict(opt.__dict__))
        return attrs

    def __setstate__(self, attrs: dict) -> None:
        opt = attrs["optimizer"]
        if isinstance(opt, tuple):
            cls, opt_attrs = opt
            opt = cls.__new__(cls)
            opt.__dict__.update(opt_attrs)
        else:  # a checkpoint written before: resumable, but not candidate for candidate
            warnings.warn(
                "this checkpoint predates exact optimizer snapshots: the resumed run goes on "
                "from the same mean and step size but samples other candidates than an "
                "uninterrupted run would",
                stacklevel=2,
            )
        attrs["optimizer"] = opt
        self.__dict__.update(attrs)


def schedule(config: TrainConfig) -> list[tuple[int, str, int]]:
    """(stage index, phase, generations) steps in run order."""
    steps = []
    for k in range(len(config.stages)):
        steps.append((k, "offline", config.offline_generations))
        steps.append((k, "online", config.online_generations))
    return steps


def resume_position(steps: list[tuple[int, str, int]], log: list[dict]) -> tuple[int, int]:
    """(step, generations done in it) at which a resumed run goes on, from the per-generation log.

    Counting from the log (not the stored position) is what lets ``--resume`` with more
    generations extend a finished run. A run only moves forward: a step that already has
    generations after it cannot take more, and asking for that is refused.
    """
    done = [
        sum(1 for row in log if row["stage"] == stage + 1 and row["phase"] == phase)
        for stage, phase, _ in steps
    ]
    last = max((i for i, d in enumerate(done) if d), default=-1)
    for i in range(last):
        stage, phase, n_gens = steps[i]
        if n_gens > done[i]:
            raise TrainConfigError(
                f"--resume: the run has moved past stage {stage + 1}'s {phase} phase "
                f"({done[i]} generations), so it cannot take {n_gens}: extend the last phase "
                f"that ran ({steps[last][1]}) or add a stage"
            )
    if last >= 0 and done[last] < steps[last][2]:
        return last, done[last]
    return last + 1, 0


def make_optimizer(
    config: TrainConfig,
    mean: np.ndarray,
    sigma: float | None = None,
    population: int | None = None,
    seed: int | None = None,
) -> Any:
    import cmaes

    cls = cmaes.SepCMA if config.optimizer_kind() == "sep" else cmaes.CMA
    return cls(
        mean=np.asarray(mean, dtype=np.float64),
        sigma=config.sigma if sigma is None else sigma,
        population_size=population or config.population,
        seed=config.seed if seed is None else seed,
    )


def population_of(config: TrainConfig, phase: str) -> int:
    if phase == "online" and config.online_population:
        return config.online_population
    return config.population


def optimizer_sigma(opt: Any) -> float:
    return float(getattr(opt, "_sigma", float("nan")))


class Trainer:
    """Runs (or resumes) a training run in ``out``. ``run()`` returns the trained scorer."""

    def __init__(
        self,
        config: TrainConfig,
        out: str | Path,
        *,
        resume: bool = False,
        progress: bool = True,
        echo: Callable[[str], None] = print,
    ) -> None:
        self.out = Path(out)
        self.progress = progress
        self.echo = echo
        ckpt = self.out / CHECKPOINT
        if resume:
            if not ckpt.is_file():
                raise FileNotFoundError(
                    f"--resume: no checkpoint at {ckpt}; start without --resume"
                )
            self.state = self._load(ckpt)
            stored = self.state.config
            for name in ("offline_generations", "online_generations"):
                setattr(stored, name, getattr(config, name))
            if config.command and config.command not in stored.command:
                stored.command = f"{stored.command} ; then: {config.command}".strip(" ;")
            if stored.stages != config.stages[: len(stored.stages)]:
                raise TrainConfigError(
                    f"--resume: stages {config.stages} do not extend the checkpoint's "
                    f"{stored.stages}"
                )
            stored.stages = config.stages
            stored.validate()
            self.config = stored
            self.state.step, self.state.step_gen = resume_position(schedule(stored), self.state.log)
        else:
            config.validate()
            if ckpt.is_file():
                raise TrainConfigError(
                    f"{ckpt} exists: pass --resume to continue that run or choose another --out"
                )
            self.config = config
            self.state = None
        self.out.mkdir(parents=True, exist_ok=True)
        self._builder = None
        self._recordings: dict[str, list] = {}
        self._online = None
        self._online_tasks: list[str] = []

    # --- checkpoint ----------------------------------------------------------------------
    @staticmethod
    def _load(path: Path) -> TrainState:
        with open(path, "rb") as f:
            return pickle.load(f)

    def save_checkpoint(self) -> None:
        tmp = self.out / (CHECKPOINT + ".tmp")
        with open(tmp, "wb") as f:
            pickle.dump(self.state, f, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, self.out / CHECKPOINT)

    # --- pieces --------------------------------------------------------------------------
    @property
    def builder(self) -> Any:
        if self._builder is None:
            from edge_namm.eval.prompting import PromptBuilder

            self._builder = PromptBuilder.from_model_path(self.config.model_path)
        return self._builder

    @property
    def feature_config(self) -> Any:
        from edge_namm.features import FeatureConfig

        return FeatureConfig(repeat=self.config.repeat_features)

    def base_scorer(self) -> Any:
        from edge_namm.scorers import SCORERS

        st = self.state
        return SCORERS[self.config.scorer_type](
            st.start_params,
            st.norm_mean,
            st.norm_std,
            feature_config=self.feature_config,
            aggregation=self.config.aggregation,
            options=self.config.scorer_options,
        )

    def recordings(self, tasks: Sequence[str]) -> list:
        """Recorded prompts of ``tasks`` (cached on disk per task)."""
        from edge_namm.train.record import load_recordings, record_prompts, save_recordings

        cfg = self.config
        # features with the repeat pass folded in are other features: recorded apart
        rec_dir = self.out / ("recordings-repeat" if cfg.repeat_features else "recordings")
        rec_dir.mkdir(exist_ok=True)
        out = []
        for task in tasks:
            if task not in self._recordings:
                path = rec_dir / f"{task}.pkl"
                if path.is_file():
                    recs = load_recordings(path)
                else:
                    pairs = training_samples(
                        [task], cfg.lengths, cfg.prompts, cfg.seed, self.builder
                    )
                    prepared = [(t, self.builder.prepare(s, cfg.mode)) for t, s in pairs]
                    total = sum(p.n_input for _, p in prepared)
                    bar = self._bar(total, f"recording {task}", "tok")
                    t0 = time.perf_counter()
                    recs = record_prompts(
                        cfg.model_path,
                        self.builder,
                        prepared,
                        update_interval=cfg.update_interval,
                        chunk=cfg.chunk,
                        progress=bar.update if bar else None,
                        llama_kwargs=cfg.llama_kwargs,
                        feature_config=self.feature_config,
                    )
                    if bar:
                        bar.close()
                    self.echo(
                        f"recorded {len(recs)} {task} prompts ({total} tokens) in "
                        f"{time.perf_counter() - t0:.1f} s"
                    )
                    save_recordings(recs, path)
                self._recordings[task] = recs
            out += self._recordings[task]
        return out

    def _bar(self, total: int, desc: str, unit: str = "it") -> Any:
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(total=total, desc=desc, unit=unit, leave=False)

    def _init_state(self) -> TrainState:
        from edge_namm.scorers import SCORERS, load_scorer
        from edge_namm.scorers.bam import bam_params_from_linear

        cfg = self.config
        n = SCORERS[cfg.scorer_type].n_params
        if cfg.init_scorer:
            init = load_scorer(cfg.init_scorer)
            bams = ("bam", "bam-window")
            if init.type_name == cfg.scorer_type or {init.type_name, cfg.scorer_type} <= set(bams):
                start = np.asarray(init.params, dtype=np.float64)  # BAM and bam-window share them
                if init.type_name == "bam-window" == cfg.scorer_type and cfg.window is None:
                    cfg.window = int(init.options["window"])  # keep the init's window
            elif init.type_name == "mlp" and cfg.scorer_type.startswith("bam"):
                start = bam_params_from_linear(init.params)  # the same scores, as a BAM
            else:
                raise TrainConfigError(
                    f"--init-scorer is a {init.type_name!r} scorer but --scorer-type is "
                    f"{cfg.scorer_type!r} (a BAM can start from an 'mlp' linear scorer or "
                    "from either BAM type; otherwise the types must match)"
                )
            mean, std = np.asarray(init.norm_mean), np.asarray(init.norm_std)
            source = f"from {cfg.init_scorer}"
        else:
            start = np.zeros(n)
            mean, std, source = self._estimate_norm()
        sub = None
        if cfg.subspace != "full":
            from edge_namm.train.subspace import SUBSPACES

            try:
                sub = SUBSPACES[cfg.subspace](start)
            except ValueError as exc:
                raise TrainConfigError(f"--init-scorer {cfg.init_scorer}: {exc}") from None
            start = sub.offset  # the start, wired into the subspace
        return TrainState(
            config=cfg,
            optimizer=make_optimizer(cfg, start if sub is None else sub.project(start)),
            subspace=sub,
            rng=np.random.default_rng(cfg.seed),
            norm_mean=np.asarray(mean, np.float32),
            norm_std=np.asarray(std, np.float32),
            norm_source=source,
            start_params=start.astype(np.float32),
        )

    def params_of(self, x: np.ndarray) -> np.ndarray:
        """The scorer's full parameter vector for an optimizer point."""
        sub = self.state.subspace
        return np.asarray(x) if sub is None else sub.embed(x)

    def _estimate_norm(self) -> tuple[np.ndarray, np.ndarray, str]:
        """Frozen normalisation from full-cache runs: the stage-1 recordings when phase 1
        runs (they are exactly such runs), else a short full-cache pass over the prompts."""
        from edge_namm.train.record import norm_stats_of

        cfg = self.config
        if cfg.offline_generations > 0:
            stats = norm_stats_of(self.recordings(cfg.stages[0]))
            src = "recorded full-cache training prompts of stage 1"
        else:
            from edge_namm.train.normstats import estimate_norm_stats

            pairs = training_samples(cfg.stages[0][:1], cfg.lengths[:1], 1, cfg.seed, self.builder)
            stats = estimate_norm_stats(
                cfg.model_path,
                [s.prompt(cfg.mode) for _, s in pairs],
                max_tokens=max(cfg.lengths) + 256,
                update_interval=cfg.update_interval,
                **cfg.llama_kwargs,
            )
            src = "full-cache pass over a stage-1 training prompt"
        return stats.mean, stats.std, f"estimated on {stats.count} vectors: {src}"

    def _online_fitness(self, tasks: Sequence[str]) -> Any:
        from edge_namm.train.fitness import OnlineFitness

        cfg = self.config
        if self._online is not None and self._online_tasks == list(tasks):
            return self._online
        if self._online is not None:
            self._online.close()
        pairs = training_samples(
            tasks, cfg.lengths, cfg.online_prompts, cfg.seed + ONLINE_SEED_OFFSET, self.builder
        )
        prepared = [(t, self.builder.prepare(s, cfg.mode)) for t, s in pairs]
        self._online = OnlineFitness(
            cfg.model_path,
            self.builder,
            prepared,
            lambda p: budget_cells(cfg, p.n_input),
            update_interval=cfg.update_interval,
            chunk=cfg.chunk,
            seed=cfg.seed,
            full_scores=self.state.full_scores,
            llama_kwargs=cfg.llama_kwargs,
            kind=cfg.online_fitness,
        )
        self._online_tasks = list(tasks)
        missing = [p for _, p in prepared if self._online.key(p) not in self.state.full_scores]
        if missing:
            bar = self._bar(len(missing), "full-cache scores", "prompt")
            t0 = time.perf_counter()
            self._online.ensure_full_scores(bar.update if bar else None)
            if bar:
                bar.close()
            self.state.full_scores.update(self._online.full_scores)
            self.echo(
                f"full-cache scores of {len(missing)} online prompts in "
                f"{time.perf_counter() - t0:.1f} s"
            )
            self.save_checkpoint()
        return self._online

    # --- the loop ------------------------------------------------------------------------
    def run(self, max_generations: int | None = None) -> Any:
        """Run the remaining schedule (or at most ``max_generations``); return the scorer."""
        from edge_namm.train.record import offline_fitness, prepare_z

        if self.state is None:
            self.state = self._init_state()
            self.save_checkpoint()
        st, cfg = self.state, self.config
        steps = schedule(cfg)
        done = 0
        try:
            while st.step < len(steps):
                stage, phase, n_gens = steps[st.step]
                if st.step_gen >= n_gens:
                    st.step += 1
                    st.step_gen = 0
                    continue
                if max_generations is not None and done >= max_generations:
                    break
                want = population_of(cfg, phase)
                if st.optimizer.population_size != want:
                    # cmaes fixes the population at construction: restart from the current
                    # mean and step size (evolution paths and covariance start afresh)
                    st.optimizer = make_optimizer(
                        cfg,
                        st.optimizer.mean,
                        optimizer_sigma(st.optimizer),
                        want,
                        seed=cfg.seed + st.gen,
                    )
                base = self.base_scorer()
                tasks = cfg.stages[stage]
                if phase == "offline":
                    recs = self.recordings(tasks)
                    prepare_z([r for r in recs if not r.z], st.norm_mean, st.norm_std)
                    budgets = {id(r): budget_cells(cfg, r.n_prompt) for r in recs}

                    # BAM candidates run on ONNX Runtime when it is there (the MLPs are too
                    # cheap for a graph build to pay off)
                    backend = "auto" if cfg.scorer_type.startswith("bam") else "numpy"

                    def evaluate(x, recs=recs, budgets=budgets, base=base, backend=backend):
                        return offline_fitness(
                            base.with_params(self.params_of(x)),
                            recs,
                            lambda rec: budgets[id(rec)],
                            backend,
                        )
                else:
                    online = self._online_fitness(tasks)

                    def evaluate(x, online=online, base=base):
                        return online.evaluate(base.with_params(self.params_of(x)))

                self._generation(stage, phase, evaluate)
                done += 1
            self.save_checkpoint()  # the schedule position after the last step
        finally:
            if self._online is not None:
                self._online.close()
                self._online = None
        return self.scorer()

    def _generation(self, stage: int, phase: str, evaluate: Callable) -> None:
        st = self.state
        opt = st.optimizer
        t0 = time.perf_counter()
        bar = self._bar(opt.population_size + 1, f"gen {st.gen + 1} s{stage + 1} {phase}")
        sols, fits = [], []
        for _ in range(opt.population_size):
            x = opt.ask()
            f, _, _ = evaluate(x)
            sols.append(x)
            fits.append(f)
            if bar:
                bar.update(1)
                bar.set_postfix(best=f"{max(fits):.3f}")
        opt.tell([(x, -f) for x, f in zip(sols, fits, strict=True)])
        f_mean, kept, per_task = evaluate(opt.mean)
        if bar:
            bar.update(1)
            bar.close()
        seconds = time.perf_counter() - t0
        st.gen += 1
        st.step_gen += 1  # before the checkpoint: a resumed run continues after this one
        st.seconds += seconds
        row = {
            "gen": st.gen,
            "stage": stage + 1,
            "phase": phase,
            "fitness_mean": round(f_mean, 6),
            "fitness_best": round(max(fits), 6),
            "fitness_pop_mean": round(float(np.mean(fits)), 6),
            "sigma": round(optimizer_sigma(opt), 6),
            "kept_fraction": round(kept, 6),
            "seconds": round(seconds, 3),
        }
        st.log.append(dict(row, per_task={k: round(v, 4) for k, v in per_task.items()}))
        self.save_checkpoint()
        self._write_log()
        self._write_scorer()
        self._plot()
        self.echo(
            f"gen {st.gen} (stage {stage + 1}, {phase}): mean {f_mean:.4f} best {max(fits):.4f} "
            f"sigma {row['sigma']:.4f} kept {kept:.3f} [{seconds:.1f} s]"
        )

    # --- outputs -------------------------------------------------------------------------
    def scorer(self, provenance: dict | None = None) -> Any:
        """The deployed scorer: the CMA-ES mean with the frozen normalisation."""
        st, cfg = self.state, self.config
        prov = {
            "trained": True,
            "method": "CMA-ES (cmaes "
            + ("SepCMA" if cfg.optimizer_kind() == "sep" else "CMA")
            + "), deployed parameters = the mean; phase 1 offline on recorded full-cache "
            "features vs question/answer attention importance, phase 2 on-policy true task "
            "fitness (score / full-cache score)",
            "command": cfg.command,
            "seed": cfg.seed,
            "stages": cfg.stages,
            "lengths": cfg.lengths,
            "budget": cfg.budget,
            "update_interval": cfg.update_interval,
            "chunk": cfg.chunk,
            "population": cfg.population,
            "elites": cfg.elites,
            "online_population": population_of(cfg, "online"),
            "sigma0": cfg.sigma,
            "subspace": cfg.subspace
            + ("" if st.subspace is None else f" ({st.subspace.dims} coordinates searched)"),
            "generations": st.gen,
            "generations_per_phase": {
                "offline": sum(1 for r in st.log if r["phase"] == "offline"),
                "online": sum(1 for r in st.log if r["phase"] == "online"),
            },
            "prompts_per_task": {"offline": cfg.prompts, "online": cfg.online_prompts},
            "last_fitness": {
                p: next((r["fitness_mean"] for r in reversed(st.log) if r["phase"] == p), None)
                for p in ("offline", "online")
            },
            "wall_seconds": round(st.seconds, 1),
            "model": Path(cfg.model_path).name,
            "normalization": st.norm_source,
            "machine": f"{socket.gethostname()} {platform.machine()} {platform.processor()} "
            f"{os.cpu_count()} cpus, {platform.system()} {platform.release()}",
            "started": st.started,
        }
        prov.update(provenance or {})
        base = self.base_scorer()
        mean = np.asarray(self.params_of(st.optimizer.mean), dtype=np.float32)
        out = base.with_params(mean)
        out.provenance = copy.deepcopy(prov)
        return out

    def _write_scorer(self) -> None:
        from edge_namm.scorers import save_scorer

        save_scorer(self.scorer(), self.out / SCORER_FILE)

    def _write_log(self) -> None:
        with open(self.out / LOG_FILE, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
            w.writeheader()
            for row in self.state.log:
                w.writerow(row)

    def _plot(self) -> None:
        try:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt
        except ImportError:
            return
        log = self.state.log
        fig, ax = plt.subplots(figsize=(7, 4))
        for phase, color in (("offline", "tab:blue"), ("online", "tab:red")):
            rows = [r for r in log if r["phase"] == phase]
            if not rows:
                continue
            g = [r["gen"] for r in rows]
            ax.plot(
                g,
                [r["fitness_mean"] for r in rows],
                "o-",
                color=color,
                label=f"{phase}: mean",
                ms=3,
            )
            ax.plot(
                g,
                [r["fitness_best"] for r in rows],
                "x--",
                color=color,
                alpha=0.6,
                label=f"{phase}: best sample",
                ms=3,
            )
        ax.set_xlabel("generation")
        ax.set_ylabel("fitness (offline: importance kept; online: score / full)")
        ax.set_title(f"{self.config.scorer_type} CMA-ES, budget {self.config.budget}")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(self.out / CURVE_FILE, dpi=100)
        plt.close(fig)
