"""Module attributes imported on first use, so that light imports stay light."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_attributes(package: str, table: dict[str, str]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that takes ``name`` from submodule ``table[name]`` of
    ``package`` the first time it is asked for (ONNX Runtime, Numba: seconds to import)."""

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(f".{table[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
