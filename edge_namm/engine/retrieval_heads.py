"""Which (layer, KV head) pairs recall's coarse pass reads, per model.

A model retrieves through a few of its heads (Wu et al., 2024, "Retrieval Head Mechanistically
Explains Long-Context Factuality": under 5% of heads, the same ones whatever the context). On
SmolLM2-135M a question's best log-attention to its needle comes from two or three of the 90
(layer, KV head) pairs in every prompt, and which pairs differs a little from prompt to prompt
(docs/experiments/2026-12-01-retrieval-heads.md). So the coarse pass over a large cold store,
which only has to rank the needle among the top CANDIDATES, can read those heads alone; the
candidates are then scored exactly with every head.

Which heads is a property of the weights, found by `benchmarks/retrieval_heads.py` on
train-split needle prompts and shipped as `models/recall-heads-<model>.json`. A file applies to
the model whose GGUF metadata it names (architecture, name and shape; any quantization of the
same weights). Without one, the coarse pass reads every head, as before.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_namm.engine.errors import EngineConfigError
from edge_namm.scorers.default import MODELS_DIR

FILE_GLOB = "recall-heads-*.json"
FORMAT = "edge-namm-recall-heads"
# what identifies the weights: the quantization (general.file_type) is left out on purpose
FINGERPRINT = (
    "general.architecture",
    "general.name",
    "{arch}.block_count",
    "{arch}.attention.head_count",
    "{arch}.attention.head_count_kv",
    "{arch}.embedding_length",
)


def fingerprint(metadata: dict[str, Any]) -> dict[str, str]:
    """The GGUF metadata that names a model's weights, as a flat dict of strings."""
    arch = str(metadata.get("general.architecture", ""))
    keys = (k.format(arch=arch) for k in FINGERPRINT)
    return {k: str(metadata.get(k, "")) for k in keys}


def heads_mask(heads: Sequence[Sequence[int]], n_layer: int, n_head_kv: int) -> np.ndarray:
    """[n_layer, n_head_kv] bool with the listed (layer, KV head) pairs marked."""
    mask = np.zeros((n_layer, n_head_kv), dtype=bool)
    for pair in heads:
        if len(pair) != 2:
            raise EngineConfigError(f"recall heads are (layer, KV head) pairs, got {pair!r}")
        layer, head = (int(v) for v in pair)
        if not (0 <= layer < n_layer and 0 <= head < n_head_kv):
            raise EngineConfigError(
                f"recall head ({layer}, {head}) is outside this model's {n_layer} layers x "
                f"{n_head_kv} KV heads: the heads were found for another model; pass "
                "recall_heads='all' or calibrate this one (benchmarks/retrieval_heads.py)"
            )
        mask[layer, head] = True
    if not mask.any():
        raise EngineConfigError("recall heads: the list is empty; pass recall_heads='all' instead")
    return mask


def read_heads_file(path: str | os.PathLike) -> dict[str, Any]:
    """A recall-heads file, checked for its format (not yet for the model)."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise EngineConfigError(
            f"cannot read recall heads from {path} ({exc}); pass a file written by "
            "benchmarks/retrieval_heads.py, or recall_heads='all'"
        ) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT or "heads" not in data:
        raise EngineConfigError(
            f"{path} is not a recall-heads file (format {FORMAT!r} with 'heads'); write one "
            "with benchmarks/retrieval_heads.py or pass recall_heads='all'"
        )
    return data


def _shipped(metadata: dict[str, Any], folder: Path) -> tuple[Path, dict[str, Any]] | None:
    """(path, contents) of the heads file in `folder` made for this model's weights, if any."""
    want = fingerprint(metadata)
    for path in sorted(folder.glob(FILE_GLOB)):
        try:
            data = read_heads_file(path)
        except EngineConfigError:
            continue
        if data.get("model") == want:
            return path, data
    return None


def find_heads_file(metadata: dict[str, Any], folder: Path = MODELS_DIR) -> Path | None:
    """The shipped recall-heads file made for this model's weights, if any."""
    found = _shipped(metadata, folder)
    return None if found is None else found[0]


def resolve_recall_heads(
    spec: Any, metadata: dict[str, Any], n_layer: int, n_head_kv: int, folder: Path = MODELS_DIR
) -> tuple[np.ndarray | None, str]:
    """(mask or None for every head, where it came from) for `recall_heads=`:
    "auto" (the file in `folder` made for this model, else every head), "all", a path to a
    heads file (refused when made for another model), or a list of (layer, KV head) pairs."""
    if spec is None or (isinstance(spec, str) and spec == "all"):
        return None, "all heads"
    if isinstance(spec, str) and spec == "auto":
        found = _shipped(metadata, folder)
        if found is None:
            return None, "all heads (no calibration for this model)"
        spec, data = found
    elif isinstance(spec, (str, os.PathLike)):
        data = read_heads_file(spec)
        if data.get("model") != fingerprint(metadata):
            raise EngineConfigError(
                f"the recall heads in {spec} were found for {data.get('model')}, not for this "
                f"model ({fingerprint(metadata)}); pass recall_heads='all' or calibrate this "
                "model with benchmarks/retrieval_heads.py"
            )
    else:
        mask = heads_mask(spec, n_layer, n_head_kv)
        return mask, f"{int(mask.sum())} of {mask.size} heads (given)"
    mask = heads_mask(data["heads"], n_layer, n_head_kv)
    return mask, f"{int(mask.sum())} of {mask.size} heads ({Path(spec).name})"


def write_heads_file(
    path: str | os.PathLike,
    metadata: dict[str, Any],
    heads: Sequence[Sequence[int]],
    provenance: dict[str, Any],
) -> None:
    """Save a calibration: the model's fingerprint, the (layer, KV head) pairs, how found."""
    data = {
        "format": FORMAT,
        "model": fingerprint(metadata),
        "heads": [[int(layer), int(head)] for layer, head in heads],
        "provenance": provenance,
    }
    text = json.dumps(data, indent=1)
    # one pair per line reads better than three
    text = re.sub(r"\[\s+(\d+),\s+(\d+)\s+\]", r"[\1, \2]", text)
    Path(path).write_text(text + "\n")
