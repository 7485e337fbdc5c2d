"""A training run's configuration: what it evolves, on which prompts, under which budgets."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

PAPER_POPULATION = 32
PAPER_ELITES = 16
PAPER_SIGMA = 0.065
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
    geometry_features: bool = False  # the scorer also reads key/value geometry (28 inputs)
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
