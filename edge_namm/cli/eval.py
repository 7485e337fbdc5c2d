"""`edge-namm eval`: every policy x budget on long-context tasks, side by side."""

from __future__ import annotations

import warnings
from pathlib import Path

import click

from edge_namm.cli.errors import friendly
from edge_namm.cli.options import (
    chunk_option,
    folder_option,
    model_options,
    recall_heads_option,
    recall_max_option,
    resolve_model,
    scorer_option,
    seed_option,
    update_interval_option,
)

DEFAULT_TASKS = "passkey,niah,multikey,vartrack,update,lm"


def _plain_warning(message, category, filename, lineno, file=None, line=None) -> str:
    return f"warning: {message}\n"


@click.command("eval")
@model_options
@click.option(
    "--policies",
    default=None,
    help="Comma list of policies (default: all registered ones); NAME+recall adds the cold "
    "tier with query-aware recall to any of them.",
)
@click.option(
    "--recall",
    is_flag=True,
    help="Also run every evicting policy with +recall (evicted tokens kept in a cold store and "
    "recalled by the question).",
)
@recall_max_option
@recall_heads_option
@click.option(
    "--budgets",
    default="0.125,0.25,0.5",
    show_default=True,
    help="Comma list: KV cells (1024), fractions of each input (0.25 or 25%), or 'none' "
    "(no cap: only a policy's own rule evicts, e.g. NAMM's score < 0).",
)
@click.option(
    "--tasks",
    default=DEFAULT_TASKS,
    show_default=True,
    help="Comma list of synthetic tasks, 'longbench:<dataset>' (reads "
    "<data-dir>/<dataset>.jsonl) or 'longbench' (every file in --data-dir).",
)
@click.option(
    "--lengths",
    default="2048,4096",
    show_default=True,
    help="Comma list of prompt lengths in tokens (synthetic tasks; LongBench "
    "contexts are middle-truncated to the largest).",
)
@click.option(
    "--samples",
    type=int,
    default=2,
    show_default=True,
    help="Samples per task and length (records per LongBench file).",
)
@seed_option
@folder_option(
    "--out",
    "out_dir",
    default="eval-out",
    show_default=True,
    help="Output folder (results.jsonl, summary.*, plots).",
)
@click.option(
    "--mode",
    type=click.Choice(["after", "both"]),
    default="after",
    show_default=True,
    help="Question after the context only (query-agnostic) or before and after.",
)
@folder_option("--data-dir", help="Folder with LongBench-format <dataset>.jsonl files.")
@folder_option(
    "--haystack", help="Folder of .txt files used as filler (default: the pulled essays)."
)
@update_interval_option()
@chunk_option
@scorer_option
@friendly
def eval_cmd(
    model,
    n_gpu_layers,
    threads,
    policies,
    recall,
    recall_max,
    recall_heads,
    budgets,
    tasks,
    lengths,
    samples,
    seed,
    out_dir,
    mode,
    data_dir,
    haystack,
    update_interval,
    chunk,
    scorer,
) -> None:
    """Measure eviction policies side by side under the same KV budgets.

    Resumable: rows already in OUT/results.jsonl are skipped, so rerunning the same command
    continues an interrupted run.
    """
    from edge_namm.eval.report import SUMMARY_MD
    from edge_namm.eval.runner import run_eval

    warnings.formatwarning = _plain_warning
    model_path = resolve_model(model)
    if recall:
        from edge_namm.eval.runner import parse_policies, split_policy

        names = parse_policies(policies)
        extra = [f"{p}+recall" for p in names if not split_policy(p)[1] and p != "full"]
        policies = ",".join(dict.fromkeys([*names, *extra]))
    rows = run_eval(
        model_path,
        policies=policies,
        budgets=budgets,
        tasks=tasks,
        lengths=lengths,
        samples=samples,
        seed=seed,
        out_dir=out_dir,
        mode=mode,
        data_dir=data_dir,
        haystack=haystack,
        update_interval=update_interval,
        chunk=chunk,
        scorer=scorer,
        recall_max=recall_max,
        recall_heads=recall_heads,
        n_threads=threads,
        n_gpu_layers=n_gpu_layers,
        progress=True,
    )
    out = Path(out_dir)
    click.echo((out / SUMMARY_MD).read_text(encoding="utf-8"))
    click.echo(f"{len(rows)} rows for this command; files in {out.resolve()}:")
    for name in sorted(p.name for p in out.iterdir() if p.is_file()):
        click.echo(f"  {out / name}")
