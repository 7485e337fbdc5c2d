"""Sessions on disk: a conversation with its KV memory, NAMM feature state and cold store.

One file (a NumPy .npz archive, read with allow_pickle=False, so a foreign file cannot run
code): a JSON header with the format, version and the model/engine shape it needs, and the
state's arrays. Loading restores the cache as it was, so a long conversation continues without
being read again.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import llama_cpp
import numpy as np

FORMAT = "edge-namm-session"
VERSION = 1


class SessionError(ValueError):
    """A session file that is unreadable, foreign, or made with another model or engine."""


def _encode(obj: Any, arrays: dict[str, np.ndarray]) -> Any:
    if isinstance(obj, np.ndarray):
        key = f"a{len(arrays)}"
        arrays[key] = obj
        return {"__array__": key}
    if isinstance(obj, bytes):
        key = f"a{len(arrays)}"
        arrays[key] = np.frombuffer(obj, dtype=np.uint8)
        return {"__bytes__": key}
    if isinstance(obj, dict):
        return {"__dict__": [[k, _encode(v, arrays)] for k, v in obj.items()]}
    if isinstance(obj, (list, tuple)):
        return {"__list__": [_encode(v, arrays) for v in obj]}
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


def _decode(obj: Any, arrays: Any) -> Any:
    if isinstance(obj, dict):
        if "__array__" in obj:
            return arrays[obj["__array__"]]
        if "__bytes__" in obj:
            return arrays[obj["__bytes__"]].tobytes()
        if "__dict__" in obj:
            return {k: _decode(v, arrays) for k, v in obj["__dict__"]}
        if "__list__" in obj:
            return [_decode(v, arrays) for v in obj["__list__"]]
    return obj


def engine_signature(llm: Any) -> dict[str, Any]:
    """What a saved cache depends on: the model and the engine's shape."""
    model = llm._model.model
    buf = (llama_cpp.ctypes.c_char * 256)()
    llama_cpp.llama_model_desc(model, buf, 256)
    return {
        "model_desc": buf.value.decode(errors="replace"),
        "n_params": int(llama_cpp.llama_model_n_params(model)),
        "n_vocab": int(llm.n_vocab()),
        "n_layer": int(llama_cpp.llama_model_n_layer(model)),
        "n_cells": int(llm.memory.n_cells),
        "budget": int(llm.budget),
        "update_interval": int(llm.update_interval),
        "recall": bool(llm.recall),
        "type_k": int(llm.context_params.type_k),
        "type_v": int(llm.context_params.type_v),
    }


def save_session(llm: Any, path: str | os.PathLike, extra: dict | None = None) -> Path:
    """Write the NammLlama's whole state (and `extra`, e.g. the chat messages) to `path`."""
    state = llm.save_state()
    ls = state.llama
    body = {
        "llama": {
            "input_ids": ls.input_ids[: ls.n_tokens].copy(),
            "n_tokens": ls.n_tokens,
            "llama_state": ls.llama_state,
            "seed": ls.seed,
        },
        "memory": state.memory,
        "stats": state.stats,
        "since_update": state.since_update,
        "positions": list(state.positions),
        "chat": None if state.chat is None else [state.chat[0], state.chat[1]],
    }
    arrays: dict[str, np.ndarray] = {}
    header = {
        "format": FORMAT,
        "version": VERSION,
        "engine": engine_signature(llm),
        "body": _encode(body, arrays),
        "extra": extra or {},
    }
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:  # np.savez would append .npz to a bare name
        np.savez(f, header=np.frombuffer(json.dumps(header).encode(), dtype=np.uint8), **arrays)
    os.replace(tmp, path)  # a crash while writing leaves the previous session intact
    return path


def load_session(llm: Any, path: str | os.PathLike) -> dict:
    """Restore a session saved by `save_session` into `llm`; returns its `extra`."""
    from edge_namm.engine.namm_llama import NammLlamaState

    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as z:
            header = json.loads(z["header"].tobytes().decode())
            arrays = {k: z[k] for k in z.files if k != "header"}
    except FileNotFoundError:
        raise SessionError(f"{path}: no such session file") from None
    except (OSError, ValueError, KeyError, zipfile.BadZipFile, UnicodeDecodeError) as exc:
        raise SessionError(
            f"{path}: not an edge-namm session file ({exc}); save one with /save or "
            "NammLlama.save_session"
        ) from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise SessionError(f"{path}: not an edge-namm session file")
    if header.get("version") != VERSION:
        raise SessionError(
            f"{path}: session format version {header.get('version')!r}; this edge-namm reads "
            f"version {VERSION}"
        )
    want, have = header.get("engine", {}), engine_signature(llm)
    diffs = [f"{k}: saved {want.get(k)!r}, now {v!r}" for k, v in have.items() if want.get(k) != v]
    if diffs:
        raise SessionError(
            f"{path} was saved with another model or engine settings ({'; '.join(diffs)}); "
            "load it with the same model, --budget, --update-interval and --recall"
        )
    body = _decode(header["body"], arrays)
    lb = body["llama"]
    n_tokens = int(lb["n_tokens"])
    input_ids = np.zeros(max(n_tokens, len(llm.input_ids)), dtype=np.intc)
    input_ids[:n_tokens] = lb["input_ids"]
    llama_state = llama_cpp.LlamaState(
        input_ids=input_ids,
        scores=np.zeros_like(llm.scores),  # logits are recomputed before sampling
        n_tokens=n_tokens,
        llama_state=lb["llama_state"],
        llama_state_size=len(lb["llama_state"]),
        seed=int(lb["seed"]),
    )
    chat = body.get("chat")
    llm.load_state(
        NammLlamaState(
            llama=llama_state,
            memory=body["memory"],
            stats=body["stats"],
            since_update=int(body["since_update"]),
            positions=tuple(body["positions"]),
            chat=None if chat is None else (chat[0], int(chat[1])),
        )
    )
    return header.get("extra", {})
