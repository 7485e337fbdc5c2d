"""build.sh fills Numba's cache through edge_namm.kernels, so the first chat turn does not
compile; that only holds if every kernel caches and the warm-up reaches the entry points."""

import importlib
import pkgutil

import numpy as np
from numba.core.caching import NullCache
from numba.core.registry import CPUDispatcher

import edge_namm
from edge_namm.kernels import compile_all


def _dispatchers() -> dict[str, CPUDispatcher]:
    found = {}
    for mod in pkgutil.walk_packages(edge_namm.__path__, "edge_namm."):
        if mod.name.startswith(("edge_namm.server", "edge_namm.cli")):
            continue
        module = importlib.import_module(mod.name)
        for name, obj in vars(module).items():
            if isinstance(obj, CPUDispatcher) and obj.__module__ == mod.name:
                found[f"{mod.name}.{name}"] = obj
    return found


def test_every_kernel_is_cached_on_disk():
    kernels = _dispatchers()
    assert "edge_namm.engine.recall._widen_rows" in kernels
    uncached = [name for name, k in kernels.items() if isinstance(k._cache, NullCache)]
    assert not uncached, f"compiled on every start (add cache=True): {uncached}"


def test_compile_all_compiles_the_entry_points():
    from edge_namm.engine.recall import _widen_rows, as_float32
    from edge_namm.features.stft import fold_rows, fold_rows_serial

    assert compile_all() >= 0.0
    for kernel in (fold_rows(), fold_rows_serial(), _widen_rows):
        assert kernel.signatures, kernel
    keys = np.array([[1.5, -2.25, 65504.0]], dtype=np.float16)
    assert np.array_equal(as_float32(keys), keys.astype(np.float32))
