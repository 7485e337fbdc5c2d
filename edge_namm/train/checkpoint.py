"""A run's resumable state: the optimizer (ask/tell), the schedule position and the log.

Pickled to ``<out>/checkpoint.pkl`` after every generation; a resumed run continues with
exactly the candidates an uninterrupted run would draw.
"""

from __future__ import annotations

import os
import pickle
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_namm.train.config import TrainConfig, TrainConfigError

CHECKPOINT = "checkpoint.pkl"


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


def load_checkpoint(path: Path) -> TrainState:
    with open(path, "rb") as f:
        return pickle.load(f)


def save_checkpoint(state: TrainState, out: Path) -> None:
    """Write atomically: a run killed mid-write keeps its previous checkpoint."""
    tmp = out / (CHECKPOINT + ".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(state, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, out / CHECKPOINT)
