"""A native crash inside the CLI says what it is and what to do, besides the traceback."""

from __future__ import annotations

import subprocess
import sys


def test_native_crash_prints_the_note_and_a_traceback():
    code = (
        "from edge_namm.cli.main import _arm_crash_reports\n"
        "_arm_crash_reports()\n"
        "import ctypes\n"
        "ctypes.string_at(0)  # a segfault in native code\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.returncode != 0
    assert "native crash inside llama.cpp" in out.stderr
    assert "edge-namm info --json" in out.stderr
    assert "Fatal Python error" in out.stderr and "line 4" in out.stderr  # faulthandler's traceback
