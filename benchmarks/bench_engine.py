"""End-to-end speed and memory: plain llama-cpp-python vs NammLlama (`full`, `namm`).

    python benchmarks/bench_engine.py [--lengths 4096,8192] [--budget-fraction 0.25] [--repeats 3]
        [--scorers models/a.json,models/b.json] [--policies kvzip,streaming]

Each configuration runs in its own subprocess so that its peak RSS is its own. With
--repeats N the configurations run in N interleaved rounds (plain, full, namm, plain, ...) so
that slow drifts of the machine hit all of them alike; every column is the median over the
rounds and "vs plain" is the median of the per-round ratios. ``--scorers`` adds a `namm` row per
scorer file (the plain `namm` row uses the default scorer); ``--policies`` adds a row per other
evicting policy under the same budget (`kvzip`'s repeat pass shows here). Reported:
prefill and decode tokens/s, peak RSS, and NammLlama's split between llama_decode and NAMM
work (fold + scoring + eviction). "plain" is llama_cpp.Llama with n_ctx sized to the input
(input + decode tokens), i.e. a full cache.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import default_model, machine

from edge_namm.scorers.default import default_scorer_path


def child(cfg: dict) -> dict:
    import llama_cpp
    import numpy as np

    from edge_namm import native
    from edge_namm.engine import NammLlama
    from edge_namm.tasks.haystack import Haystack

    native.require()  # a portable build loads its CPU backend here, also for the plain run

    text = " ".join(Haystack.default().sentences[:3000])
    if cfg["kind"] == "plain":
        llm = llama_cpp.Llama(
            cfg["model"],
            n_ctx=cfg["length"] + cfg["decode"] + 64,
            n_batch=cfg["chunk"],
            n_ubatch=cfg["chunk"],
            verbose=False,
            n_threads=cfg["threads"],
        )
        llm.input_ids = np.zeros(cfg["length"] + cfg["decode"] + 64, dtype=np.intc)
    else:
        llm = NammLlama(
            cfg["model"],
            policy=cfg.get("policy") or ("namm" if cfg["kind"].startswith("namm") else "full"),
            scorer=cfg.get("scorer"),
            budget=cfg["budget"],
            chunk=cfg["chunk"],
            update_interval=cfg["interval"],
            n_threads=cfg["threads"],
        )
    tokens = llm.tokenize(text.encode())[: cfg["length"]]
    t0 = time.perf_counter()
    for i in range(0, len(tokens), cfg["chunk"]):
        llm.eval(tokens[i : i + cfg["chunk"]])
    prefill = time.perf_counter() - t0
    token = tokens[-1]
    t0 = time.perf_counter()
    for _ in range(cfg["decode"]):
        llm.eval([token])
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        token = int(np.argmax(logits))
    decode = time.perf_counter() - t0
    out = {
        "prefill_tok_s": len(tokens) / prefill,
        "decode_tok_s": cfg["decode"] / decode,
        "total_s": prefill + decode,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if cfg["kind"] != "plain":
        out.update(
            seconds_llama=llm.stats.seconds_llama,
            seconds_namm=llm.stats.seconds_namm,
            cells=llm.stats.n_cells,
        )
    else:
        out["cells"] = llm.n_ctx()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--lengths", default="4096,8192")
    ap.add_argument("--budget-fraction", type=float, default=0.25)
    ap.add_argument("--budget", type=int, default=None, help="fixed budget (overrides fraction)")
    ap.add_argument("--interval", type=int, default=512)
    ap.add_argument("--chunk", type=int, default=128)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=1, help="interleaved rounds (medians)")
    ap.add_argument("--scorers", default="", help="comma list of scorer files: one row each")
    ap.add_argument("--policies", default="", help="comma list of other evicting policies")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(child(json.loads(args.child))))
        return
    print(f"machine: {machine()}")
    # Resolved once, so that every round's `namm` row runs the same file.
    default_scorer = str(default_scorer_path())
    print(f"default scorer (the `namm` row): {default_scorer}")
    print(
        "| input | config | cells | prefill tok/s | decode tok/s | total s | vs plain "
        "| peak RSS MiB | NAMM share |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    scorers = {f"namm:{Path(f).stem}": f for f in args.scorers.split(",") if f}
    others = {f"policy:{p}": p for p in args.policies.split(",") if p}
    kinds = ("plain", "full", "namm", *scorers, *others)
    for length in [int(x) for x in args.lengths.split(",")]:
        budget = args.budget or int(length * args.budget_fraction)
        runs: dict[str, list[dict]] = {kind: [] for kind in kinds}
        for _ in range(args.repeats):
            for kind in kinds:
                cfg = dict(
                    kind=kind,
                    model=args.model,
                    length=length,
                    decode=args.decode,
                    chunk=args.chunk,
                    interval=args.interval,
                    threads=args.threads,
                    budget=budget
                    if kind.startswith(("namm", "policy:"))
                    else length + args.decode + args.chunk,
                    scorer=default_scorer if kind == "namm" else scorers.get(kind),
                    policy=others.get(kind),
                )
                res = subprocess.run(
                    [sys.executable, __file__, "--child", json.dumps(cfg)],
                    capture_output=True,
                    text=True,
                    check=True,
                )
                runs[kind].append(json.loads(res.stdout.strip().splitlines()[-1]))
        for kind in kinds:
            rs = runs[kind]

            def med(key: str, rs: list[dict] = rs) -> float:
                return statistics.median(r[key] for r in rs)

            ratio = statistics.median(
                p["total_s"] / r["total_s"] for p, r in zip(runs["plain"], rs, strict=True)
            )
            share = "-"
            if "seconds_namm" in rs[0]:
                shares = [r["seconds_namm"] / (r["seconds_namm"] + r["seconds_llama"]) for r in rs]
                share = f"{statistics.median(shares):.1%}"
            evicting = kind.startswith(("namm", "policy:"))
            label = f"{kind} (budget {budget})" if evicting else kind
            print(
                f"| {length} | {label} | {rs[0]['cells']} | {med('prefill_tok_s'):.1f} "
                f"| {med('decode_tok_s'):.1f} | {med('total_s'):.1f} | {ratio:.2f}x "
                f"| {med('peak_rss_mib'):.0f} | {share} |",
                flush=True,
            )
        if args.repeats > 1:
            print(
                "per-round total s: "
                + "; ".join(
                    f"{kind} " + ", ".join(f"{r['total_s']:.1f}" for r in runs[kind])
                    for kind in kinds
                ),
                flush=True,
            )


if __name__ == "__main__":
    main()
