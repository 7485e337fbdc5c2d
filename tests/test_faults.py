"""Faults: `edge-namm eval` killed with SIGKILL mid-run resumes on the same command and ends with
the same results as an uninterrupted run (tiny random GGUF, so it runs in seconds)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from edge_namm.tasks import Haystack

BIN = Path(sys.executable).parent / "edge-namm"
TIMING = {"seconds_total", "seconds_llama", "seconds_namm", "seconds_recall"}


def _cmd(model: str, haystack: Path, out: Path) -> list[str]:
    return [
        str(BIN),
        "eval",
        "--model",
        model,
        "--policies",
        "full,streaming,tova+recall",
        "--budgets",
        "0.5",
        "--tasks",
        "passkey,niah",
        "--lengths",
        "300",
        "--samples",
        "3",
        "--update-interval",
        "32",
        "--chunk",
        "32",
        "--haystack",
        str(haystack),
        "--out",
        str(out),
        "--threads",
        "1",
    ]


def _rows(out: Path) -> list[dict]:
    lines = (out / "results.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines if line.strip()]
    return sorted(
        ({k: v for k, v in r.items() if k not in TIMING} for r in rows),
        key=lambda r: (r["policy"], r["task"], r["sample_id"]),
    )


def test_eval_killed_mid_run_resumes_to_the_same_results(tiny_model, tmp_path):
    haystack = tmp_path / "haystack"
    haystack.mkdir()
    (haystack / "filler.txt").write_text(" ".join(Haystack.synthetic(0).sentences))
    whole = tmp_path / "whole"
    subprocess.run(_cmd(tiny_model, haystack, whole), check=True, capture_output=True, timeout=600)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(tiny_model, haystack, killed),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    results = killed / "results.jsonl"
    deadline = time.monotonic() + 300
    while not (results.exists() and len(results.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(results.read_text().splitlines())
    assert done_before < len(_rows(whole)), "killed too late to test a resume"
    subprocess.run(_cmd(tiny_model, haystack, killed), check=True, capture_output=True, timeout=600)
    assert _rows(killed) == _rows(whole)
