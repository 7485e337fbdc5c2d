"""edge-namm: learned KV-cache memory (NAMM) for llama.cpp GGUF models."""

from __future__ import annotations

from typing import Any

__all__ = ["NammLlama"]


def __getattr__(name: str) -> Any:
    # lazy: `import edge_namm` must work (for `edge-namm info`) even without the patched build
    if name == "NammLlama":
        from edge_namm.engine import NammLlama

        return NammLlama
    raise AttributeError(name)
