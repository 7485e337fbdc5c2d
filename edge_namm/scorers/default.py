"""Where the shipped scorer lives and how a `scorer=` argument becomes a ready scorer."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
# First existing file wins. The default is the windowed BAM evolved under budgets of 12.5%,
# 25% and 50%, run for nine generations (three more on-policy than its predecessor, next in
# line): it beat that predecessor at both 25% and 12.5% over twelve held-out texts, the rule
# written down before its held-out runs (docs/TRAINING.md, "Longer on-policy training"). The
# linear scorer transfers better to other model families and comes next; the hand-set
# placeholder is the last fallback.
DEFAULT_SCORER_NAMES = (
    "namm-bamw-3budget-g9-smollm2-135m.json",
    "namm-bamw-3budget-smollm2-135m.json",
    "namm-mlp-2budget-smollm2-135m.json",
    "placeholder-mlp-handset.json",
)


def default_scorer_path() -> Path:
    """The shipped default scorer (``EDGE_NAMM_SCORER`` overrides it)."""
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
