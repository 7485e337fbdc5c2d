"""What query-aware recall costs, and how it grows with the cold store.

    python benchmarks/bench_recall.py [--cold 2048,8192,32768,65536] [--suffix 64,384]
        [--repeats 3] [--compare-heads] [--out docs/results/recall-cost]

One process: a streaming cache (budget 1,024, updates every 512) prefills 3,072 tokens of the
essay haystack, so ~2k tokens sit in the cold store; copies of those real cold entries then pad
it to each size in --cold. At each size a new prompt suffix of each length in --suffix is
decoded with and without recall, interleaved --repeats times, and rolled back after each run.
Reported per size and suffix (medians): the suffix's prefill time without recall, the recall time
(query capture, scoring hot + cold, swap, window re-decode) and their ratio; the target is
<= 10%. Recall's own work hardly depends on the suffix's length, its prefill does: the ratio
falls as prompts grow. The engine's coarse pass reads the model's retrieval heads when a
calibration ships for it (recall_heads="auto"); --compare-heads adds, interleaved in the same
rounds, recall with the coarse pass over every (layer, KV head) pair.

With --rss, two child processes grow a cold store to the largest size, in RAM and under a
cold_dir, and report the process RSS after each growth step (memory-mapped files keep it flat).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from common import default_model, machine


def _status_mib(field: str) -> float:
    """A memory field of /proc/self/status (VmRSS, VmHWM, ...) in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mib() -> float:
    return _status_mib("VmRSS")


def _engine(model: str, threads: int, cold_dir: str | None = None):
    from edge_namm.engine import NammLlama

    return NammLlama(
        model,
        policy="streaming",
        budget=1024,
        update_interval=512,
        chunk=128,
        recall=True,
        cold_dir=cold_dir,
        n_threads=threads,
    )


def _prefill(llm, n: int) -> list[int]:
    from edge_namm.tasks.haystack import Haystack

    text = " ".join(Haystack.default().sentences[:4000])
    tokens = llm.tokenize(text.encode())
    llm.eval(tokens[:n])
    return tokens


def _pad_cold(llm, template, size: int) -> None:
    """Grow the cold store to `size` entries with copies of real cold tokens."""
    from edge_namm.engine.cold import ColdBatch

    cold = llm.memory.cold
    while len(cold) < size:
        n = min(len(template), size - len(cold))
        cold.add(
            ColdBatch(
                k=template.k[:, :n],
                v=template.v[:, :n],
                keys=template.keys[:, :n],
                rot_pos=template.rot_pos[:n],
                pos=template.pos[:n],
                logical=template.logical[:n],
                tokens=template.tokens[:n],
                score=template.score[:n],
            )
        )


def _roll_back(llm, n_tokens: int, since_update: int) -> None:
    """Undo a measured prompt: its cells, its cold copies and the update clock. The copies go
    now, not at the next decode as for an edited message, so that padding the store to the next
    size counts only live entries. Recall may have swapped some of the prompt's own tokens out
    for older ones, which stay hot: an update outside the timing brings the cache back to its
    budget, so every round starts from the same size."""
    llm._ctx.kv_cache_seq_rm(-1, n_tokens, -1)
    llm.memory.drop_cold_from(n_tokens)
    llm.n_tokens, llm._since_update = n_tokens, since_update
    llm.memory.before_decode()
    if llm.memory.view().n > llm.budget:
        llm.memory.update()


def cost(args) -> dict:
    llm = _engine(args.model, args.threads)
    tokens = _prefill(llm, 3072)
    cold = llm.memory.cold
    template = cold.take(np.arange(len(cold)))
    cold.add(template)
    rows = []
    heads = llm.memory.coarse_heads  # what recall_heads="auto" found for this model
    # (recall on, coarse pass through `heads`); the extra arm reads every pair
    arms = [(False, heads), (True, heads)] + ([(True, None)] if args.compare_heads else [])
    print(f"coarse pass: {llm.recall_heads}", flush=True)
    for size, n_suffix in ((c, s) for c in sorted(args.cold) for s in args.suffix):
        suffix = tokens[3072 : 3072 + n_suffix]
        _pad_cold(llm, template, size)
        base, recall, scoring, recalled, recall_all = [], [], [], [], []
        for _ in range(args.repeats + 1):  # the first round warms up
            for with_recall, arm_heads in arms:
                n0, since = llm.n_tokens, llm._since_update
                st = llm.stats
                r0, s0, t_in0 = st.seconds_recall, st.seconds_namm, st.tokens_recalled
                llm.recall = with_recall
                llm.memory.coarse_heads = arm_heads
                t0 = time.perf_counter()
                llm.eval(suffix)
                total = time.perf_counter() - t0
                if with_recall and arm_heads is not heads:
                    recall_all.append(st.seconds_recall - r0)
                elif with_recall:
                    recall.append(st.seconds_recall - r0)
                    scoring.append(st.seconds_namm - s0)
                    recalled.append(st.tokens_recalled - t_in0)
                else:
                    base.append(total)
                _roll_back(llm, n0, since)
        llm.memory.coarse_heads = heads
        base, recall, scoring = base[1:], recall[1:], scoring[1:]
        row = dict(
            cold_tokens=len(cold),
            cold_mib=round(cold.nbytes / 2**20, 1),
            suffix_tokens=len(suffix),
            prefill_s=statistics.median(base),
            recall_s=statistics.median(recall),
            scoring_and_swap_s=statistics.median(scoring),
            recalled_tokens=int(statistics.median(recalled[1:])),
        )
        row["recall_vs_prefill"] = row["recall_s"] / row["prefill_s"]
        if recall_all:
            row["recall_all_heads_s"] = statistics.median(recall_all[1:])
        rows.append(row)
        print(json.dumps(row), flush=True)
    llm.close()
    return dict(rows=rows)


def _peak_during(run) -> float:
    """The process's peak RSS (MiB) while `run()` runs: the kernel's high-water mark is reset
    first (clear_refs 5, Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    run()
    return _status_mib("VmHWM")


def rss_child(args) -> None:
    with tempfile.TemporaryDirectory(prefix="bench-recall-") as scratch:
        llm = _engine(args.model, args.threads, scratch if args.cold_dir else None)
        tokens = _prefill(llm, 3072)
        cold = llm.memory.cold
        template = cold.take(np.arange(len(cold)))
        cold.add(template)

        def recall_once() -> None:  # a 64-token prompt with recall, then rolled back
            n0, since = llm.n_tokens, llm._since_update
            llm.eval(tokens[3072 : 3072 + 64])
            _roll_back(llm, n0, since)

        out = [dict(cold_tokens=len(cold), rss_mib=_rss_mib())]
        for size in sorted(args.cold):
            _pad_cold(llm, template, size)
            row = dict(cold_tokens=len(cold), rss_mib=_rss_mib(), on_disk=cold.on_disk)
            row["peak_in_recall_mib"] = _peak_during(recall_once)
            out.append(row)
        print(json.dumps(out))
        llm.close()


def rss(args) -> dict:
    res = {}
    for label, flag in (("ram", []), ("cold_dir", ["--cold-dir"])):
        cmd = [sys.executable, __file__, "--rss-child", "--cold", ",".join(map(str, args.cold))]
        cmd += ["--model", args.model, "--threads", str(args.threads), *flag]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        res[label] = json.loads(out.strip().splitlines()[-1])
        print(label, res[label], flush=True)
    return res


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["cost"]["rows"]
    fig, axes = plt.subplots(1, 2 if "rss" in result else 1, figsize=(10, 4), squeeze=False)
    ax = axes[0][0]
    for n_suffix in sorted({r["suffix_tokens"] for r in rows}):
        pts = [r for r in rows if r["suffix_tokens"] == n_suffix]
        line = ax.plot(
            [r["cold_tokens"] for r in pts],
            [r["recall_vs_prefill"] for r in pts],
            "o-",
            label=f"{n_suffix}-token prompt",
        )[0]
        if all("recall_all_heads_s" in r for r in pts):
            ax.plot(
                [r["cold_tokens"] for r in pts],
                [r["recall_all_heads_s"] / r["prefill_s"] for r in pts],
                "x:",
                color=line.get_color(),
                label=f"{n_suffix}-token prompt, coarse pass over every head",
            )
    ax.axhline(0.1, color="k", ls="--", lw=0.8, label="target: 10% of the prompt's prefill")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("cold store (tokens)")
    ax.set_ylabel("recall time / prefill time (median)")
    ax.legend(fontsize=8)
    ax.set_title("Recall cost vs cold store size")
    if "rss" in result:
        ax = axes[0][1]
        for label, pts in result["rss"].items():
            line = ax.plot(
                [p["cold_tokens"] for p in pts], [p["rss_mib"] for p in pts], "o-", label=label
            )[0]
            peaks = [p for p in pts if "peak_in_recall_mib" in p]
            ax.plot(
                [p["cold_tokens"] for p in peaks],
                [p["peak_in_recall_mib"] for p in peaks],
                "x--",
                color=line.get_color(),
                label=f"{label}: peak during a recall",
            )
        ax.set_xlabel("cold store (tokens)")
        ax.set_ylabel("process RSS (MiB)")
        ax.legend(fontsize=8)
        ax.set_title("Memory: RAM vs cold_dir")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default=None)
    p.add_argument("--cold", default="2048,8192,32768,65536")
    # a suffix stays below the update interval (512): an eviction inside it would not roll back
    p.add_argument("--suffix", default="64,384", help="prompt lengths in tokens, comma list")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--compare-heads", action="store_true", help="also time recall over every head pair"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--rss", action="store_true")
    p.add_argument("--rss-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--cold-dir", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--out", default=None)
    args = p.parse_args()
    args.model = args.model or default_model()
    args.cold = [int(c) for c in args.cold.split(",")]
    args.suffix = [int(n) for n in args.suffix.split(",")]
    if args.rss_child:
        rss_child(args)
        return
    result = dict(
        machine=machine(),
        command=" ".join(sys.argv),
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    print(result["machine"], flush=True)
    result["cost"] = cost(args)
    if args.rss:
        result["rss"] = rss(args)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "recall_cost.json").write_text(json.dumps(result, indent=2))
        plot(result, out / "recall_cost.png")
        print(f"wrote {out}/recall_cost.json and recall_cost.png")


if __name__ == "__main__":
    main()
