"""The `edge-namm` command: one subcommand per module in this folder."""

from __future__ import annotations

import click

from edge_namm.cli.chat import chat
from edge_namm.cli.info import info
from edge_namm.cli.pull import pull


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="edge-namm")
def cli() -> None:
    """Learned KV-cache memory (NAMM) for llama.cpp GGUF models."""


for command in (chat, info, pull):
    cli.add_command(command)


def _add_optional_commands() -> None:
    """Commands that live in other folders (eval, train, export) register when present."""
    import importlib

    for module, name in (
        ("edge_namm.cli.eval", "eval_cmd"),
        ("edge_namm.cli.train", "train"),
        ("edge_namm.cli.export", "export"),
        ("edge_namm.cli.serve", "serve"),
    ):
        try:
            cli.add_command(getattr(importlib.import_module(module), name))
        except ModuleNotFoundError:
            pass


_add_optional_commands()


CRASH_NOTE = (
    "\nedge-namm: native crash inside llama.cpp (not a Python error). Run `edge-namm info "
    "--json` and report it with that output and the traceback below at the edge-namm issue "
    "tracker; on Intel AMX CPUs rebuild with ./build.sh (AMX off by default).\n"
)


def _arm_crash_reports() -> None:
    """faulthandler prints the Python traceback of a native crash; our note says what it is."""
    import faulthandler

    faulthandler.enable()
    try:
        from edge_namm import native

        native.install_crash_note(CRASH_NOTE)
    except Exception:  # no patched library: `edge-namm info` explains; nothing to arm
        pass


def main() -> None:
    _arm_crash_reports()
    cli()
