"""How cheap can recall's coarse pass get before needles stop coming back from a large cold store?

Above CANDIDATES cold tokens, recall first ranks every cold token with a coarse pass (the
window's newest 16 queries, every layer and KV head), then scores the best 2,048 exactly. The
coarse pass is most of a recall's cost on a large store (docs/PERFORMANCE.md, "Recall"). This
script compares cheaper coarse passes on the same captured inputs:

1. Each needle prompt is prefilled under NAMM with the cold tier on, and recall's inputs are
   kept at the moment it would run (recall_study.capture).
2. The prompt's cold store is padded to --pad tokens with the cold keys of the *other*
   prompts (the same kind of filler, at positions far from this prompt's, so they never pool
   with it; repeated when there are not enough, which is harder than real text: a strong
   distractor then takes two candidate slots).
3. Each variant runs the engine's own selection (coarse pass, exact scoring of the candidates,
   pooling across the tiers, swaps up to budget / 4) and is scored by what the hot cache holds
   afterwards: is the whole answer hot, and where the needle sentence's best cold token ranked
   in the coarse pass (under 2,048 it is scored exactly).
4. The coarse pass of each variant is timed on the padded store of the first prompt (medians).

Variants are "<layers>/<queries>[/<stride>]": layers "all", "every<k>" (0, k, 2k, ..), "mid"
(the middle half), "peak<k>" (the k layers whose window queries reach hardest into the hot
past) or "heads" (the (layer, KV head) pairs of the --heads file), with the newest <queries>
window queries, reading every <stride>-th cold token (the best of those bring the stride - 1
stored after them to exact scoring). The rank column is then among the tokens read, for the
needle tokens read.

    python benchmarks/coarse_study.py [--length 8192] [--prompts 6] [--split train|eval]
        [--pad 65536] [--captures runs/coarse.pkl]
"""

from __future__ import annotations

import argparse
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import default_model, machine, median_time, needle_prompt_args  # noqa: E402
from recall_study import capture  # noqa: E402

VARIANTS = (
    "all/16", "all/8", "every2/16", "every2/8", "every3/16", "every3/8", "mid/16", "mid/8",
)  # fmt: skip
FAR = 1_000_000  # logical offset between padding prompts: no pooling across them


def parse(variant: str) -> tuple[str, int, int]:
    """ "<layers>/<queries>[/<stride>]" -> (layers, queries, stride)."""
    parts = variant.split("/")
    return parts[0], int(parts[1]), int(parts[2]) if len(parts) > 2 else 1


def hot_peaks(cap: dict, q: np.ndarray, lse: np.ndarray) -> np.ndarray:
    """Per layer, the largest log-attention any window query gives a hot token that is
    neither a sink nor among the recent tokens: how hard the layer reaches into the past."""
    from edge_namm.engine.recall import _blocks

    logical = cap["hot_logical"]
    order = np.sort(logical)
    lo, hi = order[min(cap["n_sink"], len(order) - 1)], order[-max(cap["n_recent"], 33)]
    past = (logical >= lo) & (logical < hi)
    n_layer = cap["hot_keys"].shape[0]
    peaks = np.full(n_layer, -np.inf)
    for layer, g, k in _blocks(cap["hot_keys"][:, past], cap["n_head_kv"]):
        z = q[layer, g] @ k.T - lse[layer, g][:, None]
        peaks[layer] = max(peaks[layer], float(z.max()))
    return peaks


HEADS: list[np.ndarray] = []  # the --heads file's mask, for the "heads" variants


def layers_of(
    name: str, n_layer: int, n_head_kv: int, peaks: np.ndarray | None = None
) -> np.ndarray | None:
    """The [n_layer, n_head_kv] mask of "all" (None), "mid" (the middle half), "every<k>"
    (layers 0, k, 2k, ..), "peak<k>" (the k layers with the highest hot_peaks) or "heads"."""
    if name == "all":
        return None
    if name == "heads":
        return HEADS[0]
    if name.startswith("peak"):
        layers = sorted(np.argsort(-peaks)[: int(name.removeprefix("peak"))].tolist())
    elif name == "mid":
        layers = range(n_layer // 4, n_layer - n_layer // 4)
    else:
        layers = range(0, n_layer, int(name.removeprefix("every")))
    mask = np.zeros((n_layer, n_head_kv), dtype=bool)
    mask[list(layers)] = True
    return mask


def padded(cap: dict, others: list[dict], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """(cold keys float16 [L, pad, width], logical positions [pad]): this prompt's cold store
    first, then the other prompts' cold keys, repeated as needed."""
    keys, logical = [cap["cold_keys"].astype(np.float16)], [cap["cold_logical"]]
    n, i = keys[0].shape[1], 0
    while n < pad and others:
        o = others[i % len(others)]
        take = min(pad - n, o["cold_keys"].shape[1])
        keys.append(o["cold_keys"][:, :take].astype(np.float16))
        logical.append(o["cold_logical"][:take] + FAR * (i + 1))
        n, i = n + take, i + 1
    return np.concatenate(keys, axis=1), np.concatenate(logical)


def _inputs(cap: dict, variant: str, n_layer: int, window: int = 32):
    """(grouped queries, hot scores, lse, layers, queries, stride) of a variant on a capture."""
    from edge_namm.engine.recall import _grouped, hot_scores

    layer_name, n_q, stride = parse(variant)
    q = _grouped(cap["queries"][:, :, -window:], cap["scales"], cap["n_head_kv"])
    hot, lse = hot_scores(q, cap["hot_keys"], cap["n_head_kv"])
    peaks = hot_peaks(cap, q, lse) if layer_name.startswith("peak") else None
    heads = layers_of(layer_name, n_layer, cap["n_head_kv"], peaks)
    return q, hot, lse, heads, n_q, stride


def select(cap: dict, cold_keys, cold_logical, variant: str, window: int = 32):
    """(whole answer hot after the swaps, best coarse rank of a cold token of the needle
    sentence; -1 when none of it is cold)."""
    from edge_namm.engine.recall import (
        choose_swaps,
        cold_scores,
        newest_queries,
        pool_tiers,
        token_scores,
    )
    from edge_namm.policies.selection import protected_mask

    g = cap["n_head_kv"]
    q, hot, lse, layers, n_q, stride = _inputs(cap, variant, cold_keys.shape[0], window)
    cold = cold_scores(q, lse, cold_keys, g, window, None, n_q, layers, stride)
    q_new, lse_new = newest_queries(q, lse, window, n_q)
    (na, ne), (va, ve) = cap["needle"], cap["answer"]
    own = np.flatnonzero((cap["cold_logical"] >= na) & (cap["cold_logical"] < ne))
    rank = -1
    own = own[own % stride == 0]  # the needle tokens the coarse pass reads
    if len(own):
        coarse = token_scores(q_new, cold_keys[:, ::stride], lse_new, g, layers)
        rank = int((coarse > coarse[own // stride].max()).sum())
    hot, cold = pool_tiers(hot, cap["hot_logical"], cold, cold_logical)
    protected = protected_mask(len(hot), cap["n_sink"], max(cap["n_recent"], window + 1))
    out_hot, in_cold = choose_swaps(hot, cold, protected, cap["max_in"])
    kept = set(np.delete(cap["hot_logical"], out_hot).tolist())
    kept |= set(cold_logical[in_cold].tolist())
    return all(p in kept for p in range(va, ve)), rank


def eval_pairs(tasks, length, n, seed, builder):
    """(task, Sample) pairs of the EVAL split, as `edge-namm eval` makes them."""
    from edge_namm.eval.runner import even_depths
    from edge_namm.tasks import Haystack, make_samples

    hay = Haystack.default()
    return [
        (task, s)
        for task in tasks
        for s in make_samples(
            task,
            n,
            length,
            seed,
            split="eval",
            haystack=hay,
            count_tokens=builder.count_tokens,
            depths=even_depths(n),
        )  # fmt: skip
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    needle_prompt_args(ap, prompts=6)
    ap.set_defaults(tasks="niah", length=8192)
    ap.add_argument("--split", choices=("train", "eval"), default="train")
    ap.add_argument("--budget", default="0.25", help="hot budget: a fraction or cells")
    ap.add_argument("--pad", default="65536", help="cold store sizes to pad to, comma-separated")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--repeats", type=int, default=3, help="timing repeats (medians)")
    ap.add_argument("--captures", type=Path, default=None, help="reuse/keep captures in this .pkl")
    ap.add_argument("--heads", type=Path, default=None, help="recall-heads file ('heads' variants)")
    ap.add_argument(
        "--per-layer", action="store_true",
        help="instead: the needle's rank in each prompt's own cold store by each layer alone",
    )  # fmt: skip
    args = ap.parse_args(argv)

    from edge_namm.eval.prompting import PromptBuilder
    from edge_namm.train.trainer import training_samples

    model = args.model or default_model()
    builder = PromptBuilder.from_model_path(model)
    tasks = args.tasks.split(",")
    if args.captures is not None and args.captures.exists():
        caps = pickle.loads(args.captures.read_bytes())
    else:
        if args.split == "train":
            pairs = training_samples(tasks, [args.length], args.prompts, args.seed, builder)
        else:
            pairs = eval_pairs(tasks, args.length, args.prompts, args.seed, builder)
        caps = capture(model, "namm", args.budget, builder, pairs, args.threads)
        if args.captures is not None:
            args.captures.write_bytes(pickle.dumps(caps))
    if args.per_layer:
        per_layer(caps)
        return
    variants = args.variants.split(",")
    if args.heads is not None:
        from edge_namm.engine.retrieval_heads import heads_mask, read_heads_file

        shape = caps[0]["cold_keys"].shape[0], caps[0]["n_head_kv"]
        HEADS.append(heads_mask(read_heads_file(args.heads)["heads"], *shape))
        print(f"heads file: {args.heads} ({int(HEADS[0].sum())} heads)")
    print(f"machine: {machine()}")
    print(f"{len(caps)} {args.split} prompts of ~{args.length} tokens ({args.tasks}), NAMM at")
    print(f"budget {args.budget}; each cold store padded with the others' cold keys\n")
    for pad in (int(p) for p in args.pad.split(",")):
        print(f"### cold store padded to {pad:,} tokens\n")
        print("| variant | whole answer hot | needle's coarse rank per prompt | coarse pass (s) |")
        print("|---|---:|---|---:|")
        stores = []
        for i, cap in enumerate(caps):
            stores.append(padded(cap, caps[:i] + caps[i + 1 :], pad))
        for variant in variants:
            rows = [select(cap, *store, variant) for cap, store in zip(caps, stores, strict=True)]
            hits = sum(ok for ok, _ in rows)
            ranks = ", ".join(str(r) for _, r in rows)
            seconds = time_coarse(caps[0], stores[0][0], variant, args.repeats)
            print(f"| {variant} | {hits} of {len(rows)} | {ranks} | {seconds:.3f} |", flush=True)
        print()


def per_layer(caps: list[dict], window: int = 32) -> None:
    """Which layers see the needle: its best cold token's rank by each layer alone (all window
    queries), per prompt, in the prompt's own cold store."""
    from edge_namm.engine.recall import token_scores

    n_layer = caps[0]["cold_keys"].shape[0]
    print("| layer | " + " | ".join(c["sample"][-12:] for c in caps) + " |")
    print("|---:|" + "---:|" * len(caps))
    ranks = np.zeros((n_layer, len(caps)), dtype=int)
    for j, cap in enumerate(caps):
        g = cap["n_head_kv"]
        q, _, lse, *_ = _inputs(cap, f"all/{window}", n_layer, window)
        na, ne = cap["needle"]
        own = np.flatnonzero((cap["cold_logical"] >= na) & (cap["cold_logical"] < ne))
        for layer in range(n_layer):
            one = np.zeros((n_layer, g), dtype=bool)
            one[layer] = True
            sc = token_scores(q, cap["cold_keys"], lse, g, one)
            ranks[layer, j] = int((sc > sc[own].max()).sum()) if len(own) else -1
    for layer in range(n_layer):
        print(f"| {layer} | " + " | ".join(map(str, ranks[layer])) + " |")


def time_coarse(cap: dict, cold_keys: np.ndarray, variant: str, repeats: int) -> float:
    """Median seconds of the engine's cold_scores on this store with this coarse pass."""
    from edge_namm.engine.recall import cold_scores

    q, _, lse, layers, n_q, stride = _inputs(cap, variant, cold_keys.shape[0])
    return median_time(
        lambda: cold_scores(q, lse, cold_keys, cap["n_head_kv"], 32, None, n_q, layers, stride),
        repeats,
        warmup=0,
    )


if __name__ == "__main__":
    main()
