"""Scoring a cold store, in isolation: widening float16 keys, and the coarse pass's query count.

    python benchmarks/bench_cold_scoring.py [--cold 8192,32768,65536] [--repeats 3]
        [--heads models/recall-heads-smollm2-135m.json]

Random keys and queries of SmolLM2-135M's shape (30 layers, 3 KV heads of 64 dims, 9 query
heads, a 32-token window), one process, medians of --repeats interleaved runs:
1. one layer's tile of 2,048 float16 keys widened to float32 by numpy (`astype`) and by the
   engine's lookup table (`as_float32`);
2. `cold_scores` over each store size with the coarse pass reading the newest 16 queries (the
   engine's setting) or the newest 8, and every cold token or every 2nd (the engine's
   setting), over every (layer, KV head) pair or, with --heads, over the file's pairs only;
   ratios against 16 queries over every token and pair.
"""

from __future__ import annotations

import argparse
import statistics

import numpy as np
from common import machine, median_time

from edge_namm.engine import recall

N_LAYER, N_HEAD_KV, GROUP, D, WINDOW = 30, 3, 3, 64, 32


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--cold", default="8192,32768,65536")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--heads", default=None, help="a recall-heads file: time its pairs alone too")
    args = p.parse_args()
    print(machine())
    rng = np.random.default_rng(0)
    tile = rng.standard_normal((recall.TILE, N_HEAD_KV * D)).astype(np.float16)
    out = np.empty(tile.shape, dtype=np.float32)
    recall.as_float32(tile, out)  # compile
    numpy_s = median_time(
        lambda: [tile.astype(np.float32) for _ in range(100)], args.repeats, warmup=0
    )
    table_s = median_time(lambda: [recall.as_float32(tile, out) for _ in range(100)], 3, warmup=0)
    print(
        f"widen one tile (2,048 x 192): numpy {numpy_s * 1e4:.0f} us, table {table_s * 1e4:.0f} "
        f"us ({numpy_s / table_s:.1f}x)"
    )
    q = rng.standard_normal((N_LAYER, N_HEAD_KV, GROUP * WINDOW, D)).astype(np.float32)
    lse = rng.standard_normal((N_LAYER, N_HEAD_KV, GROUP * WINDOW)).astype(np.float32)
    # (newest queries, cold-token stride, pairs read: None for all)
    variants: list[tuple[int, int, str | None]] = [(16, 1, None), (8, 1, None), (16, 2, None)]
    variants.append((8, 2, None))
    masks: dict[str | None, np.ndarray | None] = {None: None}
    if args.heads:
        from edge_namm.engine.retrieval_heads import heads_mask, read_heads_file

        masks[args.heads] = heads_mask(read_heads_file(args.heads)["heads"], N_LAYER, N_HEAD_KV)
        variants.append((16, 2, args.heads))
    for n in (int(c) for c in args.cold.split(",")):
        keys = rng.standard_normal((N_LAYER, n, N_HEAD_KV * D)).astype(np.float16)
        times: dict[tuple, list[float]] = {v: [] for v in variants}
        recall.cold_scores(q, lse, keys, N_HEAD_KV, WINDOW)  # warm up
        for _ in range(args.repeats):
            for v in variants:
                newest, stride, heads = v
                times[v].append(
                    median_time(
                        lambda keys=keys, newest=newest, stride=stride, heads=heads: (
                            recall.cold_scores(
                                q, lse, keys, N_HEAD_KV, WINDOW, None, newest, masks[heads], stride
                            )
                        ),
                        1,
                        warmup=0,
                    )
                )
        med = {k: statistics.median(v) for k, v in times.items()}
        base = med[16, 1, None]
        cells = ", ".join(
            f"{newest} queries / every {'' if stride == 1 else f'{stride}nd '}token"
            f"{'' if heads is None else f' / {int(masks[heads].sum())} heads'} "
            f"{med[newest, stride, heads]:.3f} s ({med[newest, stride, heads] / base:.2f}x)"
            for newest, stride, heads in variants
        )
        print(f"cold_scores, {n} cold tokens: {cells}", flush=True)


if __name__ == "__main__":
    main()
