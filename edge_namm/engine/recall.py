"""Query-aware recall: rank hot and cold tokens by the attention a new prompt's end gives them.

Without the question, attention statistics cannot tell a needle from its filler; once the
question is decoded, its queries point at what matters (SnapKV with the question visible, Quest,
ArkVale). After a new prompt is prefilled, the engine has the post-RoPE queries of its last
`window` tokens in every managed layer and scores every token, hot and cold alike, by the
largest log-attention any of those queries gives it:

    z[l, h, w, t] = scale_l * q[l, h, w] . k[l, t] - lse_hot[l, h, w]     (GQA: h's KV head)
    score[t]      = max over (l, h, w) of z[l, h, w, t]

`lse_hot` is each query's log-sum-exp over the hot cache, so z is the log of the attention the
token would get next to the hot tokens; the max keeps the sharp retrieval heads that single
out a needle (KVzip scores by the max too). No exponential over the cold store is needed.

A large cold store is first narrowed by page digests (Quest): per page of PAGE cold tokens the
element-wise min and max key bound q . k from above by q+ . max + q- . min, and only the best
pages are scored exactly. Cold scores are max-pooled over conversation neighbours (4 before a
token, 12 after it), so a fact comes back with the words around it. The hot cache keeps its
size: the best cold tokens (at most `recall_max`) swap in for the worst unprotected hot ones,
then the window is decoded again so the answer sees them.
"""

from __future__ import annotations

import numpy as np

PAGE = 16  # cold tokens per digest page
EXACT_LIMIT = 4096  # cold stores up to this size are scored exactly, token by token
TOP_PAGES = 64  # pages scored exactly when the digests narrow the search
# a recalled token brings the cold tokens this close before and after it: a ~16-token fact,
# reaching further forward because a question points at a fact's key, and its value follows
# ("the number for tulip is 2927248"; docs/experiments/2026-11-30-recall-rules.md)
POOL_BEFORE = 4
POOL_AFTER = 12


def _grouped(queries: np.ndarray, scales: np.ndarray, n_head_kv: int) -> np.ndarray:
    """Queries [L, H, W, d] scaled and grouped by KV head: [L, n_head_kv, group * W, d]."""
    n_layer, n_head, window, d = queries.shape
    group = n_head // n_head_kv
    q = queries * scales.astype(np.float32)[:, None, None, None]
    return q.reshape(n_layer, n_head_kv, group * window, d)


def _blocks(keys: np.ndarray, n_head_kv: int):
    """(layer, KV head, keys [N, d] float32) for keys [L, N, n_head_kv * d]."""
    n_layer, n, width = keys.shape
    d = width // n_head_kv
    for layer in range(n_layer):
        k_layer = keys[layer].astype(np.float32, copy=False)
        for g in range(n_head_kv):
            yield layer, g, k_layer[:, g * d : (g + 1) * d]


def hot_normaliser(q: np.ndarray, hot_keys: np.ndarray, n_head_kv: int) -> np.ndarray:
    """Each query's log-sum-exp over the hot tokens, [L, n_head_kv, group * W]."""
    out = np.empty(q.shape[:3], dtype=np.float32)
    for layer, g, k in _blocks(hot_keys, n_head_kv):
        s = k @ q[layer, g].T
        peak = s.max(axis=0)
        out[layer, g] = peak + np.log(np.exp(s - peak).sum(axis=0))
    return out


def token_scores(q: np.ndarray, keys: np.ndarray, lse: np.ndarray, n_head_kv: int) -> np.ndarray:
    """score[t] = max over layers, heads and window queries of the log-attention, [N]. One
    (layer, KV head) block at a time, so the temporaries stay small."""
    best = np.full(keys.shape[1], -np.inf, dtype=np.float32)
    for layer, g, k in _blocks(keys, n_head_kv):
        z = k @ q[layer, g].T
        z -= lse[layer, g]
        np.maximum(best, z.max(axis=1), out=best)
    return best


def page_bounds(
    q: np.ndarray, page_min: np.ndarray, page_max: np.ndarray, lse: np.ndarray, n_head_kv: int
) -> np.ndarray:
    """Upper bound of each page's token scores from its min/max keys [L, P, n_head_kv * d]:
    q . k <= q+ . max + q- . min for every k of the page."""
    best = np.full(page_min.shape[1], -np.inf, dtype=np.float32)
    maxes = _blocks(page_max, n_head_kv)
    for (layer, g, k_min), (_, _, k_max) in zip(_blocks(page_min, n_head_kv), maxes, strict=True):
        qg = q[layer, g]
        z = k_max @ np.maximum(qg, 0).T + k_min @ np.minimum(qg, 0).T
        z -= lse[layer, g]
        np.maximum(best, z.max(axis=1), out=best)
    return best


def recall_scores(
    queries: np.ndarray,
    scales: np.ndarray,
    hot_keys: np.ndarray,
    cold_keys: np.ndarray,
    n_head_kv: int,
    digests: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(hot scores [n_hot], cold scores [n_cold]) from queries [L, H, W, d], softmax scales [L],
    keys [L, n, n_head_kv * d] (cold keys may be float16) and optional page digests (min, max)
    of the cold keys; cold tokens outside the best pages score -inf."""
    q = _grouped(queries, scales, n_head_kv)
    lse = hot_normaliser(q, hot_keys, n_head_kv)
    hot = token_scores(q, hot_keys, lse, n_head_kv)
    n_cold = cold_keys.shape[1]
    if digests is None or n_cold <= EXACT_LIMIT:
        return hot, token_scores(q, cold_keys, lse, n_head_kv)
    bounds = page_bounds(q, digests[0], digests[1], lse, n_head_kv)
    best = np.sort(np.argsort(-bounds, kind="stable")[:TOP_PAGES])
    index = (best[:, None] * PAGE + np.arange(PAGE)).ravel()
    index = index[index < n_cold]
    cold = np.full(n_cold, -np.inf, dtype=np.float32)
    cold[index] = token_scores(q, cold_keys[:, index], lse, n_head_kv)
    return hot, cold


def pool_neighbours(
    scores: np.ndarray, logical: np.ndarray, before: int = POOL_BEFORE, after: int = POOL_AFTER
) -> np.ndarray:
    """Each cold token takes the best score of the cold tokens from `before` conversation
    positions after it back to `after` positions before it (SnapKV pools likewise): a recalled
    token brings `before` tokens before it and `after` tokens after it, so a fact comes back as
    a phrase, not as the one word a query pointed at."""
    order = np.argsort(logical, kind="stable")
    lg, sc = logical[order], scores[order]
    pooled = sc.copy()
    for off in range(-after, before + 1):
        if off == 0:
            continue
        idx = np.searchsorted(lg, lg + off)
        ok = idx < len(lg)
        ok[ok] = lg[idx[ok]] == lg[ok] + off
        np.maximum.at(pooled, np.flatnonzero(ok), sc[idx[ok]])
    out = np.empty_like(pooled)
    out[order] = pooled
    return out


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
