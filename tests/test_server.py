"""`edge-namm serve` over real HTTP on 127.0.0.1, driven by the official `openai` client, curl."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent / "edge-namm"
KEY = "test-key"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(model_path, tmp_path_factory):
    port = _free_port()
    sessions = tmp_path_factory.mktemp("sessions")
    proc = subprocess.Popen(
        [
            str(BIN),
            "serve",
            "--model",
            model_path,
            "--port",
            str(port),
            "--api-key",
            KEY,
            "--budget",
            "256",
            "--update-interval",
            "128",
            "--max-sessions",
            "1",
            "--session-dir",
            str(sessions),
            "--name",
            "smollm2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            req = urllib.request.Request(
                f"{base}/v1/models", headers={"Authorization": f"Bearer {KEY}"}
            )
            urllib.request.urlopen(req, timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"server did not start: {proc.stdout.read()}")
            time.sleep(0.3)
    yield base, sessions
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def client(server):
    from openai import OpenAI

    return OpenAI(base_url=f"{server[0]}/v1", api_key=KEY, max_retries=0, timeout=300)


def _curl(base: str, path: str, body: str | None = None, key: str | None = KEY) -> tuple[int, dict]:
    cmd = ["curl", "-s", "-o", "-", "-w", "\n%{http_code}", f"{base}{path}"]
    if key:
        cmd += ["-H", f"Authorization: Bearer {key}"]
    if body is not None:
        cmd += ["-H", "Content-Type: application/json", "-d", body]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    text, code = out.rsplit("\n", 1)
    return int(code), json.loads(text)


def test_models_and_chat_with_the_openai_client(client):
    assert [m.id for m in client.models.list().data] == ["smollm2"]
    out = client.chat.completions.create(
        model="smollm2",
        messages=[
            {"role": "system", "content": "You are a helpful assistant."},
            # a clear first-token margin (1.5 nats): the bare question is a near-tie between
            # " La" and " The" that AVX2 and AVX-512 kernels break differently
            {"role": "user", "content": "What is the capital of France? Answer in one word."},
        ],
        max_tokens=16,
        temperature=0,
    )
    assert "Paris" in out.choices[0].message.content
    assert out.model_extra["edge_namm"]["budget"] == 256


def test_streaming_chat_with_the_openai_client(client):
    chunks = list(
        client.chat.completions.create(
            model="smollm2",
            messages=[{"role": "user", "content": "Count from one to five."}],
            max_tokens=24,
            temperature=0,
            stream=True,
        )
    )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert chunks[-1].model_extra["edge_namm"]["n_tokens"] > 0


def test_interleaved_conversations_keep_their_own_memory(client, server):
    def turn(history: list[dict], text: str) -> dict:
        history.append({"role": "user", "content": text})
        out = client.chat.completions.create(
            model="smollm2", messages=history, max_tokens=12, temperature=0
        )
        history.append({"role": "assistant", "content": out.choices[0].message.content})
        return out.model_extra["edge_namm"]

    a: list[dict] = [{"role": "system", "content": "You are terse."}]
    b: list[dict] = [{"role": "system", "content": "You are a poet."}]
    a1 = turn(a, "My name is Ada. Remember it.")
    b1 = turn(b, "Write a line about rain.")  # parks A: with --max-sessions 1 it goes to disk
    _, mem = _curl(server[0], "/v1/memory")
    assert a1["conversation"] in mem["sessions"]["on_disk"]
    assert list(server[1].glob("*.session"))
    a2 = turn(a, "What is my name?")  # A comes back from disk with its memory
    assert a2["conversation"] == a1["conversation"] != b1["conversation"]
    assert a2["n_tokens"] > a1["n_tokens"]
    assert a2["tokens_seen"] == a2["n_tokens"]  # nothing of A was read again
    b2 = turn(b, "Another line, about snow.")
    assert b2["conversation"] == b1["conversation"] and b2["tokens_seen"] == b2["n_tokens"]


@pytest.mark.parametrize(
    "body, status, field",
    [
        ("{not json", 400, None),
        (
            json.dumps({"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}),
            404,
            "model",
        ),
        (json.dumps({"messages": "hi"}), 400, "messages"),
        (
            json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": "many"}),
            400,
            "max_tokens",
        ),
        (
            json.dumps({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 10**9}),
            400,
            "max_tokens",
        ),
    ],
)
def test_bad_requests_get_openai_style_errors_with_curl(server, body, status, field):
    code, out = _curl(server[0], "/v1/chat/completions", body)
    assert code == status
    assert out["error"]["message"] and out["error"]["type"] == "invalid_request_error"
    assert out["error"]["param"] == field


def test_api_key_is_required(server):
    code, out = _curl(server[0], "/v1/models", key=None)
    assert code == 401 and out["error"]["code"] == "invalid_api_key"


def test_plain_completion_with_curl(server):
    code, out = _curl(
        server[0],
        "/v1/completions",
        json.dumps({"prompt": "The capital of France is", "max_tokens": 4, "temperature": 0}),
    )
    assert code == 200 and "Paris" in out["choices"][0]["text"]
