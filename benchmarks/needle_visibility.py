"""Can a NAMM see a needle? Measures how the attention a needle *receives* compares with its text.

A NAMM (and H2O, TOVA, SnapKV...) decides from the attention each cached token receives from
later tokens. This script runs full-cache passes over passkey / niah prompts of the train split,
records the NAMM features at every memory update (``record_attention=True``), and compares the
needle's tokens with the filler tokens around them (+-150 tokens, so age is matched):

- ``auc_dc``: ROC AUC of the needle tokens against their neighbours on the DC bin of the
  attention spectrogram (the EMA attention mass), averaged over all (layer, KV head) rows
  (what a mean-aggregated NAMM sees). 0.5 = indistinguishable, 1 = the needle always higher.
- ``rows_hi``: how many of the (layer, KV head) rows have an AUC above 0.8 on their own.
- ``imp_lift``: importance mass on the needle (attention the question and answer pay to it)
  divided by its share of the context: how much the answer needs it.

Only updates at which the needle is at least 100 tokens old are listed (before that, every
policy keeps it as recent). Prints a Markdown table and a summary line.

    python benchmarks/needle_visibility.py                     # 4 + 4 prompts of 2,048 tokens
    python benchmarks/needle_visibility.py --mode both         # question also before the context
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import default_model, machine, needle_prompt_args  # noqa: E402

WINDOW = 150
MIN_AGE = 100


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    needle_prompt_args(ap, prompts=4)
    ap.add_argument("--update-interval", type=int, default=512)
    ap.add_argument("--mode", default="after", choices=("after", "both"))
    ap.add_argument(
        "--repeat", action="store_true", help="fold a context-repeat pass into the features"
    )
    return ap.parse_args(argv)


def auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    ranks = np.concatenate([pos, neg]).argsort(kind="stable").argsort() + 1.0
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def needle_span(builder, sample, mode: str) -> tuple[int, int]:
    """Token range [start, end) of the (first) needle sentence in the prompt."""
    text, add_bos = builder.prompt_text(sample, mode)
    needle = sample.meta["needles"][0]
    at = text.find(needle)

    def n_tokens(t: str) -> int:
        return len(builder.tokenize(t, add_bos=add_bos, special=True))

    return n_tokens(text[:at]), n_tokens(text[: at + len(needle)])


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    from edge_namm.eval.prompting import PromptBuilder
    from edge_namm.features import FeatureConfig
    from edge_namm.train.record import norm_stats_of, prepare_z, record_prompts
    from edge_namm.train.trainer import training_samples

    model = args.model or default_model()
    builder = PromptBuilder.from_model_path(model)
    pairs = training_samples(args.tasks.split(","), [args.length], args.prompts, args.seed, builder)
    prepared = [(t, builder.prepare(s, args.mode)) for t, s in pairs]
    kwargs = {"n_threads": args.threads} if args.threads else {}
    recs = record_prompts(
        model,
        builder,
        prepared,
        update_interval=args.update_interval,
        chunk=128,
        llama_kwargs=kwargs,
        mode=args.mode,
        feature_config=FeatureConfig(repeat=args.repeat),
    )
    stats = norm_stats_of(recs)
    prepare_z(recs, stats.mean, stats.std)

    print(
        f"machine: {machine()}; mode {args.mode}; repeat pass {'on' if args.repeat else 'off'}; "
        f"{len(recs)} prompts of ~{args.length} tokens"
    )
    print()
    print(
        "| prompt | needle tokens | age at update | auc_dc (mean of rows) | auc_dc (max of rows) "
        "| rows_hi | imp_lift |"
    )
    print("|---|---|---|---|---|---|---|")
    aucs, aucs_max = [], []
    for (_, sample), rec in zip(pairs, recs, strict=True):
        a, e = needle_span(builder, sample, args.mode)
        lift = rec.importance[a:e].sum() / ((e - a) / rec.n_context)
        for t, z in zip(rec.update_times, rec.z, strict=True):
            if t - e < MIN_AGE:
                continue
            neigh = np.r_[max(8, a - WINDOW) : a, e : min(t, e + WINDOW)]
            dc = z[..., 0]
            mean_auc = auc(dc.mean(axis=0)[a:e], dc.mean(axis=0)[neigh])
            max_auc = auc(dc.max(axis=0)[a:e], dc.max(axis=0)[neigh])
            rows_hi = sum(auc(row[a:e], row[neigh]) > 0.8 for row in dc)
            aucs.append(mean_auc)
            aucs_max.append(max_auc)
            print(
                f"| {sample.sample_id} | {a}-{e} | {t - e} | {mean_auc:.2f} | {max_auc:.2f} | "
                f"{rows_hi}/{len(dc)} | {lift:.1f}x |"
            )
    print()
    if aucs:
        print(
            f"median auc_dc {np.median(aucs):.2f} (max over rows: {np.median(aucs_max):.2f}) over "
            f"{len(aucs)} (prompt, update) pairs; share above 0.8: "
            f"{np.mean(np.array(aucs) > 0.8):.2f}"
        )


if __name__ == "__main__":
    main()
