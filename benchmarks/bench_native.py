"""Prefill/decode speed of the patched llama.cpp: capture unused vs disarmed vs armed.

    python benchmarks/bench_native.py [--cells 4096] [--prompt 3584] [--repeats 3]

"plain" is llama_cpp.Llama with edge-namm never touched (the patch adds functions and a
callback setter; the decode path itself is stock code). "disarmed" has a capture buffer
allocated but no callback installed; "armed" captures every layer's GQA-averaged rows
(the buffer is cleared after each decode, as the engine does after folding), averaged by a
graph node on the backend (the default); "armed, host mean" reads the whole softmax and
averages on the host. "bytes / chunk" is what capture reads per prefill chunk: on a GPU, what
crosses to the host.
"""

from __future__ import annotations

import argparse
import time

import llama_cpp
import numpy as np
from common import default_model, machine

from edge_namm import native


def run(
    llm: llama_cpp.Llama, tokens: list[int], chunk: int, n_decode: int, cap
) -> tuple[float, float]:
    llm.reset()
    llm._ctx.kv_cache_clear()
    t0 = time.perf_counter()
    for i in range(0, len(tokens), chunk):
        llm.eval(tokens[i : i + chunk])
        if cap is not None:
            cap.clear()
    prefill = time.perf_counter() - t0
    return len(tokens) / prefill, run_decode(llm, tokens, n_decode, cap) if n_decode else 0.0


def run_decode(llm: llama_cpp.Llama, tokens: list[int], n_decode: int, cap) -> float:
    """Single-token decodes after a prefill (the cache keeps growing); tokens/s."""
    t0 = time.perf_counter()
    for i in range(n_decode):
        llm.eval([tokens[i]])
        if cap is not None:
            cap.clear()
    return n_decode / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--cells", type=int, default=4096, help="n_ctx (KV cells)")
    ap.add_argument("--prompt", type=int, default=3584, help="prefill tokens")
    ap.add_argument("--decode", type=int, default=64, help="single-token decodes")
    ap.add_argument("--chunk", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()

    llm = llama_cpp.Llama(
        args.model,
        n_ctx=args.cells,
        n_batch=args.chunk,
        n_ubatch=args.chunk,
        n_threads=args.threads,
        verbose=False,
    )
    rng = np.random.default_rng(0)
    tokens = rng.integers(100, llm.n_vocab() - 100, size=args.prompt).tolist()
    cap = native.AttentionCapture(llm._ctx.ctx, max_queries=args.chunk)
    modes = {"plain": None, "disarmed": cap, "armed": cap, "armed, host mean": cap}
    results: dict[str, list[tuple[float, float]]] = {m: [] for m in modes}
    bytes_per_chunk: dict[str, float] = {}
    n_chunks = -(-len(tokens) // args.chunk)
    run(llm, tokens[:256], args.chunk, 4, None)  # warm-up
    for _ in range(args.repeats):
        for mode, c in modes.items():  # interleaved so drift hits every mode alike
            cap.set_device_mean(mode != "armed, host mean")
            cap.arm(mode.startswith("armed"))
            before = cap.bytes_read
            prefill, _ = run(llm, tokens, args.chunk, 0, c)
            bytes_per_chunk[mode] = (cap.bytes_read - before) / n_chunks  # prefill chunks only
            results[mode].append((prefill, run_decode(llm, tokens, args.decode, c)))
    cap.disarm()
    print(f"machine: {machine()}; model: {args.model}")
    print(
        f"n_ctx {args.cells}, prefill {args.prompt} tokens in chunks of {args.chunk}, "
        f"{args.decode} decodes, medians of {args.repeats}"
    )
    cols = ("mode", "prefill tok/s", "decode tok/s", "prefill vs plain", "decode vs plain")
    print("| " + " | ".join((*cols, "bytes / chunk")) + " |")
    print("|---|---|---|---|---|---|")
    base = [np.median([r[k] for r in results["plain"]]) for k in (0, 1)]
    for mode in modes:
        med = [np.median([r[k] for r in results[mode]]) for k in (0, 1)]
        print(
            f"| {mode} | {med[0]:.1f} | {med[1]:.1f} "
            f"| {med[0] / base[0]:.3f} | {med[1] / base[1]:.3f} "
            f"| {bytes_per_chunk.get(mode, 0) / 2**20:.1f} MiB |"
        )
    cap.close()
    llm.close()


if __name__ == "__main__":
    main()
