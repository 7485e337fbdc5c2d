"""Module attributes imported on first use, so that light imports stay light."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable
from typing import Any


def lazy_attributes(package: str, submodules: dict[str, Iterable[str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` that takes each name listed under a submodule of ``package``
    from it the first time it is asked for (ONNX Runtime, Numba: seconds to import). The table
    reads like the eager ``from .submodule import (...)`` lines beside it."""
    table = {name: module for module, names in submodules.items() for name in names}

    def __getattr__(name: str) -> Any:
        if name in table:
            return getattr(importlib.import_module(f".{table[name]}", package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
