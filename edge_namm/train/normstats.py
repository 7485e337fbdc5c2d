"""Estimate the frozen per-bin normalisation of NAMM features from full-cache runs.

The paper estimates 17 means and 17 standard deviations once, from a run where nothing is
evicted, and freezes them into the scorer; this does the same on the user's model and texts.
"""

from __future__ import annotations

from collections.abc import Iterable

from edge_namm.features import NormStats


def estimate_norm_stats(
    model_path: str,
    texts: Iterable[str],
    *,
    max_tokens: int = 2048,
    update_interval: int = 512,
    **llama_kwargs,
) -> NormStats:
    """Run each text under a full cache and pool the spectrogram of every cached token at
    every update (all layers and heads)."""
    from edge_namm.engine import NammLlama

    stats = NormStats()
    llm = NammLlama(
        model_path,
        policy="full",
        budget=max_tokens + update_interval,
        update_interval=update_interval,
        chunk=min(128, update_interval),
        record_attention=True,
        **llama_kwargs,
    )
    llm.memory.on_update.append(
        lambda view, _evicted: stats.update(view.per_head(view.features.spectrogram))
    )
    try:
        for text in texts:
            llm.reset()
            llm.eval(llm.tokenize(text.encode())[:max_tokens])
    finally:
        llm.close()
    return stats
