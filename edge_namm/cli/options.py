"""Click options shared by the commands that load a model."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import click


def model_options(fn: Callable[..., Any]) -> Callable[..., Any]:
    """--model, -ngl, -t: how llama.cpp loads and runs the GGUF."""
    for option in reversed(
        [
            click.option(
                "--model",
                "-m",
                type=click.Path(dir_okay=False),
                default=None,
                help="GGUF model file (default: the model fetched by `edge-namm pull`).",
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
    """The given path, or the pulled default model with a hint when it is absent."""
    if model:
        return model
    from edge_namm.downloads import default_model_path

    path = default_model_path()
    if not path.is_file():
        raise click.ClickException(
            f"no --model given and the default model is not downloaded ({path}). "
            "Run `edge-namm pull` first, or pass --model path/to/model.gguf."
        )
    return str(path)


def update_interval_option(default: int = 512) -> Callable[[Callable[..., Any]], Any]:
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

scorer_option = click.option(
    "--scorer",
    type=click.Path(dir_okay=False),
    default=None,
    help="Scorer file for the namm policy (default: the shipped scorer).",
)
