"""Which signal can tell a needle from its filler? Every policy's own score, compared.

For each passkey / niah prompt of the train split, one full-cache pass over the context (up to
the question) with attention recorded and KVzip's repeat pass on, then every query-agnostic
policy scores the cached tokens from that same view. Each score is compared between the
needle's tokens and the filler within +-150 tokens (age matched) as a ROC AUC: 0.5 = blind,
1 = the needle always ranks above its neighbours. The last column is query-aware: the
attention the question and answer pay to each token (what recall ranks with).

A second table asks what a 25% budget needs: the share of needle tokens whose score ranks in
the top quarter of the whole context, per signal (the policies' scores and the NAMM's three
key-geometry inputs) and for the best linear combination of the query-agnostic ones (logistic
regression on per-prompt ranks, fitted on the other prompts and scored on the held-out one): an
upper bound on what a scorer reading these inputs could keep.

    python benchmarks/needle_signals.py [--prompts 3] [--length 2048]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
from scipy.optimize import minimize
from scipy.stats import rankdata

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import default_model, machine, needle_prompt_args  # noqa: E402
from needle_visibility import WINDOW, auc, needle_span  # noqa: E402

POLICIES = ("h2o", "tova", "snapkv", "keydiff", "l2", "kvzip", "namm")
# the NAMM's key-geometry inputs (FeatureConfig(geometry=True)), each z-scored per (layer, head)
# row as the scorer reads it, then averaged over rows
GEOMETRY = ("key norm (z)", "distinctiveness (z)", "value norm (z)")
SIGNALS = (*POLICIES, *GEOMETRY)
QUERY = "question (query-aware)"
SINKS = 4  # every policy keeps the first tokens; they stay out of the ranking


def top_quarter(score: np.ndarray, a: int, e: int) -> float:
    """Share of the needle's tokens [a, e) ranked in the top 25% of the context (sinks aside)."""
    ranks = rankdata(score[SINKS:]) / (len(score) - SINKS)
    return float(np.mean(ranks[a - SINKS : e - SINKS] > 0.75))


def fit_combination(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Class-balanced, L2-regularised logistic regression; returns [weights..., bias]."""
    w_pos = 0.5 / max(y.mean(), 1e-9)
    w_neg = 0.5 / max(1 - y.mean(), 1e-9)
    weight = np.where(y > 0, w_pos, w_neg) / len(y)
    xb = np.c_[x, np.ones(len(x))]

    def loss(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = xb @ w
        p = 1 / (1 + np.exp(-z))
        nll = -(weight * (y * np.log(p + 1e-12) + (1 - y) * np.log(1 - p + 1e-12))).sum()
        grad = xb.T @ (weight * (p - y))
        return nll + 1e-3 * (w[:-1] ** 2).sum(), grad + np.r_[2e-3 * w[:-1], 0.0]

    return minimize(loss, np.zeros(xb.shape[1]), jac=True, method="L-BFGS-B").x


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    needle_prompt_args(ap, prompts=3)
    args = ap.parse_args(argv)

    from edge_namm import NammLlama
    from edge_namm.eval.budgets import full_cache_cells
    from edge_namm.eval.decoding import answer_tokens
    from edge_namm.eval.prompting import PromptBuilder
    from edge_namm.features import key_geometry, standardise_rows
    from edge_namm.policies import make_policy
    from edge_namm.train.record import question_start
    from edge_namm.train.trainer import training_samples

    model = args.model or default_model()
    builder = PromptBuilder.from_model_path(model)
    pairs = training_samples(args.tasks.split(","), [args.length], args.prompts, args.seed, builder)
    scorers = {name: make_policy(name) for name in POLICIES if name != "kvzip"}
    cells = full_cache_cells(args.length + 512)
    llm = NammLlama(
        model, policy="kvzip", budget=cells, record_attention=True, n_threads=args.threads
    )
    rows = []
    try:
        for _, sample in pairs:
            prep = builder.prepare(sample, "after")
            n_ctx = question_start(builder, sample, "after")
            a, e = needle_span(builder, sample, "after")
            llm.reset()
            llm.eval(prep.prompt[:n_ctx])
            view = llm.memory.view()
            assert view.positions.tolist() == list(range(n_ctx)), "nothing may be evicted"
            scores = {"kvzip": llm.policy.score(view)}
            for name, pol in scorers.items():
                scores[name] = np.asarray(pol.score(view), dtype=np.float64)
            geo = key_geometry(view.keys(), view.values(), view.n_head_kv)
            for i, name in enumerate(GEOMETRY):
                scores[name] = standardise_rows(geo)[..., i].mean(axis=0).astype(np.float64)
            before = view.per_head(llm.memory.features.attention_sum).sum(axis=(0, 1))
            llm.repeat_enabled = False
            llm.eval(prep.prompt[n_ctx:] + answer_tokens(builder, sample))
            llm.repeat_enabled = True
            after = view.per_head(llm.memory.features.attention_sum).sum(axis=(0, 1))
            scores[QUERY] = after - before
            neigh = np.r_[max(8, a - WINDOW) : a, e : min(n_ctx, e + WINDOW)]
            rows.append({k: auc(v[a:e], v[neigh]) for k, v in scores.items()})
            rows[-1]["prompt"] = sample.sample_id
            rows[-1]["top"] = {k: top_quarter(v, a, e) for k, v in scores.items()}
            ranked = np.stack([rankdata(scores[k][SINKS:]) / (n_ctx - SINKS) for k in SIGNALS])
            label = np.zeros(n_ctx - SINKS)
            label[a - SINKS : e - SINKS] = 1.0
            rows[-1]["xy"] = (ranked.T, label, a, e)
    finally:
        llm.close()

    print(f"machine: {machine()}; {len(rows)} prompts of ~{args.length} tokens; needle AUC")
    print()
    table(rows, [*SIGNALS, QUERY], lambda r: r, "median", np.median)

    # leave one prompt out: the combination is fitted on the other prompts
    for i, r in enumerate(rows):
        train = [q["xy"] for j, q in enumerate(rows) if j != i]
        xs, ys = (np.concatenate([t[k] for t in train]) for k in (0, 1))
        w = fit_combination(xs, ys)
        x, _, a, e = r["xy"]
        combined = np.r_[np.full(SINKS, -np.inf), x @ w[:-1]]
        r["top"]["combination"] = top_quarter(combined, a, e)
    print()
    print("Share of needle tokens in the top 25% of the context (what a 25% budget keeps):")
    print()
    table(rows, [*SIGNALS, "combination", QUERY], lambda r: r["top"], "mean", np.mean)


def table(rows: list[dict], cols: list[str], values, summary: str, reduce) -> None:
    """A Markdown table, a row per prompt and a last row reducing each column."""
    print("| prompt | " + " | ".join(cols) + " |")
    print("|---|" + "---:|" * len(cols))
    for r in rows:
        print(f"| {r['prompt']} | " + " | ".join(f"{values(r)[c]:.2f}" for c in cols) + " |")
    last = [f"{reduce([values(r)[c] for r in rows]):.2f}" for c in cols]
    print(f"| **{summary}** | " + " | ".join(last) + " |")


if __name__ == "__main__":
    main()
