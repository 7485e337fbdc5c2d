"""Pool `edge-namm eval` folders run on different samples: one normalised score per folder and
their mean, per policy, at one budget (how docs/RESULTS.md averages seeds 0-2).

    python benchmarks/pool_results.py docs/results/yardstick-4k docs/results/yardstick-4k-seed1 \
        docs/results/yardstick-4k-seed2 --budget 25% --task lm

Each folder's normalised score is the harness's own (``Summary.normalised``: full / policy on
that folder's samples); per-sample ratios are listed too, because three samples per folder are
too few to trust a mean alone.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from edge_namm.eval.report import Summary


def load(folder: Path) -> Summary:
    with open(folder / "results.jsonl") as f:
        return Summary([json.loads(line) for line in f if line.strip()])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("folders", nargs="+", type=Path)
    ap.add_argument("--budget", default="25%")
    ap.add_argument("--task", default="lm")
    args = ap.parse_args()
    summaries = [load(f) for f in args.folders]
    policies = list(dict.fromkeys(p for s in summaries for p in s.policies if p != "full"))
    names = " | ".join(f.name for f in args.folders)
    print(f"| policy ({args.budget}) | {names} | mean over folders | per sample (full / policy) |")
    print("|---" * (len(args.folders) + 3) + "|")
    for policy in policies:
        vals = [s.normalised(policy, args.budget, args.task) for s in summaries]
        have = [v for v in vals if v == v]
        samples = [x for s in summaries for x in s.per_sample(policy, args.budget, args.task)]
        cells = " | ".join("-" if v != v else f"{v:.3f}" for v in vals)
        pooled = f"{statistics.mean(have):.3f}" + (
            "" if len(have) == len(vals) else f" ({len(have)} folders)"
        )
        print(f"| {policy} | {cells} | {pooled} | {', '.join(f'{x:.3f}' for x in samples)} |")


if __name__ == "__main__":
    main()
