"""Turns the errors users can cause into one-line CLI messages (no traceback, exit 1)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import click

from edge_namm.engine.errors import CacheFullError, EngineConfigError, ModelFileError
from edge_namm.native import NativeUnavailableError, UnsupportedModelError


def user_errors() -> tuple[type[BaseException], ...]:
    from edge_namm.scorers.file import ScorerFileError

    return (
        CacheFullError,
        EngineConfigError,
        ModelFileError,
        NativeUnavailableError,
        UnsupportedModelError,
        ScorerFileError,
        FileNotFoundError,
        ValueError,
        RuntimeError,
    )


def friendly(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Decorator for click commands: known errors become `Error: <message>` and exit 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except user_errors() as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper
