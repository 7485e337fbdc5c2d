"""`edge-namm serve`: an OpenAI-compatible HTTP API over one NammLlama.

Built on FastAPI + uvicorn, the stack llama-cpp-python's own server uses, with server-sent
events written by hand (the OpenAI stream format is plain `data: {json}` lines and `[DONE]`).
llama-cpp-python's server builds its own `Llama` per model and knows nothing of conversations,
so it could not keep one conversation's KV memory apart from another's; this one does
(server/sessions.py). Requests run one at a time per model (a lock queues them); errors use
OpenAI's error body `{"error": {"message", "type", "param", "code"}}`.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from edge_namm.server.sessions import SessionStore

MAX_TOKENS_LIMIT = 32768
SAMPLING = {  # OpenAI name -> (llama-cpp-python name, type)
    "temperature": ("temperature", float),
    "top_p": ("top_p", float),
    "top_k": ("top_k", int),
    "min_p": ("min_p", float),
    "max_tokens": ("max_tokens", int),
    "seed": ("seed", int),
    "presence_penalty": ("presence_penalty", float),
    "frequency_penalty": ("frequency_penalty", float),
    "repeat_penalty": ("repeat_penalty", float),
}


class ApiError(Exception):
    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = (
            status,
            message,
            type_,
            param,
            code,
        )

    def response(self) -> JSONResponse:
        body = {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }
        return JSONResponse(body, status_code=self.status)


def _bad(message: str, param: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", param)


def _sampling(body: dict, defaults: dict) -> dict:
    out = dict(defaults)
    for name, (target, kind) in SAMPLING.items():
        if name not in body or body[name] is None:
            continue
        value = body[name]
        if (
            isinstance(value, bool)
            or not isinstance(value, (int, float))
            or (kind is int and not float(value).is_integer())
        ):
            raise _bad(f"'{name}' must be a {kind.__name__}, got {value!r}", name)
        out[target] = kind(value)
    if out.get("max_tokens") is not None and not 0 < out["max_tokens"] <= MAX_TOKENS_LIMIT:
        raise _bad(f"'max_tokens' must be between 1 and {MAX_TOKENS_LIMIT}", "max_tokens")
    stop = body.get("stop")
    if stop is not None:
        if isinstance(stop, str):
            stop = [stop]
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise _bad("'stop' must be a string or a list of strings", "stop")
        out["stop"] = stop
    return out


def _check_messages(messages: Any) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise _bad("'messages' must be a non-empty list", "messages")
    for i, m in enumerate(messages):
        if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool"):
            raise _bad(f"messages[{i}] needs a role of system, user, assistant or tool", "messages")
        if not isinstance(m.get("content"), str):
            raise _bad(f"messages[{i}].content must be a string", "messages")
    return messages


def create_app(
    llm: Any,
    model_name: str,
    *,
    api_key: str | None = None,
    max_sessions: int = 4,
    session_dir: Path,
    sampling_defaults: dict | None = None,
) -> FastAPI:
    app = FastAPI(title="edge-namm", version="1")
    store = SessionStore(llm, max_sessions, session_dir)
    lock = asyncio.Lock()
    defaults = dict(sampling_defaults or {})
    app.state.store = store

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return exc.response()

    @app.exception_handler(ValueError)
    async def _value_error(_: Request, exc: ValueError) -> JSONResponse:
        return _bad(str(exc)).response()

    @app.middleware("http")
    async def _auth(request: Request, call_next: Any) -> Any:
        if api_key and request.url.path.startswith("/v1"):
            if request.headers.get("authorization", "") != f"Bearer {api_key}":
                return ApiError(
                    401,
                    "invalid or missing API key (Authorization: Bearer ...)",
                    "invalid_request_error",
                    code="invalid_api_key",
                ).response()
        return await call_next(request)

    async def _body(request: Request) -> dict:
        try:
            body = await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise _bad("the request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise _bad("the request body must be a JSON object")
        model = body.get("model")
        if model is not None and model != model_name:
            raise ApiError(
                404,
                f"model '{model}' does not exist; this server serves '{model_name}'",
                "invalid_request_error",
                "model",
                "model_not_found",
            )
        return body

    def _memory() -> dict:
        st = llm.stats
        return {
            "kv_cells": st.cells_used,
            "budget": st.budget,
            "tokens_seen": st.tokens_seen,
            "tokens_evicted": st.tokens_evicted,
            "cold_tokens": st.cold_tokens,
            "cold_bytes": st.cold_bytes,
            "tokens_recalled": st.tokens_recalled,
            "n_tokens": llm.n_tokens,
        }

    @app.get("/v1/models")
    async def models() -> dict:
        return {
            "object": "list",
            "data": [{"id": model_name, "object": "model", "created": 0, "owned_by": "edge-namm"}],
        }

    @app.get("/v1/memory")
    async def memory() -> dict:
        return {"memory": _memory(), "sessions": store.describe()}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Any:
        body = await _body(request)
        messages = _check_messages(body.get("messages"))
        kw = _sampling(body, defaults)
        stream = bool(body.get("stream", False))
        if not stream:
            async with lock:
                conv = await run_in_threadpool(store.open, messages)
                out = await run_in_threadpool(
                    lambda: llm.create_chat_completion(messages=messages, **kw)
                )
                store.close_turn(conv, messages, out["choices"][0]["message"])
            out["model"] = model_name
            out["edge_namm"] = {"conversation": conv.id, **_memory()}
            return out
        # Streaming: a worker thread generates and hands chunks over a queue, and it releases
        # the lock itself when done, so a client that hangs up mid-reply cannot leave the
        # model locked (the worker sees `cancelled` and stops at the next token).
        await lock.acquire()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        cancelled = threading.Event()
        done = object()

        def work() -> None:
            try:
                conv = store.open(messages)
                chunks = llm.create_chat_completion(messages=messages, stream=True, **kw)
                pieces: list[str] = []
                for chunk in chunks:
                    if cancelled.is_set():
                        chunks.close()
                        break
                    chunk["model"] = model_name
                    pieces.append(chunk["choices"][0]["delta"].get("content") or "")
                    loop.call_soon_threadsafe(queue.put_nowait, chunk)
                store.close_turn(conv, messages, {"role": "assistant", "content": "".join(pieces)})
                final = {
                    "object": "chat.completion.chunk",
                    "choices": [],
                    "model": model_name,
                    "created": int(time.time()),
                    "edge_namm": {"conversation": conv.id, **_memory()},
                }
                loop.call_soon_threadsafe(queue.put_nowait, final)
            except Exception as exc:  # reported in the stream; the lock is released below
                loop.call_soon_threadsafe(queue.put_nowait, exc)
            finally:
                loop.call_soon_threadsafe(queue.put_nowait, done)
                loop.call_soon_threadsafe(lock.release)

        loop.run_in_executor(None, work)

        async def events() -> Any:
            try:
                while (item := await queue.get()) is not done:
                    if isinstance(item, Exception):
                        error = {"error": {"message": str(item), "type": "server_error"}}
                        yield f"data: {json.dumps(error)}\n\n"
                        continue
                    yield f"data: {json.dumps(item)}\n\n"
                yield "data: [DONE]\n\n"
            finally:
                cancelled.set()

        return StreamingResponse(events(), media_type="text/event-stream")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Any:
        body = await _body(request)
        prompt = body.get("prompt")
        if not isinstance(prompt, str) or not prompt:
            raise _bad("'prompt' must be a non-empty string", "prompt")
        kw = _sampling(body, defaults)
        if body.get("stream"):
            raise _bad(
                "streaming is offered on /v1/chat/completions; send stream=false here", "stream"
            )
        async with lock:
            await run_in_threadpool(store.park_active)  # a plain completion has no conversation
            await run_in_threadpool(llm.reset, True)
            out = await run_in_threadpool(lambda: llm.create_completion(prompt, **kw))
        out["model"] = model_name
        out["edge_namm"] = _memory()
        return out

    return app
