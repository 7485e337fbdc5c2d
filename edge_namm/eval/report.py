"""Summaries and plots from an eval's ``results.jsonl``.

``write_report(out_dir)`` writes:

- ``summary.csv``: one line per policy x budget x task (mean score, memory, time);
- ``summary.md``: score per policy x budget (a column per task), the same normalised by the
  full cache as in the NAMM paper (per task ``policy_score / full_score`` on the same samples,
  then the mean over tasks; for perplexity, where lower is better, ``full_ppl / policy_ppl``),
  and where the time went (the share spent outside llama.cpp's decode);
- ``score_vs_budget.png`` (a panel per task, a line per policy), ``normalised_vs_budget.png``
  and ``heatmap_<policy>.png`` (needle tasks: mean score by depth x length, a panel per budget).
"""

from __future__ import annotations

import csv
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from edge_namm.eval.results import FULL_BUDGET, ratio_to_full, read_results
from edge_namm.tasks.metrics import LOWER_IS_BETTER

SUMMARY_CSV = "summary.csv"
SUMMARY_MD = "summary.md"
CSV_FIELDS = (
    "policy",
    "budget",
    "task",
    "metric",
    "n",
    "score",
    "normalised",
    "length",
    "cells_used",
    "kept_fraction",
    "kv_bytes_in_use",
    "kv_bytes_full_cache",
    "no_eviction",
    "seconds_total",
    "seconds_llama",
    "seconds_namm",
    "outside_decode",
)


def _mean(values: Iterable[float]) -> float:
    vals = [float(v) for v in values]
    return sum(vals) / len(vals) if vals else float("nan")


def budget_sort_key(label: str) -> tuple:
    """full first, then fractions ascending, then cell counts ascending."""
    if label == FULL_BUDGET:
        return (0, 0.0)
    if label.endswith("%"):
        return (1, float(label[:-1]))
    try:
        return (2, float(label))
    except ValueError:
        return (3, label)


def _ordered(values: Iterable[str], first: Sequence[str] = ()) -> list[str]:
    seen = list(dict.fromkeys(values))
    head = [v for v in first if v in seen]
    return head + [v for v in seen if v not in head]


def _label_scorers(rows: Sequence[dict]) -> list[dict]:
    """Rows of one policy run with different scorer files are told apart: ``namm[<file>]``."""
    scorers: dict[str, set] = defaultdict(set)
    for r in rows:
        scorers[r["policy"]].add(r.get("scorer"))
    out = []
    for r in rows:
        if len(scorers[r["policy"]]) > 1:
            stem = Path(str(r.get("scorer"))).stem if r.get("scorer") else "default"
            r = dict(r, policy=f"{r['policy']}[{stem}]")
        out.append(r)
    return out


class Summary:
    """Aggregates of the result rows, keyed by (policy, budget, task)."""

    def __init__(self, rows: Sequence[dict]) -> None:
        self.rows = _label_scorers(rows)
        self.groups: dict[tuple[str, str, str], list[dict]] = defaultdict(list)
        for r in self.rows:
            self.groups[(r["policy"], r["budget"], r["task"])].append(r)
        self.policies = _ordered((r["policy"] for r in self.rows), first=("full",))
        self.tasks = _ordered(r["task"] for r in self.rows)
        self.metric = {r["task"]: r.get("metric", "") for r in self.rows}
        self.budgets = sorted({r["budget"] for r in self.rows}, key=budget_sort_key)
        self._full = {
            (r["task"], r["sample_id"]): float(r["score"])
            for r in self.rows
            if r["policy"] == "full"
        }

    def pairs(self) -> list[tuple[str, str]]:
        """(policy, budget) pairs present, policies in order, budgets ascending."""
        return [
            (p, b)
            for p in self.policies
            for b in self.budgets
            if any((p, b, t) in self.groups for t in self.tasks)
        ]

    def score(self, policy: str, budget: str, task: str) -> float:
        return _mean(r["score"] for r in self.groups.get((policy, budget, task), []))

    def normalised(self, policy: str, budget: str, task: str) -> float:
        """Mean score over full's mean on the same samples (inverted for perplexity)."""
        rows = [
            r
            for r in self.groups.get((policy, budget, task), [])
            if (task, r["sample_id"]) in self._full
        ]
        if not rows:
            return float("nan")
        mine = _mean(r["score"] for r in rows)
        full = _mean(self._full[(task, r["sample_id"])] for r in rows)
        return ratio_to_full(mine, full, self.metric.get(task) in LOWER_IS_BETTER)

    def per_sample(self, policy: str, budget: str, task: str) -> dict[str, float]:
        """Each sample's score over the full cache's on it (inverted for perplexity), by
        sample id; samples without a full-cache run are left out."""
        out = {}
        lower = self.metric.get(task) in LOWER_IS_BETTER
        for r in self.groups.get((policy, budget, task), []):
            full = self._full.get((task, r["sample_id"]))
            if full:
                mine = float(r["score"])
                out[r["sample_id"]] = full / mine if lower else mine / full
        return out

    def normalised_mean(self, policy: str, budget: str) -> float:
        vals = [self.normalised(policy, budget, t) for t in self.tasks]
        vals = [v for v in vals if not math.isnan(v)]
        return _mean(vals)

    def pair_rows(self, policy: str, budget: str) -> list[dict]:
        return [r for t in self.tasks for r in self.groups.get((policy, budget, t), [])]

    def times(self, rows: Sequence[dict]) -> tuple[float, float, float]:
        return (
            sum(float(r.get("seconds_total", 0.0)) for r in rows),
            sum(float(r.get("seconds_llama", 0.0)) for r in rows),
            sum(float(r.get("seconds_namm", 0.0)) for r in rows),
        )

    def outside_decode(self, rows: Sequence[dict] | None = None) -> float:
        """Share of the per-sample time not spent inside llama_decode."""
        total, llama, _ = self.times(self.rows if rows is None else rows)
        return 1.0 - llama / total if total > 0 else float("nan")

    def csv_rows(self) -> list[dict]:
        out = []
        for policy, budget in self.pairs():
            for task in self.tasks:
                rows = self.groups.get((policy, budget, task))
                if not rows:
                    continue
                total, llama, namm = self.times(rows)
                length = _mean(r["length"] for r in rows)
                cells = _mean(r["cells_used"] for r in rows)
                out.append(
                    dict(
                        policy=policy,
                        budget=budget,
                        task=task,
                        metric=self.metric.get(task, ""),
                        n=len(rows),
                        score=self.score(policy, budget, task),
                        normalised=self.normalised(policy, budget, task),
                        length=length,
                        cells_used=cells,
                        kept_fraction=_mean(
                            r["kv_bytes_in_use"] / r["kv_bytes_full_cache"]
                            for r in rows
                            if r.get("kv_bytes_full_cache")
                        ),
                        kv_bytes_in_use=_mean(r["kv_bytes_in_use"] for r in rows),
                        kv_bytes_full_cache=_mean(r["kv_bytes_full_cache"] for r in rows),
                        no_eviction=sum(bool(r.get("no_eviction")) for r in rows) / len(rows),
                        seconds_total=total,
                        seconds_llama=llama,
                        seconds_namm=namm,
                        outside_decode=1.0 - llama / total if total > 0 else float("nan"),
                    )
                )
        return out


# --- Markdown ----------------------------------------------------------------------------------
def _fmt(value: float, digits: int = 2) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def _budget_cell(summary: Summary, policy: str, budget: str) -> str:
    rows = summary.pair_rows(policy, budget)
    n_free = sum(bool(r.get("no_eviction")) for r in rows)
    if budget == FULL_BUDGET or not rows or n_free == 0:
        return budget
    if n_free == len(rows):
        return f"{budget} (no eviction)"
    return f"{budget} (no eviction in {n_free}/{len(rows)})"


def _task_header(summary: Summary, task: str) -> str:
    return f"{task} (ppl ↓)" if summary.metric.get(task) in LOWER_IS_BETTER else task


def _table(header: Sequence[str], lines: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(line) + " |" for line in lines]
    return "\n".join(out)


def markdown(summary: Summary) -> str:
    tasks = summary.tasks
    lines = []
    for policy, budget in summary.pairs():
        rows = summary.pair_rows(policy, budget)
        kept = _mean(
            r["kv_bytes_in_use"] / r["kv_bytes_full_cache"]
            for r in rows
            if r.get("kv_bytes_full_cache")
        )
        line = [policy, _budget_cell(summary, policy, budget), _fmt(100 * kept, 0) + "%"]
        for task in tasks:
            digits = 2 if summary.metric.get(task) in LOWER_IS_BETTER else 3
            line.append(_fmt(summary.score(policy, budget, task), digits))
        lines.append(line)
    score_table = _table(
        ["policy", "budget", "KV kept", *(_task_header(summary, t) for t in tasks)], lines
    )
    parts = [
        "# edge-namm eval summary",
        "",
        f"{len(summary.rows)} samples. Scores are means over samples in [0, 1] (higher is "
        "better) except perplexity (lower is better). *KV kept*: the most KV cells held after a "
        "memory update, as a share of all tokens seen (prompt and generated or scored "
        "tokens), i.e. KV memory relative to a full cache.",
        "",
        "## Score per policy × budget",
        "",
        score_table,
    ]
    if "full" in summary.policies:
        norm_lines = []
        for policy, budget in summary.pairs():
            line = [policy, _budget_cell(summary, policy, budget)]
            line += [_fmt(summary.normalised(policy, budget, t)) for t in tasks]
            line.append(_fmt(summary.normalised_mean(policy, budget)))
            norm_lines.append(line)
        parts += [
            "",
            "## Normalised by the full cache",
            "",
            "Per task: mean score / the full cache's mean score on the same samples (for "
            "perplexity: full / policy); *mean* averages over tasks, skipping tasks where the "
            "full cache scores 0 (–). 1.00 = as good as the full cache.",
            "",
            _table(["policy", "budget", *tasks, "mean"], norm_lines),
        ]
    else:
        parts += ["", "(No `full` rows: run the `full` policy too for the normalised table.)"]
    time_lines = []
    for policy, budget in summary.pairs():
        rows = summary.pair_rows(policy, budget)
        total, llama, namm = summary.times(rows)
        time_lines.append(
            [
                policy,
                budget,
                str(len(rows)),
                _fmt(total, 1),
                _fmt(llama, 1),
                _fmt(namm, 1),
                _fmt(100 * summary.outside_decode(rows), 1) + "%",
            ]
        )
    parts += [
        "",
        "## Time",
        "",
        "Seconds summed over samples: *total* per sample (reset, prefill, generation, "
        "scoring), *decode* inside llama.cpp's `llama_decode`, *NAMM* folding attention, "
        "scoring and evicting. *Outside decode* = 1 - decode / total.",
        "",
        _table(
            ["policy", "budget", "samples", "total s", "decode s", "NAMM s", "outside decode"],
            time_lines,
        ),
        "",
        f"Overall {100 * summary.outside_decode():.1f}% of the evaluation time was spent "
        "outside llama.cpp decode.",
        "",
    ]
    return "\n".join(parts)


# --- plots -------------------------------------------------------------------------------------
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


_MARKERS = "osD^v<>Ph*Xd"


def _style(i: int) -> dict:
    """Line style of the i-th policy, the same in every plot. Distinct for 20 policies: the
    dark tab20 hues first, then the light ones dashed (tab10 repeats its colours after 10)."""
    import matplotlib

    colors = matplotlib.colormaps["tab20"].colors
    light = (i // 10) % 2
    return {
        "color": colors[(2 * i + light) % 20],
        "marker": _MARKERS[i % len(_MARKERS)],
        "linestyle": "--" if light else "-",
    }


def save_with_legend(fig, ax, path: Path) -> None:
    """Save a figure with `ax`'s legend to the right of every panel, then free it."""
    handles, labels = ax.get_legend_handles_labels()
    fig.tight_layout()
    fig.legend(
        handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8, frameon=False
    )
    fig.savefig(path, dpi=110, bbox_inches="tight")
    _pyplot().close(fig)


def plot_score_vs_budget(summary: Summary, path: Path) -> None:
    plt = _pyplot()
    budgets = [b for b in summary.budgets if b != FULL_BUDGET]
    tasks = summary.tasks
    ncol = min(3, len(tasks))
    nrow = math.ceil(len(tasks) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.4 * nrow), squeeze=False)
    x = list(range(len(budgets)))
    for ax, task in zip(axes.flat, tasks, strict=False):
        for i, policy in enumerate(summary.policies):
            if policy == "full":
                full = summary.score("full", FULL_BUDGET, task)
                if not math.isnan(full):
                    ax.axhline(full, color="black", linestyle="--", linewidth=1, label="full")
                continue
            ys = [summary.score(policy, b, task) for b in budgets]
            if all(math.isnan(y) for y in ys):
                continue
            ax.plot(x, ys, label=policy, **_style(i))
        lower = summary.metric.get(task) in LOWER_IS_BETTER
        ax.set_title(f"{task} ({'perplexity, lower is better' if lower else 'score'})")
        ax.set_xticks(x, budgets)
        ax.set_xlabel("budget")
        if lower:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tasks) :]:
        ax.axis("off")
    save_with_legend(fig, axes.flat[0], path)


def plot_normalised(summary: Summary, path: Path) -> None:
    plt = _pyplot()
    budgets = [b for b in summary.budgets if b != FULL_BUDGET]
    fig, ax = plt.subplots(figsize=(8.4, 4.2))
    x = list(range(len(budgets)))
    for i, policy in enumerate(summary.policies):
        if policy == "full":
            continue
        ys = [summary.normalised_mean(policy, b) for b in budgets]
        if not all(math.isnan(y) for y in ys):
            ax.plot(x, ys, label=policy, **_style(i))
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="full")
    ax.set_xticks(x, budgets)
    ax.set_xlabel("budget")
    ax.set_ylabel("score / full-cache score (mean over tasks)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)


def _depth_bins(depths: Sequence[float]) -> list[float]:
    uniq = sorted(set(depths))
    if len(uniq) <= 10:
        return uniq
    return [(i + 0.5) / 5 for i in range(5)]


def _bin(depth: float, centres: Sequence[float]) -> int:
    return min(range(len(centres)), key=lambda i: abs(centres[i] - depth))


def plot_heatmaps(summary: Summary, out: Path) -> list[Path]:
    """One PNG per policy: mean needle score by depth (rows) x length (columns) per budget."""
    needle = [
        r
        for r in summary.rows
        if r.get("depth") is not None and summary.metric.get(r["task"]) not in LOWER_IS_BETTER
    ]
    if not needle:
        return []
    plt = _pyplot()
    centres = _depth_bins([float(r["depth"]) for r in needle])
    lengths = sorted({int(r.get("target_length") or r["length"]) for r in needle})
    paths = []
    for policy in summary.policies:
        prow = [r for r in needle if r["policy"] == policy]
        budgets = sorted({r["budget"] for r in prow}, key=budget_sort_key)
        if not budgets:
            continue
        width = 1.6 + len(budgets) * (1.2 + 0.7 * len(lengths))
        fig, axes = plt.subplots(
            1,
            len(budgets),
            figsize=(width, 3.6),
            squeeze=False,
            sharey=True,
            layout="constrained",
        )
        image = None
        for ax, budget in zip(axes[0], budgets, strict=True):
            sums = [[0.0] * len(lengths) for _ in centres]
            counts = [[0] * len(lengths) for _ in centres]
            for r in prow:
                if r["budget"] != budget:
                    continue
                i = _bin(float(r["depth"]), centres)
                j = lengths.index(int(r.get("target_length") or r["length"]))
                sums[i][j] += float(r["score"])
                counts[i][j] += 1
            grid = [
                [
                    sums[i][j] / counts[i][j] if counts[i][j] else float("nan")
                    for j in range(len(lengths))
                ]
                for i in range(len(centres))
            ]
            image = ax.imshow(grid, vmin=0, vmax=1, cmap="RdYlGn", aspect="auto")
            ax.set_xticks(range(len(lengths)), [str(n) for n in lengths])
            ax.set_yticks(range(len(centres)), [f"{c:.2f}" for c in centres])
            ax.set_xlabel("length (tokens)")
            ax.set_title(f"budget {budget}")
            for i in range(len(centres)):
                for j in range(len(lengths)):
                    if counts[i][j]:
                        ax.text(j, i, f"{grid[i][j]:.2f}", ha="center", va="center", fontsize=7)
        axes[0][0].set_ylabel("needle depth")
        fig.suptitle(f"{policy}: needle tasks, mean score")
        if image is not None:
            fig.colorbar(image, ax=list(axes[0]), shrink=0.8)
        path = out / f"heatmap_{re.sub(r'[^A-Za-z0-9_.-]+', '_', policy).strip('_')}.png"
        fig.savefig(path, dpi=110)
        plt.close(fig)
        paths.append(path)
    return paths


# --- entry point -------------------------------------------------------------------------------
def write_report(out_dir: str | Path, rows: Sequence[dict] | None = None) -> dict[str, Path]:
    """Write summary.csv, summary.md and the plots for ``out_dir``; returns their paths."""
    out = Path(out_dir)
    summary = Summary(read_results(out) if rows is None else rows)
    paths: dict[str, Path] = {}
    with open(out / SUMMARY_CSV, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=CSV_FIELDS)
        writer.writeheader()
        for line in summary.csv_rows():
            writer.writerow(
                {k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in line.items()}
            )
    paths["csv"] = out / SUMMARY_CSV
    (out / SUMMARY_MD).write_text(markdown(summary), encoding="utf-8")
    paths["md"] = out / SUMMARY_MD
    if summary.rows:
        plot_score_vs_budget(summary, out / "score_vs_budget.png")
        paths["score_vs_budget"] = out / "score_vs_budget.png"
        if "full" in summary.policies:
            plot_normalised(summary, out / "normalised_vs_budget.png")
            paths["normalised_vs_budget"] = out / "normalised_vs_budget.png"
        for p in plot_heatmaps(summary, out):
            paths[p.stem] = p
    return paths
