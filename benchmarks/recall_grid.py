"""The needle grid of docs/RESULTS.md: niah answers kept per policy, with and without recall, by
context length and hot budget, gathered from several `edge-namm eval` folders into one table
and one plot.

    python benchmarks/recall_grid.py --out docs/results/recall-grid

Folders are read in the order given; a (policy, budget, length) cell found again in a later
folder replaces the earlier one, so reruns on a newer engine come last. Every cell must hold the
same samples as the full cache's cell of its length (the same seed and prompts), or the script
stops and says which. Prints the Markdown table and writes `grid.md` and `grid.png` to `--out`.
"""

from __future__ import annotations

import argparse
from collections import defaultdict
from pathlib import Path

from edge_namm.eval.report import _pyplot, _style, budget_sort_key, save_with_legend
from edge_namm.eval.results import FULL_BUDGET, read_results
from edge_namm.scorers.default import default_scorer_path

RESULTS = Path(__file__).resolve().parent.parent / "docs" / "results"
# oldest first: each later folder reran some cells on a newer engine
DEFAULT_FOLDERS = (
    "recall-2k-niah-v2",
    "recall-pool-2k",
    "niah-2k-baselines",
    "recall-4k-niah",
    "recall-pool-4k",
    "retrieval-heads-4k",
    "niah-4k-baselines",
    "recall-8k-niah-v2",
    "recall-8k-12",
    "retrieval-heads-8k",
    "recall-8k-baselines",
    "niah-8k-baselines",
    "kvzip-recall-rerun",
    "kvzip-recall-4k-rerun",
)
SUFFIX = "+recall"
DEFAULT_SCORER = default_scorer_path().name


def gather(folders: list[Path], task: str) -> dict[tuple[str, str, int], dict[str, float]]:
    """(policy, budget, target length) -> {sample id: score}, later folders winning."""
    cells: dict[tuple[str, str, int], dict[str, float]] = {}
    for folder in folders:
        found: dict[tuple[str, str, int], dict[str, float]] = defaultdict(dict)
        for row in read_results(folder):
            # the defaults only (scorer, recall cap, heads): the grid compares policies
            scorer = row.get("scorer")
            if scorer and Path(scorer).name != DEFAULT_SCORER:
                continue
            if (
                row.get("task") != task
                or row.get("recall_max")
                or row.get("recall_heads") not in (None, "auto")
            ):
                continue
            key = (row["policy"], row["budget"], int(row["target_length"]))
            found[key][row["sample_id"]] = float(row["score"])
        cells.update(found)
    return cells


def check_samples(cells: dict[tuple[str, str, int], dict[str, float]]) -> None:
    for (policy, budget, length), scores in cells.items():
        full = cells.get(("full", FULL_BUDGET, length))
        if full is None:
            raise SystemExit(f"no full-cache rows at {length} tokens: add the folder holding them")
        if set(scores) != set(full):
            raise SystemExit(
                f"{policy} at {budget}, {length} tokens ran on other samples than the full cache "
                f"({len(set(scores) ^ set(full))} differ): pass folders of one seed"
            )


def _lengths_budgets(cells: dict[tuple[str, str, int], dict[str, float]]) -> tuple[list, list]:
    """The grid's lengths (ascending) and budgets (largest first)."""
    lengths = sorted({k[2] for k in cells})
    budgets = sorted({k[1] for k in cells if k[1] != FULL_BUDGET}, key=budget_sort_key)[::-1]
    return lengths, budgets


def table(cells: dict[tuple[str, str, int], dict[str, float]]) -> tuple[list[str], list[str]]:
    lengths, budgets = _lengths_budgets(cells)
    bases = sorted({k[0].removesuffix(SUFFIX) for k in cells if k[0] != "full"})
    columns = [(n, b) for n in lengths for b in budgets]
    head = " | ".join(f"{n // 1024}k, {b}" for n, b in columns)
    lines = [
        f"| needles kept (alone / with recall) | {head} |",
        "|---" + "|---:" * len(columns) + "|",
    ]
    full = " | ".join(str(int(sum(cells[("full", FULL_BUDGET, n)].values()))) for n, _ in columns)
    lines.append(f"| full cache | {full} |")

    def count(policy: str, budget: str, length: int) -> str:
        scores = cells.get((policy, budget, length))
        return "-" if scores is None else str(int(sum(scores.values())))

    for base in bases:
        row = " | ".join(f"{count(base, b, n)} / {count(base + SUFFIX, b, n)}" for n, b in columns)
        lines.append(f"| {base} | {row} |")
    return lines, bases


def plot(cells: dict[tuple[str, str, int], dict[str, float]], bases: list[str], path: Path) -> None:
    plt = _pyplot()
    lengths, budgets = _lengths_budgets(cells)
    fig, axes = plt.subplots(1, len(budgets), figsize=(5.2 * len(budgets), 3.8), squeeze=False)
    x = list(range(len(lengths)))
    for ax, budget in zip(axes.flat, budgets, strict=True):
        for i, base in enumerate(bases):
            style = _style(i)
            for policy, dashed in ((base + SUFFIX, False), (base, True)):
                ys = []
                for n in lengths:
                    mine, full = cells.get((policy, budget, n)), cells[("full", FULL_BUDGET, n)]
                    found = sum(full.values())
                    ys.append(
                        float("nan") if mine is None or not found else sum(mine.values()) / found
                    )
                if all(y != y for y in ys):
                    continue
                shift = 0.04 * (i - (len(bases) - 1) / 2)  # side by side where cells tie
                ax.plot(
                    [v + shift for v in x],
                    ys,
                    label=policy,
                    color=style["color"],
                    marker=style["marker"],
                    linestyle=":" if dashed else "-",
                    alpha=0.55 if dashed else 1.0,
                )
        ax.axhline(1.0, color="black", linestyle="--", linewidth=1)
        ax.set_xticks(x, [f"{n // 1024}k" for n in lengths])
        ax.set_xlabel("context length (tokens)")
        ax.set_ylim(-0.05, 1.15)
        ax.set_title(f"niah at a {budget} hot budget")
        ax.grid(alpha=0.3)
    axes.flat[0].set_ylabel("needles kept / full cache's")
    save_with_legend(fig, axes.flat[0], path)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("folders", nargs="*", type=Path, help="eval folders, oldest first")
    ap.add_argument("--task", default="niah")
    ap.add_argument("--out", type=Path, default=None, help="write grid.md and grid.png here")
    args = ap.parse_args()
    folders = args.folders or [RESULTS / name for name in DEFAULT_FOLDERS]
    missing = [str(f) for f in folders if not (f / "results.jsonl").is_file()]
    if missing:
        raise SystemExit(f"no results.jsonl in {', '.join(missing)}")
    cells = gather(folders, args.task)
    check_samples(cells)
    lines, bases = table(cells)
    print("\n".join(lines))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "grid.md").write_text("\n".join(lines) + "\n")
        plot(cells, bases, args.out / "grid.png")
        print(f"wrote {args.out / 'grid.md'} and {args.out / 'grid.png'}")


if __name__ == "__main__":
    main()
