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

A large cold store is first narrowed by a coarse pass with the window's last COARSE_QUERIES
queries only, every layer and head, over every COARSE_STRIDE-th cold token (a fact is a phrase
the question's queries hit in several places, so reading half its tokens still finds it); the
best of those, with the tokens stored after them, make the CANDIDATES that are scored exactly.
It reads only the model's retrieval heads when a calibration ships for the model
(engine/retrieval_heads.py): a fixed subset of layers loses needles whenever it misses the
model's few retrieval layers (docs/experiments/2026-11-30-coarse-stride.md), a calibrated set
of (layer, KV head) pairs does not (docs/experiments/2026-12-01-retrieval-heads.md).
(Quest-style page digests, per-page min/max keys, were tried and dropped: on SmolLM2 at 8k
their bound ranked the needle's page anywhere from 2nd to 260th of 384 pages, while the last 16
queries ranked the needle's best token in the top 9; docs/experiments/2026-11-30-recall-8k.md.)

Scores are max-pooled over conversation neighbours (4 before a token, 12 after it), hot and
cold tokens together, so a fact comes back with the words around it, also when its key stayed
hot and only its value went cold. The hot cache keeps its size: the best cold tokens
(at most `recall_max`) swap in for the worst unprotected hot ones, then the window is decoded
again so the answer sees them.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from numba import njit

COARSE_QUERIES = 16  # window queries (the newest) the coarse pass over a large cold store uses
CANDIDATES = 2048  # cold tokens the coarse pass hands on to exact scoring
# the coarse pass reads every COARSE_STRIDE-th cold token (a power of two): half the cost, and
# held-out needles still ranked in the top 1% at 64k cold tokens
COARSE_STRIDE = 2
TILE = 2048  # cold tokens scored at once: the [queries x TILE] logits stay in cache
RELEASE_EVERY = 4 * TILE  # cold tokens the coarse pass reads between hand-backs of mapped pages
# a recalled token brings the cold tokens this close before and after it: a ~16-token fact,
# reaching further forward because a question points at a fact's key, and its value follows
# ("the number for tulip is 2927248"; docs/experiments/2026-11-30-recall-rules.md)
POOL_BEFORE = 4
POOL_AFTER = 12


# float16 -> float32 by table: numpy's own conversion was half of a large cold store's scoring
# time; a lookup in this 256 KiB table (it stays in L2) is several times faster and exact
# (benchmarks/bench_cold_scoring.py)
_WIDEN = np.arange(1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16).astype(np.float32)


@njit(cache=True)
def _widen_rows(src: np.ndarray, table: np.ndarray, out: np.ndarray) -> None:
    for i in range(src.shape[0]):
        for j in range(src.shape[1]):
            out[i, j] = table[src[i, j]]


def as_float32(keys: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """A [N, width] block of keys as float32 (float16 widened exactly, into `out` when given;
    float32 as is)."""
    if keys.dtype == np.float32:
        return keys
    if keys.dtype != np.float16:
        return keys.astype(np.float32)
    if out is None:
        out = np.empty(keys.shape, dtype=np.float32)
    _widen_rows(keys.view(np.uint16), _WIDEN, out)
    return out


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
        k_layer = as_float32(keys[layer])
        for g in range(n_head_kv):
            yield layer, g, k_layer[:, g * d : (g + 1) * d]


def hot_normaliser(q: np.ndarray, hot_keys: np.ndarray, n_head_kv: int) -> np.ndarray:
    """Each query's log-sum-exp over the hot tokens, [L, n_head_kv, group * W]."""
    return hot_scores(q, hot_keys, n_head_kv)[1]


def hot_scores(
    q: np.ndarray, hot_keys: np.ndarray, n_head_kv: int
) -> tuple[np.ndarray, np.ndarray]:
    """(token_scores of the hot tokens [n_hot], their log-sum-exp per query [L, n_head_kv,
    group * W]) from one product q . k per block: the normaliser and the hot scores read the
    same logits, so computing them together halves the hot cache's share of a recall."""
    lse = np.empty(q.shape[:3], dtype=np.float32)
    best = np.full(hot_keys.shape[1], -np.inf, dtype=np.float32)
    for layer, g, k in _blocks(hot_keys, n_head_kv):
        s = q[layer, g] @ k.T  # [queries, tokens]: reductions run along long rows
        peak = s.max(axis=1, keepdims=True)
        norm = peak + np.log(np.exp(s - peak).sum(axis=1, keepdims=True))
        lse[layer, g] = norm[:, 0]
        s -= norm
        np.maximum(best, s.max(axis=0), out=best)
    return best, lse


def token_scores(
    q: np.ndarray,
    keys: np.ndarray,
    lse: np.ndarray,
    n_head_kv: int,
    heads: np.ndarray | None = None,
) -> np.ndarray:
    """score[t] = max over the (layer, KV head) pairs `heads` marks ([L, n_head_kv] bool,
    default all) and over window queries of the log-attention, [N]. TILE tokens at a time, so
    the logits stay small and in cache; unmarked layers and heads are never read."""
    n_layer, n, width = keys.shape
    d = width // n_head_kv
    marked = np.ones((n_layer, n_head_kv), bool) if heads is None else np.asarray(heads, bool)
    rows = [(layer, np.flatnonzero(marked[layer])) for layer in range(n_layer)]
    rows = [(layer, groups) for layer, groups in rows if len(groups)]
    best = np.full(n, -np.inf, dtype=np.float32)
    # buffers reused across tiles: a fresh 1.5 MiB array per tile and layer costs its page
    # faults every time, which measured as much as the widening itself
    tile = min(TILE, n)
    k_buf = np.empty((tile, width), dtype=np.float32)
    z_buf = np.empty((q.shape[2], tile), dtype=np.float32)
    for start in range(0, n, TILE):
        part = best[start : start + TILE]
        m = len(part)
        z = z_buf[:, :m]
        for layer, groups in rows:
            if len(groups) == n_head_kv or keys.dtype == np.float32:  # one contiguous widening
                k = as_float32(keys[layer, start : start + m], k_buf[:m])
            else:
                k = k_buf[:m]
                for g in groups:
                    cols = slice(g * d, (g + 1) * d)
                    as_float32(keys[layer, start : start + m, cols], k[:, cols])
            for g in groups:
                np.matmul(q[layer, g], k[:, g * d : (g + 1) * d].T, out=z)
                z -= lse[layer, g][:, None]
                np.maximum(part, z.max(axis=0), out=part)
    return best


def newest_queries(
    q: np.ndarray, lse: np.ndarray, window: int, newest: int
) -> tuple[np.ndarray, np.ndarray]:
    """The grouped queries [L, G, group * window, d] and their normalisers [L, G, group *
    window] of the `newest` window positions only."""
    n_layer, n_kv, width, d = q.shape
    part = (n_layer, n_kv, width // window)
    newest = min(newest, window)
    q_new = q.reshape(*part, window, d)[:, :, :, -newest:].reshape(n_layer, n_kv, -1, d)
    lse_new = lse.reshape(*part, window)[:, :, :, -newest:].reshape(n_layer, n_kv, -1)
    return q_new, lse_new


def cold_scores(
    q: np.ndarray,
    lse: np.ndarray,
    cold_keys: np.ndarray,
    n_head_kv: int,
    window: int,
    release: Callable[[], None] | None = None,
    coarse_queries: int = COARSE_QUERIES,
    coarse_heads: np.ndarray | None = None,
    coarse_stride: int = COARSE_STRIDE,
) -> np.ndarray:
    """token_scores of the cold tokens; past CANDIDATES of them, only those a coarse pass (the
    newest `coarse_queries` queries, in the (layer, KV head) pairs `coarse_heads` marks,
    default all; see engine/retrieval_heads.py) ranks best are scored
    exactly, the others score -inf. With `coarse_stride` s > 1 the coarse pass reads every
    s-th cold token and the best of those bring the s - 1 tokens stored after them.
    `release` is called after every RELEASE_EVERY cold tokens the coarse pass reads (a store
    memory-mapped under cold_dir hands those pages back, so a recall does not pull the whole
    store into the process)."""
    n_cold = cold_keys.shape[1]
    if n_cold <= CANDIDATES:
        return token_scores(q, cold_keys, lse, n_head_kv)
    q_new, lse_new = newest_queries(q, lse, window, coarse_queries)
    s = coarse_stride
    if s < 1 or RELEASE_EVERY % s or CANDIDATES % s:
        raise ValueError(f"coarse_stride must divide {RELEASE_EVERY} and {CANDIDATES}, got {s}")
    coarse = np.empty(-(-n_cold // s), dtype=np.float32)
    for start in range(0, n_cold, RELEASE_EVERY):
        coarse[start // s : (start + RELEASE_EVERY) // s] = token_scores(
            q_new, cold_keys[:, start : start + RELEASE_EVERY : s], lse_new, n_head_kv,
            coarse_heads,
        )  # fmt: skip
        if release is not None:
            release()
    best = np.argpartition(-coarse, CANDIDATES // s)[: CANDIDATES // s]
    index = (best[:, None] * s + np.arange(s)).ravel()
    index = np.sort(index[index < n_cold])
    picked = cold_keys[:, index]  # a gather touches a page per (layer, token): hand them back
    if release is not None:
        release()
    out = np.full(n_cold, -np.inf, dtype=np.float32)
    out[index] = token_scores(q, picked, lse, n_head_kv)
    return out


def recall_scores(
    queries: np.ndarray,
    scales: np.ndarray,
    hot_keys: np.ndarray,
    cold_keys: np.ndarray,
    n_head_kv: int,
    release: Callable[[], None] | None = None,
    coarse_heads: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(hot scores [n_hot], cold scores [n_cold]) from queries [L, H, W, d], softmax scales [L]
    and keys [L, n, n_head_kv * d] (cold keys may be float16); `release` and `coarse_heads` as
    in cold_scores."""
    q = _grouped(queries, scales, n_head_kv)
    hot, lse = hot_scores(q, hot_keys, n_head_kv)
    return hot, cold_scores(
        q, lse, cold_keys, n_head_kv, queries.shape[2], release, coarse_heads=coarse_heads
    )


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


def pool_tiers(
    hot: np.ndarray,
    hot_logical: np.ndarray,
    cold: np.ndarray,
    cold_logical: np.ndarray,
    before: int = POOL_BEFORE,
    after: int = POOL_AFTER,
) -> tuple[np.ndarray, np.ndarray]:
    """pool_neighbours over the hot and cold tokens together, split back into (hot, cold): a
    fact whose key stayed hot while its value went cold comes back whole, and the hot words
    next to a well-scored token are not the ones swapped out."""
    pooled = pool_neighbours(np.r_[hot, cold], np.r_[hot_logical, cold_logical], before, after)
    return pooled[: len(hot)], pooled[len(hot) :]


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
