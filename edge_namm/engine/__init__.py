"""The engine: a llama-cpp-python model whose KV cache a policy keeps within a budget."""

from edge_namm.engine.errors import CacheFullError, EngineConfigError, ModelFileError
from edge_namm.engine.memory import KVMemory
from edge_namm.engine.namm_llama import NammLlama, NammLlamaState
from edge_namm.engine.session import SessionError
from edge_namm.engine.stats import MemoryStats

__all__ = [
    "CacheFullError",
    "EngineConfigError",
    "KVMemory",
    "MemoryStats",
    "ModelFileError",
    "NammLlama",
    "NammLlamaState",
    "SessionError",
]
