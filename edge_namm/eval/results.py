"""The eval's results file: its name, what identifies a row, and reading it back.

Shared by the runner (which appends rows and skips those already there) and the report (which
only reads them), so that the report does not import the runner.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

RESULTS_FILE = "results.jsonl"
RUNS_FILE = "runs.jsonl"
FULL_BUDGET = "full"  # the budget label of the full-cache policy's rows
KEY_FIELDS = (
    "model",
    "policy",
    "scorer",
    "budget",
    "task",
    "sample_id",
    "seed",
    "mode",
    "update_interval",
    "chunk",
    "recall_max",
    "recall_heads",
)


def row_key(row: dict) -> tuple:
    """What makes a results row unique: a rerun skips rows whose key is already in the file."""
    return tuple(row.get(k) for k in KEY_FIELDS)


def read_results(path: str | Path) -> list[dict]:
    """Rows of a results.jsonl; a line cut short by an interrupted run is ignored."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS_FILE
    rows: list[dict] = []
    if not path.is_file():
        return rows
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError:
                warnings.warn(f"{path}:{lineno}: ignoring unreadable results row", stacklevel=2)
                continue
            if isinstance(row, dict):
                rows.append(row)
    return rows


def ratio_to_full(
    mine: float, full: float, lower_is_better: bool = False, *, undefined: str = "nan"
) -> float:
    """A score relative to the full cache's on the same prompts: ``mine / full``, or
    ``full / mine`` where lower is better (perplexity), so 1.0 means "as good as the full cache".

    When the denominator is 0 (the full cache never succeeds) the ratio is undefined:
    ``undefined="nan"`` reports it as such (tables leave it out); ``"score"`` returns the
    numerator itself, which training uses so that any success still counts as a gain.
    """
    num, den = (full, mine) if lower_is_better else (mine, full)
    if den > 0:
        return num / den
    if undefined == "nan":
        return float("nan")
    if undefined == "score":
        return num
    raise ValueError(f"undefined must be 'nan' or 'score', got {undefined!r}")
