"""The scores behind recall's swaps on running text (lm) and on needle prompts (niah).

    python benchmarks/recall_swap_scores.py [--model MODEL.gguf]

NAMM+recall at 25% on two lm texts (4k) and two niah prompts (2k) of seed 5 of the eval split
(a development seed; the reporting runs use seed 0). For every recall it prints the best cold
scores, how many tokens were swapped, and (min, median, max) of the recalled cold tokens' and
the evicted hot tokens' scores (log-attention next to the hot cache). It asks whether a score
threshold or a swap margin could keep recall out of running text while it still brings needles
back.
"""

from __future__ import annotations

import argparse
import tempfile

import numpy as np
from common import default_model

import edge_namm.engine.memory as memory
from edge_namm.eval.runner import run_eval


def _rounded(a: np.ndarray) -> list[float]:
    return [round(float(x), 1) for x in a]


def _spread(a: np.ndarray) -> list[float]:
    return _rounded(np.quantile(a, [0, 0.5, 1])) if len(a) else []


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default=None)
    args = p.parse_args()
    choose = memory.choose_swaps
    seen: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

    def spy(hot, cold, protected, max_in=None):
        out_hot, in_cold = choose(hot, cold, protected, max_in)
        seen.append((np.sort(cold)[::-1][:4], cold[in_cold], hot[out_hot]))
        return out_hot, in_cold

    memory.choose_swaps = spy  # the engine's own rule, observed
    for task, length in (("lm", 4096), ("niah", 2048)):
        seen.clear()
        with tempfile.TemporaryDirectory() as out:
            run_eval(
                args.model or default_model(),
                policies="namm+recall",
                budgets="0.25",
                tasks=task,
                lengths=[length],
                samples=2,
                seed=5,
                out_dir=out,
                n_threads=2,
                progress=False,
                report=False,
            )
        for top, came, went in seen:
            print(
                f"{task}: best cold {_rounded(top)}, swapped {len(came)}, "
                f"recalled {_spread(came)}, evicted {_spread(went)}"
            )


if __name__ == "__main__":
    main()
