"""Find a model's retrieval heads: the (layer, KV head) pairs recall's coarse pass reads.

On train-split needle prompts prefilled under NAMM with the cold tier on (recall_study.capture,
the same captures coarse_study.py uses), each (layer, KV head) pair gets the needle's strength:
the largest log-attention, next to the hot cache, that the coarse pass's queries (the window's
newest 16) give any cold token of the needle sentence through that pair alone. The pairs among
the --top strongest in any prompt are the model's retrieval heads; they are written, with the
model's fingerprint and how they were found, to a recall-heads file that NammLlama picks up for
that model (edge_namm/engine/retrieval_heads.py).

    python benchmarks/retrieval_heads.py --captures runs/a.pkl,runs/b.pkl [--top 4]
        [--out models/recall-heads-smollm2-135m.json]

Without --captures (or when the files do not exist yet) the prompts are captured first, from
--tasks / --length / --prompts / --seed, and kept in the first file given.
"""

from __future__ import annotations

import argparse
import pickle
import shlex
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import default_model, machine, needle_prompt_args  # noqa: E402


def strengths(cap: dict, queries: int = 16, window: int = 32) -> np.ndarray:
    """[n_layer, n_head_kv]: the needle's best coarse log-attention through each pair alone
    (-inf when none of the needle sentence is cold)."""
    from coarse_study import _inputs

    from edge_namm.engine.recall import as_float32, newest_queries

    g = cap["n_head_kv"]
    n_layer, _, width = cap["cold_keys"].shape
    q, _, lse, *_ = _inputs(cap, "all/16", n_layer, window)
    q_new, lse_new = newest_queries(q, lse, window, queries)
    na, ne = cap["needle"]
    own = np.flatnonzero((cap["cold_logical"] >= na) & (cap["cold_logical"] < ne))
    d = width // g
    out = np.full((n_layer, g), -np.inf)
    if not len(own):
        return out
    for layer in range(n_layer):
        k = as_float32(cap["cold_keys"][layer, own])
        for h in range(g):
            z = q_new[layer, h] @ k[:, h * d : (h + 1) * d].T - lse_new[layer, h][:, None]
            out[layer, h] = z.max()
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    needle_prompt_args(ap, prompts=6)
    ap.set_defaults(tasks="niah", length=8192)
    ap.add_argument("--budget", default="0.25", help="hot budget of the captures")
    ap.add_argument("--captures", default=None, help="comma-separated .pkl files (reused/kept)")
    ap.add_argument("--top", type=int, default=4, help="strongest pairs kept per prompt")
    ap.add_argument("--out", type=Path, default=None, help="recall-heads file to write")
    args = ap.parse_args(argv)

    import llama_cpp

    from edge_namm.engine.retrieval_heads import write_heads_file
    from edge_namm.eval.prompting import PromptBuilder

    model = args.model or default_model()
    files = [Path(p) for p in args.captures.split(",")] if args.captures else []
    caps: list[dict] = []
    for path in files:
        if path.exists():
            caps += pickle.loads(path.read_bytes())
    if not caps:
        from recall_study import capture

        from edge_namm.train.trainer import training_samples

        builder = PromptBuilder.from_model_path(model)
        pairs = training_samples(
            args.tasks.split(","), [args.length], args.prompts, args.seed, builder
        )
        caps = capture(model, "namm", args.budget, builder, pairs, args.threads)
        if files:
            files[0].write_bytes(pickle.dumps(caps))

    print(f"machine: {machine()}")
    print(f"{len(caps)} prompts; the {args.top} strongest (layer, KV head) pairs of each:\n")
    print("| prompt | strongest pairs: layer/head (log-attention) |")
    print("|---|---|")
    chosen: set[tuple[int, int]] = set()
    for cap in caps:
        s = strengths(cap)
        order = np.argsort(-s, axis=None)[: args.top]
        top = [divmod(int(i), s.shape[1]) for i in order if np.isfinite(s.flat[i])]
        chosen |= set(top)
        cells = ", ".join(f"{layer}/{h} ({s[layer, h]:+.2f})" for layer, h in top)
        print(f"| {cap['sample']} | {cells or 'needle not cold'} |")
    heads = sorted(chosen)
    n_pairs = caps[0]["cold_keys"].shape[0] * caps[0]["n_head_kv"]
    print(f"\n{len(heads)} of {n_pairs} pairs: " + " ".join(f"{a}/{b}" for a, b in heads))
    if args.out is not None:
        meta = llama_cpp.Llama(model, vocab_only=True, verbose=False).metadata
        provenance = {
            "command": "python benchmarks/retrieval_heads.py " + shlex.join(sys.argv[1:]),
            "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "machine": machine(),
            "prompts": [c["sample"] for c in caps],
            "rule": f"the {args.top} strongest pairs of any prompt (needle's coarse "
            "log-attention through each pair alone, newest 16 window queries)",
        }
        write_heads_file(args.out, meta, heads, provenance)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
