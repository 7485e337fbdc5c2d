"""`edge-namm serve`: an OpenAI-compatible local server with per-conversation KV memory."""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from edge_namm.cli.errors import friendly
from edge_namm.cli.options import (
    folder_option,
    memory_engine,
    memory_options,
    model_options,
    resolve_model,
)


@click.command()
@model_options
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--api-key", default=None, help="Require 'Authorization: Bearer KEY' on /v1.")
@memory_options(recall=True)
@click.option(
    "--max-sessions",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="Conversations kept in RAM; the least recently used beyond go to --session-dir.",
)
@folder_option(
    "--session-dir",
    help="Where parked conversations are saved (default: a temporary folder).",
)
@click.option("--name", default=None, help="Model id shown on /v1/models (default: file name).")
@friendly
def serve(
    model,
    n_gpu_layers,
    threads,
    host,
    port,
    api_key,
    memory,
    max_sessions,
    session_dir,
    name,
) -> None:
    """Serve /v1/chat/completions, /v1/completions, /v1/models and /v1/memory."""
    import uvicorn

    from edge_namm.cli.chat import sampling_options
    from edge_namm.server.app import create_app

    model_file = resolve_model(model)
    llm = memory_engine(model_file, **memory, n_gpu_layers=n_gpu_layers, threads=threads)
    s = sampling_options(model_file, None, None, None, None, None)
    defaults = {
        "temperature": s["temp"],
        "top_k": s["top_k"],
        "top_p": s["top_p"],
        "min_p": s["min_p"],
        "repeat_penalty": s["repeat_penalty"],
    }
    folder = Path(session_dir or tempfile.mkdtemp(prefix="edge-namm-sessions-"))
    app = create_app(
        llm,
        name or Path(model_file).stem,
        api_key=api_key,
        max_sessions=max_sessions,
        session_dir=folder,
        sampling_defaults=defaults,
    )
    click.echo(
        f"edge-namm serve: {Path(model_file).name} on http://{host}:{port}/v1 "
        f"(policy {memory['policy']}{'+recall' if memory['recall'] else ''}, "
        f"budget {memory['budget']}, sessions in {folder})"
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="warning")
    finally:
        llm.close()
