"""The eval package's shared modules: budgets in one place, results readable without the runner."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edge_namm.eval.budgets import FULL_QUANTUM, full_cache_cells, min_budget_cells
from edge_namm.train import TrainConfig


@pytest.mark.parametrize(("n", "want"), [(0, 0), (1, 256), (256, 256), (257, 512), (1000, 1024)])
def test_full_cache_cells_rounds_up_to_the_quantum(n: int, want: int) -> None:
    assert FULL_QUANTUM == 256
    assert full_cache_cells(n) == want


def test_min_budget_is_one_chunk_plus_protected_tokens() -> None:
    assert min_budget_cells(128, 4) == 132
    assert TrainConfig(model_path="m.gguf", chunk=64).min_cells == 65  # chunk + the newest token


def test_report_reads_results_without_the_runner() -> None:
    code = (
        "import sys, edge_namm.eval.report, edge_namm.eval.budgets;"
        "sys.exit('edge_namm.eval.runner' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
