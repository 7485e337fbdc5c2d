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

This module is the loop; the configuration (``config.py``), the resumable state
(``checkpoint.py``) and what a run writes (``outputs.py``) live beside it.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_namm.train.checkpoint import (  # noqa: F401  (names tests and tools import from here)
    CHECKPOINT,
    TrainState,
    load_checkpoint,
    make_optimizer,
    optimizer_sigma,
    population_of,
    resume_position,
    save_checkpoint,
    schedule,
)
from edge_namm.train.config import (  # noqa: F401
    ONLINE_SEED_OFFSET,
    PAPER_ELITES,
    PAPER_POPULATION,
    PAPER_SIGMA,
    TrainConfig,
    TrainConfigError,
    budget_cells,
    training_samples,
)
from edge_namm.train.outputs import (  # noqa: F401
    CURVE_FILE,
    LOG_FIELDS,
    LOG_FILE,
    SCORER_FILE,
    plot_curve,
    write_log,
)
from edge_namm.train.outputs import provenance as run_provenance


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
            self.state = load_checkpoint(ckpt)
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
    def save_checkpoint(self) -> None:
        save_checkpoint(self.state, self.out)

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

        cfg = self.config
        return FeatureConfig(repeat=cfg.repeat_features, geometry=cfg.geometry_features)

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
        # features with the repeat pass folded in, or with geometry, are recorded apart
        extras = [("-repeat", cfg.repeat_features), ("-geometry", cfg.geometry_features)]
        rec_dir = self.out / ("recordings" + "".join(name for name, on in extras if on))
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
        n = SCORERS[cfg.scorer_type].param_count(self.feature_config.n_features)
        if cfg.init_scorer:
            init = load_scorer(cfg.init_scorer)
            if cfg.geometry_features and not init.feature_config.get("geometry"):
                init = init.with_geometry()  # the same scores, zero weights on the new inputs
            elif init.feature_config.get("geometry") and not cfg.geometry_features:
                raise TrainConfigError(
                    f"--init-scorer {cfg.init_scorer} reads key geometry: add --geometry-features"
                )
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
        st = self.state
        prov = run_provenance(self.config, st)
        prov.update(provenance or {})
        mean = np.asarray(self.params_of(st.optimizer.mean), dtype=np.float32)
        out = self.base_scorer().with_params(mean)
        out.provenance = copy.deepcopy(prov)
        return out

    def _write_scorer(self) -> None:
        from edge_namm.scorers import save_scorer

        save_scorer(self.scorer(), self.out / SCORER_FILE)

    def _write_log(self) -> None:
        write_log(self.out, self.state.log)

    def _plot(self) -> None:
        plot_curve(self.out, self.state.log, self.config)
