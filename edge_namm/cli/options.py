"""Click options shared by the edge-namm commands (paths, seed, model, memory) and the engine
the memory options describe."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

# what click.option returns: it decorates a command function
Decorator = Callable[[Callable[..., Any]], Any]


def file_option(*decls: str, exists: bool = False, **kwargs: Any) -> Decorator:
    """An option naming a file; click refuses a folder there (and a missing file with
    ``exists``). Every command spells its file options this one way."""
    return click.option(*decls, type=click.Path(dir_okay=False, exists=exists), **kwargs)


def folder_option(*decls: str, **kwargs: Any) -> Decorator:
    """An option naming a folder; click refuses a file there."""
    return click.option(*decls, type=click.Path(file_okay=False), **kwargs)


seed_option = click.option("--seed", type=int, default=0, show_default=True)


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--model, -ngl, -t: how llama.cpp loads and runs the GGUF."""
    from edge_namm.downloads import DEFAULT_MODEL, MODELS

    for option in reversed(
        [
            file_option(
                "--model",
                "-m",
                help="GGUF model file, or the name of a model `edge-namm pull` fetches "
                f"({', '.join(MODELS)}). Default: {DEFAULT_MODEL}.",
            ),
            click.option(
                "--n-gpu-layers",
                "-ngl",
                type=int,
                default=0,
                show_default=True,
                help="Layers to offload to the GPU (-1: all).",
            ),
            click.option("--threads", "-t", type=int, default=None, help="CPU threads."),
        ]
    ):
        fn = option(fn)
    return fn


def resolve_model(model: str | None) -> str:
    """A path as given; a catalog name (or nothing: the default model) as the pulled file, with
    the pull command to run when it is absent."""
    from edge_namm.downloads import DEFAULT_MODEL, MODELS, model_path

    name = model or DEFAULT_MODEL
    if model and (name not in MODELS or Path(model).is_file()):
        return model
    path = model_path(name)
    if not path.is_file():
        what = "no --model given and the default model" if model is None else f"model {name}"
        pull = "edge-namm pull" if name == DEFAULT_MODEL else f"edge-namm pull {name}"
        raise click.ClickException(
            f"{what} is not downloaded ({path}). Run `{pull}` first, or pass "
            "--model path/to/model.gguf."
        )
    return str(path)


def update_interval_option(default: int = 512) -> Decorator:
    return click.option(
        "--update-interval",
        type=int,
        default=default,
        show_default=True,
        help="Tokens between memory updates (multiple of 16).",
    )


chunk_option = click.option(
    "--chunk",
    type=int,
    default=128,
    show_default=True,
    help="Prefill batch size (<= update interval).",
)


class RecallCap(click.ParamType):
    """--recall-max: whole tokens (256) or a share of the hot budget (0.5 or 50%)."""

    name = "TOKENS|SHARE"

    def convert(self, value: Any, param: Any, ctx: Any) -> int | float:
        if isinstance(value, (int, float)):
            return value
        text = str(value).strip()
        if text.isdigit() and int(text) >= 1:
            return int(text)
        try:
            share = float(text[:-1]) / 100 if text.endswith("%") else float(text)
        except ValueError:
            share = -1.0
        if not 0.0 < share <= 1.0:
            self.fail(
                f"{value!r} is neither a token count (256) nor a share of the budget in (0, 1] "
                "(0.5 or 50%)",
                param,
                ctx,
            )
        return share


recall_max_option = click.option(
    "--recall-max",
    type=RecallCap(),
    default=None,
    help="Most tokens one prompt may recall: a count (256) or a share of the hot budget "
    "(0.5 or 50%). Default: a quarter of the budget.",
)

recall_heads_option = click.option(
    "--recall-heads",
    default=None,
    metavar="auto|all|FILE",
    help="(layer, KV head) pairs recall's coarse pass over a large cold store reads: 'auto' "
    "(the calibration shipped for the model, else all), 'all', or a recall-heads file "
    "(benchmarks/retrieval_heads.py). Default: auto.",
)

scorer_option = file_option(
    "--scorer", help="Scorer file for the namm policy (default: the shipped scorer)."
)


MEMORY_KEYS = (
    "policy", "scorer", "budget", "update_interval", "recall", "recall_max", "recall_heads",
)  # fmt: skip


def memory_options(recall: bool = True) -> Decorator:
    """--policy, --scorer, --budget, --update-interval, --recall/--no-recall, --recall-max,
    --recall-heads: the
    KV memory that `chat` and `serve` hold a conversation in, passed to the command as one
    `memory` dict (the arguments of `memory_engine`)."""
    recall_help = (
        "Keep evicted tokens in a cold store and bring back the ones each new message attends "
        "to (docs/DESIGN.md §6)."
    )
    options = [
        click.option("--policy", default="namm", show_default=True, help="Eviction policy."),
        scorer_option,
        click.option(
            "--budget",
            type=int,
            default=1024,
            show_default=True,
            help="KV cells a conversation keeps after each memory update.",
        ),
        update_interval_option(),
        click.option("--recall/--no-recall", default=recall, show_default=True, help=recall_help),
        recall_max_option,
        recall_heads_option,
    ]

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def gather(**kwargs: Any) -> Any:  # the command gets them as one `memory` dict
            return fn(memory={k: kwargs.pop(k) for k in MEMORY_KEYS}, **kwargs)

        for option in reversed(options):
            gather = option(gather)
        return gather

    return decorate


def memory_engine(
    model_file: str,
    *,
    policy: str,
    scorer: str | None,
    budget: int,
    update_interval: int,
    recall: bool,
    n_gpu_layers: int,
    recall_max: int | float | None = None,
    recall_heads: str | None = None,
    threads: int | None,
    reposition: bool = True,
    **kwargs: Any,
) -> Any:
    """The NammLlama that `chat` and `serve` hold a conversation in: prefill in chunks of at
    most 128 tokens, positions renumbered below the trained context unless told otherwise."""
    from edge_namm.engine import NammLlama

    return NammLlama(
        model_file,
        policy=policy,
        scorer=scorer,
        budget=budget,
        update_interval=update_interval,
        recall=recall,
        recall_max=recall_max,
        recall_heads=recall_heads or "auto",
        reposition=reposition,
        chunk=min(128, update_interval),
        n_gpu_layers=n_gpu_layers,
        n_threads=threads,
        **kwargs,
    )
