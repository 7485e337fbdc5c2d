"""`edge-namm train`: evolve a NAMM scorer with CMA-ES (docs/TRAINING.md)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from edge_namm.cli.errors import friendly
from edge_namm.cli.options import (
    chunk_option,
    file_option,
    folder_option,
    model_options,
    resolve_model,
    seed_option,
    update_interval_option,
)
from edge_namm.train.subspace import SUBSPACES


def parse_stages(tasks: str | None, stages: str | None) -> list[list[str]]:
    """``--stages "a;a,b"`` (stages separated by ';', tasks by ',') or one stage ``--tasks``."""
    if tasks and stages:
        raise click.UsageError("give --tasks (one stage) or --stages, not both")
    spec = stages if stages else (tasks or "passkey")
    out = []
    for part in spec.split(";"):
        names = [t.strip() for t in part.split(",") if t.strip()]
        if not names:
            raise ValueError(f"empty stage in {spec!r}: separate stages with ';', tasks with ','")
        out.append(list(dict.fromkeys(names)))
    return out


def parse_lengths(text: str) -> list[int]:
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise ValueError(f"bad --lengths {text!r}: give token counts, e.g. 768,1024") from None


@click.command("train")
@model_options
@click.option(
    "--scorer-type",
    type=click.Choice(["bam", "bam-window", "mlp", "mlp2"]),
    default="mlp2",
    show_default=True,
    help="Scorer architecture to evolve.",
)
@click.option(
    "--tasks", default=None, help="Comma list of training tasks (one stage). Default: passkey."
)
@click.option(
    "--stages",
    default=None,
    help="Incremental stages: task lists separated by ';', e.g. "
    "'passkey;passkey,niah'. Each stage resumes the optimizer state.",
)
@click.option(
    "--lengths", default="1024", show_default=True, help="Prompt lengths in tokens (comma list)."
)
@click.option(
    "--budget",
    default="0.25",
    show_default=True,
    help="KV budget: cells (256) or a fraction of each prompt (0.25, 25%); a comma list "
    "(0.25,0.5) judges every candidate under each budget and averages.",
)
@update_interval_option(default=256)
@chunk_option
@click.option(
    "--population", type=int, default=32, show_default=True, help="CMA-ES population (paper: 32)."
)
@click.option(
    "--elites",
    type=int,
    default=None,
    help="Parents recombined (paper: 16); the cmaes library uses population // 2.",
)
@click.option(
    "--sigma",
    type=float,
    default=0.065,
    show_default=True,
    help="Initial CMA-ES step size (paper: 0.065).",
)
@click.option(
    "--generations",
    type=int,
    default=None,
    help="Shorthand: total generations per stage, split as offline = all but --online-generations.",
)
@click.option(
    "--offline-generations",
    type=int,
    default=None,
    help="Phase 1 generations per stage on recorded features (default 20).",
)
@click.option(
    "--online-generations",
    type=int,
    default=None,
    help="Phase 2 generations per stage with the LLM and the true task fitness (default 2).",
)
@click.option(
    "--prompts",
    type=int,
    default=4,
    show_default=True,
    help="Recorded prompts per task and length (phase 1).",
)
@click.option(
    "--online-prompts",
    type=int,
    default=1,
    show_default=True,
    help="Prompts per task and length in phase 2 (each costs one LLM run per candidate).",
)
@click.option(
    "--online-population",
    type=int,
    default=None,
    help="Phase 2 population (default: --population); a different value restarts "
    "CMA-ES from the current mean and sigma at the phase switch.",
)
@click.option(
    "--optimizer",
    type=click.Choice(["auto", "sep", "full"]),
    default="auto",
    show_default=True,
    help="sep = separable CMA-ES (O(n)); auto: sep for BAM, full for the MLPs.",
)
@file_option(
    "--init-scorer",
    exists=True,
    help="Start from this scorer file (parameters and normalisation) instead of 0; a BAM "
    "may start from an mlp (linear) scorer, which it contains, or from either BAM type.",
)
@click.option(
    "--subspace",
    type=click.Choice(["full", *SUBSPACES]),
    default="full",
    show_default=True,
    help="Coordinates CMA-ES searches. bam-diagonal: 84 of BAM's 4,172 (an age kernel for its "
    "attention, per-feature residuals and gates, the score head); the rest stay fixed.",
)
@click.option(
    "--window",
    type=int,
    default=None,
    help="bam-window only: newer cells each cell attends to (default: the --init-scorer's "
    "window, else 256).",
)
@click.option(
    "--online-fitness",
    type=click.Choice(["task", "logprob"]),
    default="task",
    show_default=True,
    help="How phase 2 scores a retrieval prompt: task = the greedy answer under the task's "
    "metric (what eval reports); logprob = the probability of the reference answer, "
    "teacher-forced (continuous: it still ranks candidates that all answer wrongly).",
)
@click.option(
    "--repeat-features",
    is_flag=True,
    help="Fold a context-repeat pass (KVzip's reconstruction attention) into the features the "
    "scorer reads; the scorer file records it and the engine runs the pass for it (about one "
    "more prefill).",
)
@click.option(
    "--geometry-features",
    is_flag=True,
    help="Let the scorer read each token's key and value geometry too (key norm, key "
    "distinctiveness, value norm per layer and head: 28 inputs instead of 25). A 25-input "
    "--init-scorer is widened with zero weights on the new inputs, so training starts from "
    "its exact scores.",
)
@seed_option
@folder_option(
    "--out",
    "out_dir",
    default="train-out",
    show_default=True,
    help="Run directory (checkpoint, log.csv, curve.png, scorer.json).",
)
@file_option("--save", help="Also write the final scorer file here.")
@click.option("--resume", is_flag=True, help="Continue the run in --out from its checkpoint.")
@click.option("--no-progress", is_flag=True, help="No progress bars.")
@friendly
def train(
    model,
    n_gpu_layers,
    threads,
    scorer_type,
    tasks,
    stages,
    lengths,
    budget,
    update_interval,
    chunk,
    population,
    elites,
    sigma,
    generations,
    offline_generations,
    online_generations,
    prompts,
    online_prompts,
    online_population,
    optimizer,
    init_scorer,
    subspace,
    window,
    online_fitness,
    repeat_features,
    geometry_features,
    seed,
    out_dir,
    save,
    resume,
    no_progress,
):
    """Evolve a NAMM scorer with CMA-ES: offline on recorded features, then on-policy."""
    from edge_namm.scorers import save_scorer
    from edge_namm.train import TrainConfig, Trainer

    if online_generations is None:
        online_generations = 2
    if offline_generations is None:
        offline_generations = (
            max(generations - online_generations, 0) if generations is not None else 20
        )
    elif generations is not None and generations != offline_generations + online_generations:
        raise click.UsageError(
            "--generations must equal --offline-generations + --online-generations"
        )
    llama_kwargs = {"n_gpu_layers": n_gpu_layers}
    if threads:
        llama_kwargs["n_threads"] = threads
    config = TrainConfig(
        model_path=resolve_model(model),
        scorer_type=scorer_type,
        stages=parse_stages(tasks, stages),
        lengths=parse_lengths(lengths),
        budget=budget,
        update_interval=update_interval,
        chunk=chunk,
        population=population,
        elites=population // 2 if elites is None else elites,
        sigma=sigma,
        offline_generations=offline_generations,
        online_generations=online_generations,
        prompts=prompts,
        online_prompts=online_prompts,
        online_population=online_population,
        seed=seed,
        optimizer=optimizer,
        init_scorer=init_scorer,
        subspace=subspace,
        window=window,
        online_fitness=online_fitness,
        repeat_features=repeat_features,
        geometry_features=geometry_features,
        llama_kwargs=llama_kwargs,
        command="edge-namm train " + " ".join(shlex.quote(a) for a in sys.argv[1:][1:])
        if len(sys.argv) > 1 and sys.argv[1] == "train"
        else " ".join(shlex.quote(a) for a in sys.argv),
    )
    trainer = Trainer(config, out_dir, resume=resume, progress=not no_progress, echo=click.echo)
    scorer = trainer.run()
    if save:
        Path(save).parent.mkdir(parents=True, exist_ok=True)
        save_scorer(scorer, save)
        click.echo(f"scorer written to {save}")
    click.echo(f"done: {trainer.state.gen} generations; scorer in {Path(out_dir) / 'scorer.json'}")
