"""The evaluation harness behind `edge-namm eval` (and the trainer's fitness).

- ``prompting``: samples -> token ids through the model's chat template;
- ``runner``: ``run_eval`` runs policies x budgets x task samples into ``results.jsonl``;
- ``report``: ``write_report`` turns ``results.jsonl`` into summary.csv/.md and PNG plots.

Imports are lazy so that ``import edge_namm.eval`` stays cheap.
"""

from __future__ import annotations

from typing import Any

__all__ = ["PromptBuilder", "parse_budget", "run_eval", "write_report"]


def __getattr__(name: str) -> Any:
    if name == "PromptBuilder":
        from edge_namm.eval.prompting import PromptBuilder

        return PromptBuilder
    if name in ("run_eval", "parse_budget"):
        from edge_namm.eval import runner

        return getattr(runner, name)
    if name == "write_report":
        from edge_namm.eval.report import write_report

        return write_report
    raise AttributeError(f"module 'edge_namm.eval' has no attribute {name!r}")
