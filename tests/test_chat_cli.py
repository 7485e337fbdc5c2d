"""`edge-namm chat` driven through a pseudo-terminal, as a user would."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pexpect
import pytest

BIN = Path(sys.executable).parent / "edge-namm"


def _run(args: str, timeout: int = 60, env: dict | None = None) -> tuple[str, int]:
    """`edge-namm ARGS` run to the end in a pseudo-terminal: its output and exit status."""
    return pexpect.run(
        f"{BIN} {args}", withexitstatus=True, encoding="utf-8", timeout=timeout, env=env
    )


@pytest.fixture
def chat(model_path, tmp_path):
    child = pexpect.spawn(
        str(BIN),
        [
            "chat",
            "--model",
            model_path,
            "--budget",
            "256",
            "--update-interval",
            "128",
            "--max-tokens",
            "48",
            "--temperature",
            "0",
        ],
        encoding="utf-8",
        timeout=120,
        cwd=str(tmp_path),
        # a shell that starts the test run in the background hands on SIGINT ignored; the chat
        # is checked as a user runs it, with Ctrl-C delivered
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    child.expect("budget 256 cells")
    child.expect("> ")
    yield child
    child.close(force=True)


def test_chat_answers_shows_status_survives_ctrl_c_and_exits_on_eof(chat, tmp_path, model_path):
    chat.sendline("What is the capital of France?")
    chat.expect(r"\[kv (\d+) cells \(budget 256 after each update, at most (\d+) so far")
    assert int(chat.match.group(2)) <= 256  # the budget holds, as the status line shows it
    chat.expect("> ")
    # a long reply interrupted by Ctrl-C: the session goes on
    chat.sendline("Write a very long story about a dragon, with many chapters.")
    # wait past the terminal's echo for the reply itself: a Ctrl-C that lands before the chat
    # has read the line flushes it from the terminal instead of interrupting a reply
    chat.expect(r"chapters\.\r\n")
    chat.expect(r"\S")  # the reply has started streaming
    chat.sendintr()
    chat.expect(r"\[interrupted\]")
    chat.expect("> ")
    chat.sendline("/memory")
    chat.expect(r"tokens kept\)")
    chat.expect("> ")
    chat.sendline("/save transcript.session")
    chat.expect("saved 5 messages")
    chat.expect("> ")
    chat.sendeof()
    chat.expect(pexpect.EOF)
    chat.close()
    assert chat.exitstatus == 0
    from edge_namm import NammLlama

    llm = NammLlama(model_path, budget=256, update_interval=128, recall=True)
    try:  # the session continues in a new process with the conversation and its memory
        messages = llm.load_session(tmp_path / "transcript.session")["messages"]
        assert "dragon" in messages[3]["content"] and llm.n_tokens > 0
    finally:
        llm.close()


def test_chat_without_model_says_how_to_pull(tmp_path):
    out, status = _run(f"chat --model {tmp_path}/absent.gguf")
    assert status != 0
    assert "model file not found" in out and "edge-namm pull" in out
    assert "Traceback" not in out


def test_chat_model_by_catalog_name(tmp_path, model_path):
    """--model accepts the names `edge-namm pull` knows; a name not pulled yet says which pull
    to run (an empty cache here), the default name resolves to the pulled default model."""
    env = {**os.environ, "EDGE_NAMM_CACHE": str(tmp_path)}
    out, status = _run("chat --model gemma3-270m", env=env)
    assert status != 0 and "edge-namm pull gemma3-270m" in out and "Traceback" not in out
    from edge_namm.cli.options import resolve_model
    from edge_namm.downloads import default_model_path

    if default_model_path().is_file():
        assert resolve_model("smollm2-135m") == resolve_model(None) == str(default_model_path())
    assert resolve_model(str(model_path)) == str(model_path)  # paths pass through


def test_chat_budget_too_small_is_one_line(model_path):
    out, status = _run(f"chat --model {model_path} --budget 8")
    assert status != 0 and "too small" in out and "Traceback" not in out


def test_info_reports_patch_backend_and_pulled_models(tmp_path):
    import json

    env = {**os.environ, "EDGE_NAMM_CACHE": str(tmp_path)}
    out, status = _run("info --json", timeout=30, env=env)
    assert status == 0, out
    data = json.loads(out[out.index("{") :])
    assert data["native_patch"] is True and data["backend"]
    assert data["default_model_present"] is False and data["models_pulled"] == []
    assert data["default_model"].startswith(str(tmp_path))
    out, status = _run("info", timeout=30, env=env)
    assert status == 0 and "run `edge-namm pull`" in out


def test_ctrl_c_during_prefill_leaves_a_usable_conversation(chat):
    """A long pasted message interrupted while it is being read: the chat goes on and the next
    turn is answered (the half-read message is re-read or dropped, never corrupts the cache)."""
    chat.sendline("Summarise this: " + "the cat sat on the mat and looked at the moon. " * 70)
    chat.expect(r"moon\. \r\n")  # past the terminal's echo of the line
    chat.expect("prefill")  # the progress bar: the message is being read now
    chat.sendintr()
    chat.expect(r"\[interrupted\]")
    chat.expect("> ")
    chat.sendline("What is the capital of France?")
    chat.expect(r"\[kv (\d+) cells")
    chat.expect("> ")
    chat.sendline("/memory")
    chat.expect(r"tokens kept\)")
