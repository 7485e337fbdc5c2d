"""Recall's scoring inputs with a needle planted in one (layer, KV head) pair, for the pure
tests of edge_namm/engine/recall.py (test_recall.py, test_retrieval_heads.py)."""

from __future__ import annotations

import numpy as np


def planted(n: int, needle: int, seed: int = 0):
    """(queries [L, H, W, d], softmax scales [L], keys [L, n, n_head_kv * d], n_head_kv): random
    queries/keys where head 3 (KV head 1) of layer 1 looks hard at token `needle`; every other
    pair sees noise."""
    rng = np.random.default_rng(seed)
    n_layer, n_head, n_head_kv, window, d = 2, 4, 2, 3, 8
    keys = rng.standard_normal((n_layer, n, n_head_kv * d)).astype(np.float32) * 0.1
    queries = rng.standard_normal((n_layer, n_head, window, d)).astype(np.float32) * 0.1
    queries[1, 3] = 0
    queries[1, 3, :, 0] = 5.0
    keys[1, needle, d : d + 1] = 5.0
    return queries, np.ones(n_layer, np.float32), keys, n_head_kv
