"""Where edge-namm keeps downloaded models and data.

Everything fetched by ``edge-namm pull`` lives under one cache directory so that it can be moved
or wiped in one place; ``EDGE_NAMM_CACHE`` overrides the location (CI, shared machines).
"""

from __future__ import annotations

import os
from pathlib import Path

CACHE_ENV = "EDGE_NAMM_CACHE"


def cache_dir() -> Path:
    """Root cache directory: ``$EDGE_NAMM_CACHE`` if set, else ``~/.cache/edge-namm``.

    Not created here: callers that write create it, readers report a clear error instead.
    """
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(env).expanduser()
    return Path("~/.cache/edge-namm").expanduser()


def models_dir() -> Path:
    """Directory for downloaded GGUF models."""
    return cache_dir() / "models"


def data_dir() -> Path:
    """Directory for downloaded data (haystack essays, ...)."""
    return cache_dir() / "data"
