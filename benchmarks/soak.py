"""Soak: a long scripted conversation under a fixed budget, through the API or the chat CLI.

    python benchmarks/soak.py [--tokens 100000] [--budget 1024] [--via api|chat] [--out DIR]
        [--trim]

User turns are essay paragraphs (about 150 tokens) with a question; replies are generated
(seeded sampling, up to --reply tokens). Per turn it records the cells kept after the last
update, the process RSS, wall time per new token (prompt + generated), and the cold store's
size. `--via chat` types the same turns into `edge-namm chat` through a pseudo-terminal and
reads its status line. Pass rules, checked at the end and written to the summary:
never above budget after an update; RSS after warm-up (the first 10% of turns) within 5% of its
median; time per new token flat (median of the last quarter within 25% of the second quarter's);
no decode error; through the API, no token lost (every token of the conversation is in the hot
cache or the cold store after every turn). The cold store is spilled to a temporary cold_dir so
RSS measures the hot side. RSS is also split into anonymous and file-backed pages, and with
--trim read again after the C heap's free memory is handed back to the OS (reported beside
the rule, which stays on plain RSS).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from common import default_model, machine


def _status_mib(pid: int | str, field: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _rss_mib(pid: int | str = "self") -> float:
    return _status_mib(pid, "VmRSS")


def _rss_parts(pid: int | str = "self") -> dict:
    """RSS split into anonymous memory (heap, numpy arrays, llama.cpp buffers) and file-backed
    pages (the mapped model and cold store: clean pages the kernel may drop), to tell growth
    of what the process holds from pages of files it has read."""
    return dict(rss_anon_mib=_status_mib(pid, "RssAnon"), rss_file_mib=_status_mib(pid, "RssFile"))


def _trimmed(trim: bool) -> dict:
    """With --trim: hand the C heap's free memory back to the OS (glibc's malloc_trim) and
    read RSS again, so a growth of what the process holds is told from the allocator keeping
    or returning freed pages (the dips of earlier runs)."""
    if not trim:
        return {}
    from edge_namm.engine.heap import release_free_heap

    release_free_heap()
    return dict(rss_trimmed_mib=_rss_mib(), rss_anon_trimmed_mib=_status_mib("self", "RssAnon"))


def _turns(n: int):
    from edge_namm.tasks.haystack import Haystack

    sents = Haystack.default().sentences
    i = 0
    for t in range(n):
        para = " ".join(sents[i : i + 6])
        i = (i + 6) % (len(sents) - 6)
        yield f"{para}\n\nTurn {t}: what is the main point of this passage, in one sentence?"


def _lost(llm) -> int:
    """Tokens of the conversation that are neither in the hot cache nor in the cold store
    (none may be: without cold_budget an evicted token is kept)."""
    hot = set(llm.kept_positions().tolist())
    cold = set(llm.memory.cold.logical.tolist()) if llm.memory.cold is not None else set()
    return llm.n_tokens - len(hot | cold)


def soak_api(args) -> list[dict]:
    from edge_namm import NammLlama

    llm = NammLlama(
        args.model,
        budget=args.budget,
        recall=True,
        reposition=True,
        cold_dir=str(args.scratch / "cold"),
        n_threads=args.threads,
    )
    messages = [{"role": "system", "content": "You are a concise assistant."}]
    rows = []
    for t, text in enumerate(_turns(10**9)):
        messages.append({"role": "user", "content": text})
        n0, t0 = llm.n_tokens, time.perf_counter()
        out = llm.create_chat_completion(
            messages=messages, max_tokens=args.reply, temperature=0.7, seed=t, repeat_penalty=1.1
        )
        wall = time.perf_counter() - t0
        messages.append(out["choices"][0]["message"])
        st = llm.stats
        rows.append(
            dict(
                turn=t,
                tokens=llm.n_tokens,
                new_tokens=llm.n_tokens - n0,
                wall_s=wall,
                s_per_token=wall / max(1, llm.n_tokens - n0),
                cells=st.cells_used,
                max_after_update=st.max_cells_after_update,
                rss_mib=_rss_mib(),
                **_rss_parts(),
                **_trimmed(args.trim),
                cold_tokens=st.cold_tokens,
                cold_mib=st.cold_bytes / 2**20,
                recalled=st.tokens_recalled,
                renumberings=st.renumberings,
                lost=_lost(llm),
            )
        )
        if t % 10 == 0:
            print(json.dumps(rows[-1]), flush=True)
        if llm.n_tokens >= args.tokens:
            break
    # a session of this length: how long saving and loading it take (no re-prefill)
    path = args.scratch / "chat.session"
    t0 = time.perf_counter()
    llm.save_session(path, extra={"messages": messages})
    saved = time.perf_counter() - t0
    other = NammLlama(
        args.model, budget=args.budget, recall=True, reposition=True, n_threads=args.threads
    )
    t0 = time.perf_counter()
    other.load_session(path)
    rows[-1].update(
        session_mib=path.stat().st_size / 2**20,
        session_save_s=saved,
        session_load_s=time.perf_counter() - t0,
    )
    print(
        json.dumps(
            {k: rows[-1][k] for k in ("tokens", "session_mib", "session_save_s", "session_load_s")}
        ),
        flush=True,
    )
    other.close()
    llm.close()
    return rows


def soak_chat(args) -> list[dict]:
    import re

    import pexpect

    bin_ = Path(sys.executable).parent / "edge-namm"
    child = pexpect.spawn(
        str(bin_),
        [
            "chat",
            "--model",
            args.model,
            "--budget",
            str(args.budget),
            "--max-tokens",
            str(args.reply),
            "--cold-dir",
            str(args.scratch / "cold"),
        ],
        encoding="utf-8",
        timeout=600,
    )
    child.expect("> ")
    rows, tokens = [], 0
    status = re.compile(
        r"\[kv (\d+) cells .*?at most (\d+) so far.*?seen (\d+) evicted \d+"
        r"(?: \| cold (\d+) tok.*?recalled (\d+))?"
    )
    for t, text in enumerate(_turns(10**9)):
        t0 = time.perf_counter()
        child.sendline(text.replace("\n", " "))
        child.expect(status)
        cells, most, seen = (int(g) for g in child.match.group(1, 2, 3))
        cold, recalled = (int(g) if g else 0 for g in child.match.group(4, 5))
        child.expect("> ")
        wall = time.perf_counter() - t0
        rows.append(
            dict(
                turn=t,
                tokens=seen,
                new_tokens=seen - tokens,
                wall_s=wall,
                s_per_token=wall / max(1, seen - tokens),
                cells=cells,
                max_after_update=most,
                cold_tokens=cold,
                recalled=recalled,
                rss_mib=_rss_mib(child.pid),
                **_rss_parts(child.pid),
            )
        )
        tokens = seen
        if t % 10 == 0:
            print(json.dumps(rows[-1]), flush=True)
        if tokens >= args.tokens:
            break
    # on exit the chat removes its cold store (gigabytes at 100k tokens):
    # wait for it rather than let close() give up on a child still cleaning up
    child.sendeof()
    try:
        child.expect(pexpect.EOF, timeout=600)
    finally:
        child.close(force=True)
    return rows


def _spread(values: list[float]) -> float:
    """The largest relative distance from the median."""
    med = statistics.median(values)
    return max(abs(x - med) / med for x in values)


def _quarters(rows: list[dict], key: str) -> tuple[float, float]:
    """Medians of `key` over the second and the last quarter of the turns."""
    n = len(rows)
    return (
        statistics.median(r[key] for r in rows[n // 4 : n // 2] or rows),
        statistics.median(r[key] for r in rows[3 * n // 4 :] or rows),
    )


def verdict(rows: list[dict], budget: int) -> dict:
    n = len(rows)
    warm = rows[max(1, n // 10) :]
    rss_spread = _spread([r["rss_mib"] for r in warm])
    q2, q4 = _quarters(rows, "s_per_token")
    # growth, not allocator noise: the last quarter's median against the second's
    rss_q2, rss_q4 = _quarters(rows, "rss_mib")
    over = [r for r in rows if r.get("max_after_update", 0) > budget]
    out = dict(
        turns=n,
        tokens=rows[-1]["tokens"],
        never_above_budget=not over,
        rss_spread=rss_spread,
        rss_flat=rss_spread <= 0.05,
        rss_q2_mib=rss_q2,
        rss_q4_mib=rss_q4,
        s_per_token_q2=q2,
        s_per_token_q4=q4,
        time_flat=q4 <= 1.25 * q2,
    )
    if "rss_trimmed_mib" in rows[0]:
        trimmed_spread = _spread([r["rss_trimmed_mib"] for r in warm])
        out.update(rss_trimmed_spread=trimmed_spread, rss_trimmed_flat=trimmed_spread <= 0.05)
    if "lost" in rows[0]:
        out["no_token_lost"] = all(r["lost"] == 0 for r in rows)
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--model", default=None)
    p.add_argument("--tokens", type=int, default=100_000)
    p.add_argument("--budget", type=int, default=1024)
    p.add_argument("--reply", type=int, default=96)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--via", choices=["api", "chat"], default="api")
    p.add_argument("--out", default=None)
    p.add_argument(
        "--trim", action="store_true",
        help="(api) after each turn's reading, return free heap to the OS and read RSS again",
    )  # fmt: skip
    args = p.parse_args()
    args.model = args.model or default_model()
    print(machine(), flush=True)
    t0 = time.time()
    # the cold store and the saved session (gigabytes at 100k tokens) go when the run ends
    with tempfile.TemporaryDirectory(prefix="soak-") as scratch:
        args.scratch = Path(scratch)
        rows = soak_api(args) if args.via == "api" else soak_chat(args)
    result = dict(
        machine=machine(),
        command=" ".join(sys.argv),
        via=args.via,
        started=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(t0)),
        verdict=verdict(rows, args.budget),
        rows=rows,
    )
    print(json.dumps(result["verdict"], indent=2))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / f"soak_{args.via}.json").write_text(json.dumps(result, indent=2))
        plot(rows, out / f"soak_{args.via}.png", args.budget)


def plot(rows: list[dict], path: Path, budget: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = [r["tokens"] / 1000 for r in rows]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].plot(x, [r["cells"] for r in rows], lw=0.8)
    axes[0].axhline(budget, color="k", ls="--", lw=0.8, label="budget")
    axes[0].set_ylabel("KV cells after the turn")
    axes[1].plot(x, [r["rss_mib"] for r in rows], lw=0.8, label="RSS")
    if "rss_anon_mib" in rows[0]:
        axes[1].plot(x, [r["rss_anon_mib"] for r in rows], lw=0.8, label="anonymous")
        axes[1].plot(x, [r["rss_file_mib"] for r in rows], lw=0.8, label="file-backed")
    if "rss_trimmed_mib" in rows[0]:
        axes[1].plot(x, [r["rss_trimmed_mib"] for r in rows], lw=0.8, label="RSS after trim")
    if len(axes[1].lines) > 1:
        axes[1].legend(fontsize=7)
    axes[1].set_ylabel("MiB")
    axes[2].plot(x, [1000 * r["s_per_token"] for r in rows], lw=0.5)
    axes[2].set_ylabel("ms per new token")
    if any(r.get("cold_tokens") for r in rows):  # recall's work grows with the cold store
        cold = axes[2].twinx()
        cold.plot(x, [r.get("cold_tokens", 0) / 1000 for r in rows], color="tab:orange", lw=0.8)
        cold.set_ylabel("cold store (k tokens)", color="tab:orange")
    for ax in axes:
        ax.set_xlabel("conversation length (k tokens)")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
