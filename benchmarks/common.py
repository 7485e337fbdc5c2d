"""Helpers shared by the benchmark scripts: timing, medians, a machine description."""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    return f"{cpu}, {os.cpu_count()} cores, {platform.system()}, load average {load}"


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def default_model() -> str:
    from edge_namm.downloads import default_model_path

    return str(default_model_path())


def needle_prompt_args(ap: argparse.ArgumentParser, prompts: int) -> None:
    """The options of the scripts that study needle prompts of the train split."""
    ap.add_argument("--model", default=None, help="GGUF file (default: the pulled SmolLM2)")
    ap.add_argument("--tasks", default="passkey,niah")
    ap.add_argument("--length", type=int, default=2048)
    ap.add_argument("--prompts", type=int, default=prompts, help="prompts per task")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
