"""`kvzip` (Kim et al., 2025, "Query-Agnostic KV Cache Compression with Context Reconstruction").

Before each update the engine asks the model to repeat the tokens of the last interval
(`repeat_prompt`, then those tokens teacher-forced) with attention capture on; a cached token's
score is the largest attention any repeat query gives it, over layers and heads. Copying makes
some query look at every token, a needle included, which received attention alone does not.
The repeat tokens are removed afterwards. It costs about one more prefill of the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from edge_namm.policies.base import REPEAT_PROMPT, CacheView, Policy


@dataclass
class KVzipPolicy(Policy):
    name = "kvzip"
    needs_repeat: ClassVar[bool] = True
    n_sink: int = 4  # attention sinks soak up repeat attention too: kept, as StreamingLLM does
    repeat_prompt: str = REPEAT_PROMPT

    def score(self, view: CacheView) -> np.ndarray:
        if view.repeat_scores is None:
            raise RuntimeError("kvzip needs the engine's repeat pass (NammLlama runs it)")
        return view.repeat_scores[view.cells].astype(np.float64)
