"""KV eviction policies: one file per policy, registered by name in POLICIES."""

from __future__ import annotations

from typing import Any

from edge_namm.policies.base import CacheView, Policy
from edge_namm.policies.full import FullPolicy
from edge_namm.policies.h2o import H2OPolicy
from edge_namm.policies.keydiff import KeyDiffPolicy
from edge_namm.policies.kvzip import KVzipPolicy
from edge_namm.policies.l2 import L2NormPolicy
from edge_namm.policies.namm import NammPolicy
from edge_namm.policies.random_policy import RandomPolicy
from edge_namm.policies.selection import select_evictions
from edge_namm.policies.snapkv import SnapKVPolicy
from edge_namm.policies.streaming import StreamingPolicy
from edge_namm.policies.tova import TovaPolicy

POLICIES: dict[str, type[Policy]] = {
    cls.name: cls
    for cls in (
        FullPolicy,
        NammPolicy,
        StreamingPolicy,
        H2OPolicy,
        TovaPolicy,
        SnapKVPolicy,
        L2NormPolicy,
        KeyDiffPolicy,
        KVzipPolicy,
        RandomPolicy,
    )
}


def make_policy(
    name: str,
    scorer: Any = None,
    scorer_backend: str = "auto",
    scorer_providers: Any = None,
    **kwargs: Any,
) -> Policy:
    """Build a registered policy; `scorer` (path or scorer object) only applies to `namm`,
    scored with ONNX Runtime or numpy (`scorer_backend`, `scorer_providers`)."""
    if name not in POLICIES:
        raise ValueError(f"unknown policy '{name}'; valid policies: {', '.join(sorted(POLICIES))}")
    cls = POLICIES[name]
    if cls.uses_scorer:
        from edge_namm.scorers.default import resolve_scorer

        return cls(scorer=resolve_scorer(scorer, scorer_backend, scorer_providers), **kwargs)
    if scorer is not None:
        takers = ", ".join(n for n, c in POLICIES.items() if c.uses_scorer)
        raise ValueError(f"policy '{name}' takes no scorer (only {takers} do)")
    return cls(**kwargs)


def attention_free() -> list[str]:
    """Policies that never read attention weights (they work with flash attention)."""
    return [n for n, c in POLICIES.items() if not c.needs_attention]


__all__ = [
    "POLICIES",
    "CacheView",
    "Policy",
    "attention_free",
    "make_policy",
    "select_evictions",
]
