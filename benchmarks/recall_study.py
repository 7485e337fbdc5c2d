"""Which recall rule brings a needle back? Scoring rules compared on the same captured inputs.

For each needle prompt of the train split (never the eval split that results are reported on),
the prompt is prefilled under a policy with the cold tier on, and at the moment recall would
run, its inputs are kept: the window's post-RoPE queries, the hot and cold keys and their
conversation positions. Every rule below then picks its swaps from those same inputs (at most
`budget / 4` tokens come back, as the engine's default) and is scored by what the hot cache
holds afterwards: the share of the needle sentence's tokens and of its answer's tokens, and
whether the whole answer is there.

Rules (a rule = how a token's score is reduced over layers, heads and window queries):
- max: the largest log-attention any query gives the token (the shipped rule).
- mass: the attention the token would receive, summed over every (layer, head, query).
- head-mass: per (layer, KV head), attention summed over the group's queries; the largest.
- max-coarse: "max" as the engine runs it on a large cold store: a coarse pass with the
  window's newest 16 queries picks candidates, which are then scored exactly.
- max-paged: "max" behind Quest-style page digests (min/max keys per page of 16 cold tokens
  bound the score; only the 64 best pages are scored exactly), as the engine did before.
Each rule is tried with several window lengths and pooling reaches (how many tokens before
and after a well-scored token come back with it).

    python benchmarks/recall_study.py [--tasks niah,passkey] [--prompts 6] [--length 2048]
"""

from __future__ import annotations

import argparse
import itertools
import pickle
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import default_model, machine, needle_prompt_args  # noqa: E402
from needle_visibility import needle_span  # noqa: E402

WINDOWS = (16, 32)
# (before, after): how far a recalled token's pooling reaches before and after it
RADII = ((0, 0), (8, 8), (16, 16), (4, 12), (2, 14), (4, 20))


def block_reduce(q, keys, lse, n_head_kv, rule: str) -> np.ndarray:
    """A token score per rule from grouped queries q [L, G, group*W, d] and keys [L, N, G*d];
    "max" is the engine's own scoring."""
    from edge_namm.engine.recall import _blocks, token_scores

    if rule in ("max", "max-paged", "max-coarse"):
        return token_scores(q, keys, lse, n_head_kv)
    out = np.full(keys.shape[1], -np.inf) if rule == "head-mass" else np.zeros(keys.shape[1])
    for layer, g, k in _blocks(keys, n_head_kv):
        z = k @ q[layer, g].T - lse[layer, g]
        if rule == "mass":
            out += np.exp(z).sum(axis=1)
        else:
            out = np.maximum(out, np.exp(z).sum(axis=1))
    return out


def page_bounds(q, keys, lse, n_head_kv, page: int) -> np.ndarray:
    """Each page of `page` cold tokens (store order, the last one padded with its last key):
    the upper bound q+ . max + q- . min of its tokens' scores, from its min and max keys."""
    from edge_namm.engine.recall import _blocks

    n = keys.shape[1]
    n_pages = -(-n // page)
    padded = np.concatenate([keys, np.repeat(keys[:, -1:], n_pages * page - n, axis=1)], axis=1)
    pages = padded.reshape(keys.shape[0], n_pages, page, -1).astype(np.float32)
    bounds = np.full(n_pages, -np.inf, dtype=np.float32)
    lows, highs = _blocks(pages.min(axis=2), n_head_kv), _blocks(pages.max(axis=2), n_head_kv)
    for (layer, g, k_min), (_, _, k_max) in zip(lows, highs, strict=True):
        qg = q[layer, g]
        z = k_max @ np.maximum(qg, 0).T + k_min @ np.minimum(qg, 0).T - lse[layer, g]
        np.maximum(bounds, z.max(axis=1), out=bounds)
    return bounds


def paged_scores(q, keys, lse, n_head_kv, page=16, top_pages=64, exact_limit=4096) -> np.ndarray:
    """Cold scores through Quest-style page digests (tried, then dropped from the engine):
    above `exact_limit` tokens, each page of `page` cold tokens (store order) is bounded by
    q . k <= q+ . max + q- . min, and only the `top_pages` best pages are scored exactly."""
    from edge_namm.engine.recall import token_scores

    n = keys.shape[1]
    if n <= exact_limit:
        return token_scores(q, keys, lse, n_head_kv)
    bounds = page_bounds(q, keys, lse, n_head_kv, page)
    best = np.sort(np.argsort(-bounds, kind="stable")[:top_pages])
    index = (best[:, None] * page + np.arange(page)).ravel()
    index = index[index < n]
    out = np.full(n, -np.inf, dtype=np.float32)
    out[index] = token_scores(q, keys[:, index], lse, n_head_kv)
    return out


def diagnose(cap: dict, window: int = 32, page: int = 16) -> str:
    """Where the cold token the queries attend to most ranks among cold pages under the
    digests' bound, and among cold tokens when only every 3rd or 5th layer is read."""
    from edge_namm.engine.recall import _grouped, hot_scores, newest_queries, token_scores

    g = cap["n_head_kv"]
    q = _grouped(cap["queries"][:, :, -window:], cap["scales"], g)
    _, lse = hot_scores(q, cap["hot_keys"], g)
    keys = cap["cold_keys"]
    n_layer, n = keys.shape[:2]
    exact = token_scores(q, keys, lse, g)
    top = int(np.argmax(exact))
    bounds = page_bounds(q, keys, lse, g, page)
    n_pages = len(bounds)
    page_rank = int((bounds > bounds[top // page]).sum())
    ranks = []
    for stride in (3, 5):
        every = np.zeros((n_layer, g), dtype=bool)
        every[::stride] = True
        sub = token_scores(q, keys, lse, g, every)
        ranks.append(int((sub > sub[top]).sum()))
    for newest in (16, 8):
        q_new, lse_new = newest_queries(q, lse, window, newest)
        sub = token_scores(q_new, keys, lse_new, g)
        ranks.append(int((sub > sub[top]).sum()))
    return (
        f"| {cap['sample']} | {n} | {exact[top]:.2f} | {page_rank} of {n_pages} | "
        f"{' | '.join(map(str, ranks))} |"
    )


def coverage(
    cap: dict,
    rule: str,
    window: int,
    radius: tuple[int, int],
    max_in: int | None = None,
    pooling: str = "cold",
) -> tuple[float, float, bool]:
    """(needle share, answer share, whole answer) hot after this rule's swaps (at most
    `max_in` tokens come back; default: the engine's budget / 4). `pooling`: "cold" pools cold
    scores among cold tokens only, "joint" pools hot and cold tokens together."""
    from edge_namm.engine.recall import (
        _grouped,
        choose_swaps,
        cold_scores,
        hot_normaliser,
        pool_neighbours,
        pool_tiers,
    )
    from edge_namm.policies.selection import protected_mask

    q = _grouped(cap["queries"][:, :, -window:], cap["scales"], cap["n_head_kv"])
    lse = hot_normaliser(q, cap["hot_keys"], cap["n_head_kv"])
    hot = block_reduce(q, cap["hot_keys"], lse, cap["n_head_kv"], rule)
    if rule == "max-paged":
        cold = paged_scores(q, cap["cold_keys"], lse, cap["n_head_kv"])
    elif rule == "max-coarse":
        cold = cold_scores(q, lse, cap["cold_keys"], cap["n_head_kv"], window)
    else:
        cold = block_reduce(q, cap["cold_keys"], lse, cap["n_head_kv"], rule)
    if pooling == "joint":
        hot, cold = pool_tiers(hot, cap["hot_logical"], cold, cap["cold_logical"], *radius)
    else:
        cold = pool_neighbours(cold, cap["cold_logical"], *radius)
    protected = protected_mask(len(hot), cap["n_sink"], max(cap["n_recent"], window + 1))
    out_hot, in_cold = choose_swaps(hot, cold, protected, max_in or cap["max_in"])
    kept = set(np.delete(cap["hot_logical"], out_hot).tolist())
    kept |= set(cap["cold_logical"][in_cold].tolist())
    (a, e), (va, ve) = cap["needle"], cap["answer"]
    needle = np.mean([p in kept for p in range(a, e)])
    answer = [p in kept for p in range(va, ve)]
    return float(needle), float(np.mean(answer)), bool(all(answer))


def answer_span(builder, sample, mode: str) -> tuple[int, int]:
    """Token range of the answer's first occurrence inside the needle sentence."""
    text, add_bos = builder.prompt_text(sample, mode)
    needle = sample.meta["needles"][0]
    at = text.find(needle) + needle.find(sample.answers[0])

    def n_tokens(t: str) -> int:
        return len(builder.tokenize(t, add_bos=add_bos, special=True))

    return n_tokens(text[:at]), n_tokens(text[: at + len(sample.answers[0])])


def capture(model: str, policy: str, budget: str, builder, pairs, threads: int) -> list[dict]:
    """Prefill each prompt with recall on and keep recall's inputs instead of recalling."""
    from edge_namm import NammLlama
    from edge_namm.eval.budgets import parse_budget

    caps = []
    for _, sample in pairs:
        prep = builder.prepare(sample, "after")
        cells = parse_budget(budget).resolve(prep.n_input)
        llm = NammLlama(
            model, policy=policy, recall=True, recall_window=max(WINDOWS), budget=cells,
            n_threads=threads, n_threads_batch=threads,
        )  # fmt: skip
        mem = llm.memory
        kept: dict = {}

        def grab(queries, scales, n_protect_recent, max_in=None, mem=mem, kept=kept):
            view = mem.view()
            kept.update(
                queries=queries.copy(),
                scales=np.asarray(scales).copy(),
                hot_keys=mem.read_keys(view.cells).astype(np.float32),
                hot_logical=mem._logical[view.cells].copy(),
                cold_keys=mem.cold.keys().astype(np.float32),
                cold_logical=mem.cold.logical.copy(),
            )
            return 0

        mem.recall = grab
        try:
            llm.eval(prep.prompt)
        finally:
            llm.close()
        if not kept:
            continue
        kept.update(
            n_head_kv=mem.n_head_kv,
            n_sink=llm.policy.n_sink,
            n_recent=llm.policy.n_recent,
            max_in=max(16, cells // 4),
            cells=cells,
            needle=needle_span(builder, sample, "after"),
            answer=answer_span(builder, sample, "after"),
            sample=sample.sample_id,
        )
        caps.append(kept)
        print(f"captured {sample.sample_id}: {len(kept['cold_logical'])} cold", flush=True)
    return caps


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    needle_prompt_args(ap, prompts=6)
    ap.add_argument("--policy", default="namm")
    ap.add_argument("--budget", default="0.25", help="hot budget: a fraction or cells")
    ap.add_argument("--rules", default="max,mass,head-mass")
    ap.add_argument(
        "--pooling", default="cold",
        help="cold: pool cold scores among cold tokens only; joint: hot and cold together",
    )  # fmt: skip
    ap.add_argument(
        "--recall-max", default="0.25",
        help="caps on the tokens one recall brings back, as shares of the budget (the engine's "
        "default: 0.25)",
    )  # fmt: skip
    ap.add_argument(
        "--captures", type=Path, default=None,
        help="keep the captured inputs in this .pkl (reused when it exists: rules change, "
        "prompts are not prefilled again)",
    )  # fmt: skip
    args = ap.parse_args(argv)

    from edge_namm.eval.prompting import PromptBuilder
    from edge_namm.train.trainer import training_samples

    model = args.model or default_model()
    builder = PromptBuilder.from_model_path(model)
    pairs = training_samples(args.tasks.split(","), [args.length], args.prompts, args.seed, builder)
    if args.captures is not None and args.captures.exists():
        caps = pickle.loads(args.captures.read_bytes())
    else:
        caps = capture(model, args.policy, args.budget, builder, pairs, args.threads)
        if args.captures is not None:
            args.captures.write_bytes(pickle.dumps(caps))
    print(f"machine: {machine()}; {len(caps)} prompts of ~{args.length} tokens; {args.policy}")
    print(f"budget {args.budget}")
    print("\nThe cold token the window attends to most: its rank (0 = first) under page digests")
    print("and under coarse passes: every 3rd or 5th layer, or the window's newest 16 or 8")
    print("queries only.\n")
    print(
        "| prompt | cold tokens | its score | its page's bound rank | layers 0,3,.. | 0,5,.. | "
        "newest 16 | newest 8 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for cap in caps:
        print(diagnose(cap), flush=True)
    print()
    print(
        "| rule | pooled among | recall_max | window | pooling before, after | "
        "needle tokens hot | answer tokens hot | whole answer hot |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    shares = [float(x) for x in args.recall_max.split(",")]
    grid = itertools.product(args.rules.split(","), args.pooling.split(","), shares, WINDOWS, RADII)
    for rule, pooling, share, window, radius in grid:
        res = []
        for c in caps:
            cap_in = max(16, int(share * c.get("cells", 4 * c["max_in"])))
            res.append(coverage(c, rule, window, radius, cap_in, pooling))
        res = np.array(res)
        n, a, w = res.mean(axis=0)
        reach = f"{radius[0]}, {radius[1]}"
        print(
            f"| {rule} | {pooling} | budget x {share:g} | {window} | {reach} | "
            f"{n:.2f} | {a:.2f} | {w:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
