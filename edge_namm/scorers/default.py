"""Where the shipped scorer lives and how a `scorer=` argument becomes a ready scorer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
# First existing file wins. The evolved namm-mlp2-/namm-mlp-smollm2-135m.json are shipped but
# not defaults: neither beat the placeholder on held-out prompts (docs/TRAINING.md).
DEFAULT_SCORER_NAMES = (
    "namm-bam-smollm2-135m.json",
    "placeholder-mlp-handset.json",
)


def default_scorer_path() -> Path:
    """The evolved scorer when one has been shipped, else the documented hand-set placeholder."""
    override = os.environ.get("EDGE_NAMM_SCORER")
    if override:
        return Path(override)
    for name in DEFAULT_SCORER_NAMES:
        if (MODELS_DIR / name).is_file():
            return MODELS_DIR / name
    raise FileNotFoundError(f"no scorer file in {MODELS_DIR}; pass scorer= / --scorer")


def resolve_scorer(scorer: Any = None, backend: str = "auto", providers: Any = None) -> Any:
    """None -> the default scorer; a path -> loaded (.json scorer file or .onnx); a scorer
    object -> itself. Numpy scorers are compiled for ONNX Runtime when available
    (backend="auto"), with the numpy reference as the fallback.
    """
    from edge_namm.scorers.runtime import compile_scorer

    if scorer is not None and not isinstance(scorer, (str, os.PathLike)):
        return compile_scorer(scorer, backend=backend, providers=providers)
    path = Path(scorer) if scorer is not None else default_scorer_path()
    if path.suffix == ".onnx":
        from edge_namm.scorers.runtime import load_onnx_scorer

        return load_onnx_scorer(path, providers=providers)
    from edge_namm.scorers.file import load_scorer

    return compile_scorer(load_scorer(path), backend=backend, providers=providers)


def scoring_backend() -> str:
    """Which backend/provider the default scorer runs on (for `edge-namm info`)."""
    scorer = resolve_scorer()
    return f"{getattr(scorer, 'backend', 'numpy')} ({getattr(scorer, 'provider', 'CPU')})"
