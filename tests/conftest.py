"""Shared fixtures: the real SmolLM2-135M-Instruct model (pulled by `edge-namm pull`)."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest


def _model_path() -> Path:
    if os.environ.get("EDGE_NAMM_TEST_MODEL"):
        return Path(os.environ["EDGE_NAMM_TEST_MODEL"])
    from edge_namm.downloads import default_model_path

    return default_model_path()


def pytest_collection_modifyitems(items) -> None:
    """Tests that load the real model carry the `model` marker: `pytest -m "not model"` is the
    fast tier (tiny GGUFs, features, scorers, tasks)."""
    for item in items:
        if "model_path" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.model)


@pytest.fixture(scope="session")
def model_path() -> str:
    path = _model_path()
    if not path.is_file():
        pytest.fail(
            f"test model missing at {path}: run `edge-namm pull` (or set EDGE_NAMM_TEST_MODEL)"
        )
    return str(path)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> str:
    """A tiny random-weight llama GGUF (tests/tiny_gguf.py): loads in milliseconds."""
    from tiny_gguf import write_llama_gguf

    return str(write_llama_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf", seed=1))


@pytest.fixture(scope="session")
def tiny_gemma3(tmp_path_factory) -> str:
    """The same with Gemma 3's sliding-window layers (llama.cpp's iSWA cache)."""
    from tiny_gguf import PRESETS, write_llama_gguf

    path = tmp_path_factory.mktemp("tiny") / "gemma3.gguf"
    return str(write_llama_gguf(path, seed=2, **PRESETS["tiny-gemma3"]))


@pytest.fixture(params=["llama", "gemma3"])
def any_tiny(request, tiny_model, tiny_gemma3) -> str:
    return tiny_model if request.param == "llama" else tiny_gemma3


@pytest.fixture(scope="module")
def module_engines() -> Iterator[Callable[..., Any]]:
    """Builds the NammLlama engines a module's tests share (its module-scoped fixtures call it)
    and closes them when the module is done, so no fixture repeats the build/yield/close."""
    from edge_namm.engine import NammLlama

    engines: list[NammLlama] = []

    def build(model: str | Path, **settings: Any) -> NammLlama:
        engines.append(NammLlama(str(model), **settings))
        return engines[-1]

    yield build
    for llm in reversed(engines):
        llm.close()


@pytest.fixture(scope="session")
def counting_text() -> str:
    """A long, perfectly predictable text: the model must continue the count."""
    return " ".join(str(i) for i in range(1, 4000))


def pytest_terminal_summary(terminalreporter) -> None:
    """How many generated bad-input cases the fuzz tests tried."""
    import sys

    fuzz = sys.modules.get("test_fuzz")
    if fuzz is not None and fuzz.CASES:
        terminalreporter.write_line(fuzz.pytest_fuzz_summary())
