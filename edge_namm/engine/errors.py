"""Errors the engine raises for bad input; each message says what to do next."""


class EngineConfigError(ValueError):
    """A constructor argument that cannot work (budget too small, FA with attention policy...)."""


class ModelFileError(ValueError):
    """The model file is missing or is not a loadable GGUF."""


class CacheFullError(RuntimeError):
    """The physical cache cannot take the next chunk (only with the `full` policy)."""
