"""Query-aware recall: rank hot and cold tokens by the attention a new prompt's end gives them.

Without the question, attention statistics cannot tell a needle from its filler; once the
question is decoded, its queries point at what matters (SnapKV with the question visible, Quest,
ArkVale). After a new prompt is prefilled, the engine captures the post-RoPE queries of its last
`window` tokens in every managed layer and scores every token, hot and cold together:

    a[l, h, w, t] = softmax_t(scale_l * q[l, h, w] . k[l, t])      (GQA: k of h's KV head)
    score[t]      = max over (l, h) of mean over w of a[l, h, w, t]

The max over heads keeps the sharp retrieval heads that single out a needle; the mean over the
window smooths single-query noise. The hot cache keeps its size: the best cold tokens swap in
for the worst unprotected hot ones, and the window is decoded again so the answer sees them.
"""

from __future__ import annotations

import numpy as np

# rows of candidate keys scored per matrix product: bounds the temporary [rows, group * window]
BLOCK = 16384


def recall_scores(
    queries: np.ndarray, scales: np.ndarray, keys: np.ndarray, n_head_kv: int
) -> np.ndarray:
    """Score of each candidate token [N] from queries [L, H, W, d], softmax scales [L] and keys
    [L, N, n_head_kv * d] (the keys the cache attends with, float32)."""
    n_layer, n_head, window, head_dim = queries.shape
    n = keys.shape[1]
    if n == 0 or window == 0:
        return np.zeros(n, dtype=np.float32)
    group = n_head // n_head_kv
    best = np.zeros(n, dtype=np.float32)
    for layer in range(n_layer):
        k_layer = keys[layer].reshape(n, n_head_kv, head_dim)
        for g in range(n_head_kv):
            q = queries[layer, g * group : (g + 1) * group].reshape(group * window, head_dim)
            q = q * np.float32(scales[layer])
            logits = np.empty((n, group * window), dtype=np.float32)
            for start in range(0, n, BLOCK):
                np.matmul(k_layer[start : start + BLOCK, g], q.T, out=logits[start : start + BLOCK])
            logits -= logits.max(axis=0, keepdims=True)
            np.exp(logits, out=logits)
            logits /= logits.sum(axis=0, keepdims=True)
            per_head = logits.reshape(n, group, window).mean(axis=2)
            np.maximum(best, per_head.max(axis=1), out=best)
    return best


def choose_swaps(
    hot_scores: np.ndarray,
    cold_scores: np.ndarray,
    protected: np.ndarray,
    max_in: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(hot indices to evict, cold indices to recall), equally many: every recalled cold token
    scores above every hot token it replaces, and protected hot tokens never leave."""
    candidates = np.flatnonzero(~protected)
    hot_order = candidates[np.argsort(hot_scores[candidates], kind="stable")]  # worst first
    cold_order = np.argsort(-cold_scores, kind="stable")  # best first
    n = min(len(hot_order), len(cold_order), len(cold_order) if max_in is None else max_in)
    if n == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    gain = cold_scores[cold_order[:n]] > hot_scores[hot_order[:n]]
    n_swap = int(np.argmin(gain)) if not gain.all() else n
    return hot_order[:n_swap], cold_order[:n_swap]
