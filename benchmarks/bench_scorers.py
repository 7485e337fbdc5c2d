"""Per-update scoring latency: numpy reference vs ONNX Runtime, for every scorer type.

One "update" scores raw features [rows, cells, 25] (rows = layers x kv-heads, 90 for
SmolLM2-135M). Prints a Markdown table of medians with the numpy/ONNX ratio and the largest
absolute difference between the two backends.

    python benchmarks/bench_scorers.py            # cells 256..8192, 90 rows
    python benchmarks/bench_scorers.py --quick    # a few sizes, fewer repeats
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--quick", action="store_true", help="cells 256,1024 (unless --cells); 3 repeats"
    )
    ap.add_argument("--cells", default=None, help="comma list (default 256,...,8192)")
    ap.add_argument("--rows", type=int, default=90, help="(layer, kv-head) rows (default 90)")
    ap.add_argument("--types", default="bam,bam-window,mlp,mlp2", help="scorer types")
    ap.add_argument("--repeats", type=int, default=7, help="timed runs per cell (max)")
    ap.add_argument(
        "--budget-s",
        type=float,
        default=20.0,
        help="stop repeating a (type, backend, cells) case after this many seconds (min 1 run)",
    )
    ap.add_argument("--threads", type=int, default=None, help="ORT intra-op threads (all cores)")
    ap.add_argument("--providers", default="cpu", help="ORT providers: cpu | auto | cuda ...")
    ap.add_argument(
        "--blas-threads",
        type=int,
        default=None,
        help="set OPENBLAS/OMP/MKL thread counts for numpy (before it is imported)",
    )
    args = ap.parse_args(argv)
    if args.quick:
        args.cells = args.cells or "256,1024"
        args.repeats = min(args.repeats, 3)
    args.cells = args.cells or "256,512,1024,2048,4096,8192"
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.blas_threads:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(args.blas_threads)
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

    import numpy as np
    import onnxruntime as ort
    from common import machine

    from edge_namm.scorers import SCORERS, compile_scorer

    def timed(fn, x, repeats: int, budget: float) -> tuple[float, int, object]:
        """Median ms over up to ``repeats`` runs after a warm-up; a warm-up longer than the
        budget is the only sample (BAM at 8192 cells takes a minute on a busy 2-core box)."""
        t0 = time.perf_counter()
        out = fn(x)  # warm-up (ORT allocations, caches)
        first = time.perf_counter() - t0
        if first >= budget:
            return first * 1e3, 1, out
        samples: list[float] = []
        start = time.perf_counter()
        while len(samples) < repeats and (not samples or time.perf_counter() - start < budget):
            t0 = time.perf_counter()
            fn(x)
            samples.append(time.perf_counter() - t0)
        return statistics.median(samples) * 1e3, len(samples), out

    cells = [int(c) for c in args.cells.split(",") if c]
    types = [t for t in args.types.split(",") if t]
    rng = np.random.default_rng(0)
    load = os.getloadavg() if hasattr(os, "getloadavg") else (float("nan"),) * 3
    print(
        f"{machine()}; Python {platform.python_version()}, numpy {np.__version__}, onnxruntime "
        f"{ort.__version__}, ORT threads {args.threads or os.cpu_count()}, BLAS threads "
        f"{args.blas_threads or 'default'}, load average {load[0]:.2f} "
        f"{load[1]:.2f} {load[2]:.2f}, rows {args.rows}, medians of up to {args.repeats} runs "
        f"(budget {args.budget_s:g} s per case)\n"
    )
    rows = []
    for type_name in types:
        cls = SCORERS[type_name]
        scorer = cls(
            rng.normal(0.0, 0.1, cls.n_params),
            rng.normal(0.0, 1.0, 17),
            rng.uniform(0.5, 2.0, 17),
        )
        onx = compile_scorer(
            scorer, "onnx", providers=args.providers, intra_op_threads=args.threads
        )
        for n in cells:
            x = rng.normal(0.0, 1.0, (args.rows, n, 25)).astype(np.float32)
            t_np, k_np, out_np = timed(scorer.score, x, args.repeats, args.budget_s)
            t_ort, k_ort, out_ort = timed(onx.score, x, args.repeats, args.budget_s)
            diff = float(np.max(np.abs(np.asarray(out_np) - np.asarray(out_ort))))
            rows.append((type_name, n, t_np, t_ort, f"{k_np}/{k_ort}", diff))
            print(
                f"  {type_name:10s} cells {n:5d}: numpy {t_np:10.2f} ms  onnx {t_ort:10.2f} ms",
                file=sys.stderr,
                flush=True,
            )
    print(f"ONNX Runtime provider: {onx.provider}\n")
    print("| scorer | cells | numpy ms | onnx ms | numpy / onnx | runs | max abs diff |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for type_name, n, t_np, t_ort, runs, diff in rows:
        print(
            f"| {type_name} | {n} | {t_np:.2f} | {t_ort:.2f} | {t_np / t_ort:.2f}x | {runs} "
            f"| {diff:.1e} |"
        )


if __name__ == "__main__":
    main()
