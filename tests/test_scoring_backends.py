"""The engine evicts exactly the same tokens whether it scores with ONNX Runtime or numpy."""

from __future__ import annotations

import numpy as np
import pytest

from edge_namm.engine import NammLlama
from edge_namm.engine.retrieval_heads import FILE_GLOB as HEADS_GLOB
from edge_namm.scorers import zero_scorer
from edge_namm.scorers.default import MODELS_DIR, default_scorer_path
from edge_namm.scorers.file import load_scorer


def _evictions(model_path: str, scorer, backend: str, text: str) -> list[list[int]]:
    llm = NammLlama(
        model_path,
        policy="namm",
        scorer=scorer,
        scorer_backend=backend,
        budget=256,
        update_interval=128,
        chunk=64,
    )
    assert llm.policy.scorer.backend == backend
    log: list[list[int]] = []
    llm.memory.on_update.append(lambda view, evict: log.append(view.positions[evict].tolist()))
    try:
        llm.eval(llm.tokenize(text.encode())[:700])
    finally:
        llm.close()
    return log


def _random_bam_window():
    base = load_scorer(default_scorer_path())
    params = np.random.default_rng(1).normal(0, 0.05, size=4172).astype(np.float32)
    return zero_scorer("bam-window", options={"window": 64}).__class__(
        params, base.norm_mean, base.norm_std, options={"window": 64}
    )


@pytest.mark.parametrize("which", ["default", "linear", "random-bam-window"])
def test_same_evictions_with_onnx_and_numpy(model_path, which):
    from edge_namm.tasks.haystack import Haystack

    text = " ".join(Haystack.default().sentences[200:500])
    scorer = {
        "default": lambda: load_scorer(default_scorer_path()),
        "linear": lambda: load_scorer(MODELS_DIR / "namm-mlp-2budget-smollm2-135m.json"),
        "random-bam-window": _random_bam_window,
    }[which]()
    onnx_log = _evictions(model_path, scorer, "onnx", text)
    numpy_log = _evictions(model_path, scorer, "numpy", text)
    assert sum(map(len, onnx_log)) > 0
    assert onnx_log == numpy_log


_SCORER_FILES = sorted(set(MODELS_DIR.glob("*.json")) - set(MODELS_DIR.glob(HEADS_GLOB)))


@pytest.mark.parametrize("path", _SCORER_FILES, ids=lambda p: p.name)
def test_every_shipped_scorer_loads_and_is_documented(path):
    """A file in models/ is one users can pick: it loads, says where it came from and what
    features it expects, and models/README.md describes it."""
    scorer = load_scorer(path)
    assert np.all(np.isfinite(scorer.params))
    prov = scorer.provenance
    assert prov.get("command") or prov.get("method"), f"{path.name}: no provenance"
    assert f"### `{path.name}`" in (MODELS_DIR / "README.md").read_text(encoding="utf-8")
