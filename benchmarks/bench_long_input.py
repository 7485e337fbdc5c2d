"""A prompt far longer than the cache: prefill N tokens under a fixed budget, then generate.

    python benchmarks/bench_long_input.py [--tokens 20000] [--budget 1024] [--policy namm]

Prints throughput, the most cells held after any update, what a full cache would need, and
the NAMM/llama.cpp time split. The prompt is essay text (`edge-namm pull haystack`).
"""

from __future__ import annotations

import argparse
import time

from common import default_model, machine

from edge_namm.engine import NammLlama
from edge_namm.tasks.haystack import Haystack


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=default_model())
    ap.add_argument("--tokens", type=int, default=20000)
    ap.add_argument("--budget", type=int, default=1024)
    ap.add_argument("--policy", default="namm")
    ap.add_argument("--generate", type=int, default=32)
    ap.add_argument("--reposition", action="store_true", help="renumber positions (ENGINE.md)")
    args = ap.parse_args()

    llm = NammLlama(
        args.model,
        policy=args.policy,
        budget=args.budget,
        reposition=args.reposition,
        progress=True,
    )
    text = " ".join(Haystack.default().sentences)
    tokens = llm.tokenize(text.encode())[: args.tokens]
    if len(tokens) < args.tokens:
        raise SystemExit(f"the haystack only has {len(tokens)} tokens")
    t0 = time.perf_counter()
    out = llm.create_completion(tokens, max_tokens=args.generate, temperature=0.0)
    wall = time.perf_counter() - t0
    st = llm.stats
    print(f"machine: {machine()}")
    print(
        f"policy {args.policy}, budget {args.budget} cells ({st.n_cells} allocated), "
        f"{len(tokens)} prompt tokens + {out['usage']['completion_tokens']} generated"
    )
    print(
        f"wall {wall:.1f} s ({st.tokens_seen / wall:.1f} tok/s overall); "
        f"llama_decode {st.seconds_llama:.1f} s, NAMM {st.seconds_namm:.1f} s"
    )
    print(
        f"max cells after an update: {st.max_cells_after_update}; evicted {st.tokens_evicted}; "
        f"KV in use {st.kv_bytes_in_use / 2**20:.1f} MiB vs full cache "
        f"{st.kv_bytes_full_cache / 2**20:.1f} MiB"
    )
    print("continuation:", repr(out["choices"][0]["text"][:120]))
    llm.close()


if __name__ == "__main__":
    main()
