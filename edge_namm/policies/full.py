"""`full`: never evict (the reference every policy is normalised against)."""

from __future__ import annotations

from dataclasses import dataclass

from edge_namm.policies.base import CacheView, Policy


@dataclass
class FullPolicy(Policy):
    name = "full"

    def score(self, view: CacheView) -> None:
        return None
