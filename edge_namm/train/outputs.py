"""What a run writes for people: the scorer file with its provenance, log.csv and curve.png."""

from __future__ import annotations

import csv
import os
import platform
import socket
from pathlib import Path
from typing import Any

from edge_namm.train.checkpoint import TrainState, population_of
from edge_namm.train.config import TrainConfig

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


def provenance(cfg: TrainConfig, st: TrainState) -> dict[str, Any]:
    """Where a scorer came from: the method, the command, the schedule and the machine."""
    return {
        "trained": True,
        "method": "CMA-ES (cmaes "
        + ("SepCMA" if cfg.optimizer_kind() == "sep" else "CMA")
        + "), deployed parameters = the mean; phase 1 offline on recorded full-cache "
        "features vs question/answer attention importance, phase 2 on-policy "
        + (
            "reference-answer probability (teacher-forced)"
            if cfg.online_fitness == "logprob"
            else "true task fitness"
        )
        + " (score / full-cache score)",
        "online_fitness": cfg.online_fitness,
        "repeat_features": cfg.repeat_features,
        "geometry_features": cfg.geometry_features,
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


def write_log(out: Path, log: list[dict]) -> None:
    """One CSV row per generation (rewritten whole: the log is short)."""
    with open(out / LOG_FILE, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_FIELDS, extrasaction="ignore")
        w.writeheader()
        for row in log:
            w.writerow(row)


def plot_curve(out: Path, log: list[dict], cfg: TrainConfig) -> None:
    """Fitness per generation, both phases (skipped without matplotlib)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
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
    ax.set_title(f"{cfg.scorer_type} CMA-ES, budget {cfg.budget}")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / CURVE_FILE, dpi=100)
    plt.close(fig)
