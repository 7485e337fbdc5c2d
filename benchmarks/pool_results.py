"""Pool `edge-namm eval` folders run on different samples: one normalised score per folder and
their mean, per policy, at one budget (how docs/RESULTS.md averages seeds 0-2).

    python benchmarks/pool_results.py docs/results/yardstick-4k docs/results/yardstick-4k-seed1 \
        docs/results/yardstick-4k-seed2 --budget 25% --task lm

Each folder's normalised score is the harness's own (``Summary.normalised``: full / policy on
that folder's samples); per-sample ratios are listed too, because three samples per folder are
too few to trust a mean alone. ``--against POLICY`` counts, per policy, the samples where it
scores above POLICY (only when both ran on the same samples).
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
    ap.add_argument(
        "--against", default=None, help="count the samples where each policy beats this one"
    )
    args = ap.parse_args()
    summaries = [load(f) for f in args.folders]
    policies = list(dict.fromkeys(p for s in summaries for p in s.policies if p != "full"))

    def samples(policy: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for s in summaries:
            out.update(s.per_sample(policy, args.budget, args.task))
        return out

    ref = samples(args.against) if args.against else None
    names = " | ".join(f.name for f in args.folders)
    extra = f" | ahead of {args.against} |" if ref else " |"
    print(
        f"| policy ({args.budget}) | {names} | mean over folders | mean over samples "
        f"| per sample (full / policy){extra}"
    )
    print("|---" * (len(args.folders) + 4 + bool(ref)) + "|")
    for policy in policies:
        vals = [s.normalised(policy, args.budget, args.task) for s in summaries]
        have = [v for v in vals if v == v]
        if not have:
            continue  # this policy did not run at this budget
        by_id = samples(policy)
        mine = list(by_id.values())
        cells = " | ".join("-" if v != v else f"{v:.3f}" for v in vals)
        pooled = f"{statistics.mean(have):.3f}" + (
            "" if len(have) == len(vals) else f" ({len(have)} folders)"
        )
        line = (
            f"| {policy} | {cells} | {pooled} | {statistics.mean(mine):.3f} (n={len(mine)}) "
            f"| {', '.join(f'{x:.3f}' for x in mine)} |"
        )
        if ref:
            same = by_id.keys() == ref.keys()
            wins = sum(by_id[k] > ref[k] for k in ref) if same else None
            line += " - |" if wins is None else f" {wins} of {len(ref)} |"
        print(line)


if __name__ == "__main__":
    main()
