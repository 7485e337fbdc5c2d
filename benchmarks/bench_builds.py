"""Two builds of llama.cpp, same work: the native build against the portable one (or any two).

    python benchmarks/bench_builds.py .venv/bin/python .venv-portable/bin/python \
        [--length 2048] [--decode 64] [--repeats 5]

Each interpreter runs bench_engine.py's `plain` configuration (llama-cpp-python alone, a full
cache: what the build changes) in its own subprocess, in interleaved rounds (A, B, A, B, ...),
so that drifts of the machine hit both alike. Reported: median prefill and decode tokens/s per
build, the median of the per-round ratios B / A, and the CPU variant each build loaded
(`edge-namm info --json`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

from common import default_model, machine

HERE = Path(__file__).resolve().parent


def run(python: str, cfg: dict) -> dict:
    out = subprocess.run(
        [python, str(HERE / "bench_engine.py"), "--child", json.dumps(cfg)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def build_info(python: str) -> dict:
    exe = Path(python).parent / "edge-namm"
    out = subprocess.run([str(exe), "info", "--json"], capture_output=True, text=True, check=True)
    info = json.loads(out.stdout)
    return {k: info.get(k) for k in ("cpu_variant", "amx_compiled_in", "cpu_features_used")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("a", help="interpreter of build A (the baseline)")
    ap.add_argument("b", help="interpreter of build B")
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--length", type=int, default=2048)
    ap.add_argument("--decode", type=int, default=64)
    ap.add_argument("--chunk", type=int, default=128)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    cfg = dict(
        kind="plain",
        model=args.model,
        length=args.length,
        decode=args.decode,
        chunk=args.chunk,
        interval=512,
        threads=args.threads,
        budget=0,
    )
    print(f"machine: {machine()}")
    for name, py in (("A", args.a), ("B", args.b)):
        print(f"{name}: {py} {json.dumps(build_info(py))}")
    runs: dict[str, list[dict]] = {"A": [], "B": []}
    for i in range(args.repeats):
        for name, py in (("A", args.a), ("B", args.b)):
            runs[name].append(run(py, cfg))
        print(f"round {i + 1}/{args.repeats} done", file=sys.stderr, flush=True)
    print()
    print("| build | prefill tok/s | decode tok/s | total s | vs A (total time) |")
    print("|---|---|---|---|---|")
    for name, py in (("A", args.a), ("B", args.b)):
        rs = runs[name]
        ratio = statistics.median(
            r["total_s"] / a["total_s"] for a, r in zip(runs["A"], rs, strict=True)
        )
        print(
            f"| {name} ({py}) | {statistics.median(r['prefill_tok_s'] for r in rs):.1f} "
            f"| {statistics.median(r['decode_tok_s'] for r in rs):.1f} "
            f"| {statistics.median(r['total_s'] for r in rs):.2f} | {ratio:.3f}x |"
        )


if __name__ == "__main__":
    main()
