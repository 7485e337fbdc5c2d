"""`edge-namm info`: versions, native patch, backends, default model; `--json` for scripts."""

from __future__ import annotations

import json
import platform
from importlib import metadata

import click


def cpu_build_info(system_info: str) -> dict:
    """What the CPU backend was compiled with (llama.cpp's system info), whether its AMX path is
    in, which per-CPU variant a portable build loaded, and what this CPU offers."""
    features = [
        part.split("=")[0].strip()
        for part in system_info.split("CPU :", 1)[-1].split("|")
        if part.strip().endswith("= 1")
    ]
    out: dict = {
        "cpu_features_used": features,
        "amx_compiled_in": any(f.startswith("AMX") for f in features),
    }
    try:  # a portable build (GGML_BACKEND_DL) loads one libggml-cpu-<variant>.so at run time
        with open("/proc/self/maps") as maps:
            libs = {line.rsplit("/", 1)[-1].strip() for line in maps if "libggml-cpu" in line}
        variants = sorted(
            lib[len("libggml-cpu-") :].split(".so")[0] for lib in libs if "-" in lib[11:]
        )
        out["cpu_variant"] = variants[0] if variants else "native (built for this CPU)"
    except OSError:
        out["cpu_variant"] = "unknown"
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            flags = next(
                (line.split(":", 1)[1].split() for line in cpuinfo if line.startswith("flags")), []
            )
        out["cpu_has_amx"] = "amx_int8" in flags
    except OSError:
        pass
    return out


def collect_info() -> dict:
    from edge_namm import native
    from edge_namm.downloads import MODELS, default_model_path, model_path

    def version(pkg: str) -> str | None:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return None

    info: dict = {
        "edge_namm": version("edge-namm"),
        "python": platform.python_version(),
        "llama_cpp_python": version("llama_cpp_python"),
        "numpy": version("numpy"),
        "numba": version("numba"),
        "onnxruntime": version("onnxruntime-gpu") or version("onnxruntime"),
        "native_patch": native.available(),
    }
    try:
        import llama_cpp

        info["gpu_offload"] = bool(llama_cpp.llama_supports_gpu_offload())
        info["system_info"] = llama_cpp.llama_print_system_info().decode().strip()
        backends = [
            b
            for b in ("CUDA", "Metal", "Vulkan", "ROCm", "SYCL")
            if b.upper() in info["system_info"].upper()
        ]
        info["backend"] = "+".join(backends) if backends else "CPU"
        info.update(cpu_build_info(info["system_info"]))
    except Exception as exc:  # report, don't crash: info is the tool people run when things break
        info["backend"] = f"unavailable ({exc})"
    info["flash_attention"] = "off (required: NAMM reads attention weights)"
    try:
        from edge_namm.scorers.default import default_scorer_path, scoring_backend

        info["default_scorer"] = str(default_scorer_path())
        info["scoring"] = scoring_backend()
    except Exception as exc:
        info["scoring"] = f"unavailable ({exc})"
    path = default_model_path()
    info["default_model"] = str(path)
    info["default_model_present"] = path.is_file()
    info["models_pulled"] = [name for name in MODELS if model_path(name).is_file()]
    return info


@click.command()
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def info(as_json: bool) -> None:
    """Show versions, the native patch, backends and the default model."""
    data = collect_info()
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    for key, value in data.items():
        if key == "system_info":
            continue
        click.echo(f"{key:24} {value}")
    if not data["native_patch"]:
        click.echo("\nThe native patch is missing: run ./build.sh from the edge-namm checkout.")
    if not data["default_model_present"]:
        click.echo("The default model is not downloaded yet: run `edge-namm pull`.")
