"""Check the edge-namm native patch on a GPU build of llama.cpp, layers offloaded.

Runs against a random-weight llama GGUF written by tests/tiny_gguf.py (or --model), with
n_gpu_layers=-1 for the "gpu" side and n_gpu_layers=0 (op_offload off) for the "cpu" side of
the same build, in one process:

  a) edge_namm.native.require() and what the build reports (system info, offload support);
  b) attention capture: native GQA-averaged rows vs an independent Python eval callback that
     copies kq_soft_max with ggml_backend_tensor_get (works for device tensors), and vs the
     native capture of the CPU path; the tests/test_native.py checks that need no host data
     pointer are run as-is on the GPU context; the GQA mean computed on the device vs on the
     host (same rows) and the bytes each reads per chunk;
  c) KV-slot removal and the cell map on the GPU-resident cache, and a 3,000-token periodic
     removal schedule on 512 cells compared between GPU and CPU (positions, logits, keys);
  d) NammLlama(policy="namm") with a small budget on a prompt 8x the budget: cells after
     every update never exceed the budget, and generation works;
  e) prefill/decode tokens/s, plain Llama and NammLlama, CPU-only vs GPU;
  f) ONNX Runtime's providers there and the one the namm scorer uses; the default scorer on
     --onnx-providers (CUDAExecutionProvider on the device) vs numpy;
  h) end to end at --lengths input tokens, 25% budget: plain, full, namm, namm+recall (tokens/s,
     NAMM share, attention bytes read per chunk, GPU memory).

    python benchmarks/device_cuda_check.py --preset smollm2-135m --out OUT   # on the GPU box
    python benchmarks/device_cuda_check.py --preset tiny --gpu-layers 0 --threads 1  # CPU smoke

Writes device_cuda_check.json and device_cuda_check.md into --out; exits 1 if a check failed.
benchmarks/device_cuda_check.sh builds the CUDA llama-cpp-python and runs this on the device.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
for _p in (ROOT / "tests", ROOT):
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

import llama_cpp  # noqa: E402
import llama_cpp.llama_cpp as low  # noqa: E402
import test_native as tn  # noqa: E402  (its tensor struct and test functions are reused)
from tiny_gguf import PRESETS, write_llama_gguf  # noqa: E402

from edge_namm import native  # noqa: E402

COUNTING_TEXT = " ".join(str(i) for i in range(1, 4000))  # tests/conftest.py's counting_text
CAPTURE_PROMPT = b"Edge devices run small language models with bounded memory. " * 3


# --- helpers ---------------------------------------------------------------------------------
class Report:
    def __init__(self, out: Path) -> None:
        self.out = out
        self.data: dict = {"checks": {}, "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}

    only: frozenset[str] = frozenset()  # run just these checks (--only); empty: all

    def run(self, name: str, fn, *args, **kwargs):
        if self.only and name not in self.only:
            return None
        print(f"--- {name}", flush=True)
        t0 = time.perf_counter()
        entry: dict = {}
        try:
            details = entry["details"] = fn(*args, **kwargs)
            failed = details.get("failed_expectations") if isinstance(details, dict) else None
            entry["ok"] = not failed
            if failed:
                entry["error"] = "; ".join(failed)
        except Exception as exc:  # a failed check is reported, the others still run
            entry["ok"] = False
            entry["error"] = f"{type(exc).__name__}: {exc}"
            entry["traceback"] = traceback.format_exc()
            print(entry["traceback"], flush=True)
        entry["seconds"] = round(time.perf_counter() - t0, 2)
        self.data["checks"][name] = entry
        print(json.dumps({k: v for k, v in entry.items() if k != "traceback"}, default=str))
        self.save()
        return entry.get("details")

    def save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "device_cuda_check.json").write_text(
            json.dumps(self.data, indent=2, default=str)
        )


def expect(result: dict, condition: bool, what: str) -> None:
    """Record a failed expectation in the result (kept with all its numbers) instead of
    raising, so that a failing check still reports what it measured."""
    if not condition:
        result.setdefault("failed_expectations", []).append(what)


def make_llama(model_path: str, ngl: int, threads: int, n_ctx: int = tn.N_CTX, **kw):
    """test_native's context shape (n_ctx 512, batches of 128) on the chosen device."""
    return llama_cpp.Llama(
        model_path,
        n_ctx=n_ctx,
        n_batch=kw.pop("n_batch", 128),
        n_ubatch=kw.pop("n_ubatch", 128),
        n_gpu_layers=ngl,
        n_threads=threads,
        n_threads_batch=threads,
        op_offload=ngl != 0,  # ngl=0 means CPU only: no weight-less ops sent to the GPU either
        verbose=kw.pop("verbose", False),
        **kw,
    )


@contextlib.contextmanager
def stderr_to(path: Path):
    """Redirect fd 2 (llama.cpp's log) into a file for the duration."""
    sys.stderr.flush()
    saved = os.dup(2)
    with open(path, "wb") as f:
        os.dup2(f.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)


def nvidia_smi(*query: str) -> str | None:
    try:
        return subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(query)}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


# --- checks ----------------------------------------------------------------------------------
def check_environment(args) -> dict:
    lib = native.require()
    info = {
        "native_api_version": lib.edge_namm_api_version(),
        "llama_cpp_version": llama_cpp.__version__,
        "llama_cpp_file": llama_cpp.__file__,
        "supports_gpu_offload": bool(low.llama_supports_gpu_offload()),
        "system_info": low.llama_print_system_info().decode(),
        "libs": sorted(p.name for p in (Path(llama_cpp.__file__).parent / "lib").glob("*.so")),
        "python": platform.python_version(),
        "gpu": nvidia_smi("name", "driver_version", "memory.total"),
        "cpu_count": os.cpu_count(),
    }
    if args.gpu_layers != 0:
        assert info["supports_gpu_offload"], "this llama.cpp build cannot offload to a GPU"
    return info


def check_offload(args, model_path: str) -> dict:
    """Load with verbose logging and read how many layers llama.cpp put on the GPU."""
    log = args.out / "offload_load.log"
    before = nvidia_smi("memory.used")
    with stderr_to(log):
        llm = make_llama(model_path, args.gpu_layers, args.threads, verbose=args.verbose_load)
    after = nvidia_smi("memory.used")
    llm.close()
    lines = [ln for ln in log.read_text(errors="replace").splitlines() if "offload" in ln]
    log.unlink()
    return {"log_lines": lines, "gpu_memory_used_before": before, "gpu_memory_used_loaded": after}


def check_capture_vs_reference(args, model_path: str) -> dict:
    """Native rows on the GPU path vs the Python reference on the same path (same data, so
    exact up to float summation order), and vs the native capture of the CPU path."""
    gpu = make_llama(model_path, args.gpu_layers, args.threads)
    cpu = make_llama(model_path, 0, args.threads)
    n_head_kv = low.llama_model_n_head_kv(gpu._model.model)
    sink: dict = {}
    ref = tn.python_capture_llama(
        lambda: make_llama(model_path, args.gpu_layers, args.threads), n_head_kv, sink
    )
    caps = {
        "gpu": native.AttentionCapture(gpu._ctx.ctx, max_queries=128),
        "cpu": native.AttentionCapture(cpu._ctx.ctx, max_queries=128),
    }
    err_ref, n_rows, host_flags = 0.0, 0, []
    err_cpu = None
    try:
        prompt = ref.tokenize(CAPTURE_PROMPT)
        for cap in caps.values():
            cap.arm()
        for piece in (prompt, [prompt[-1]], [prompt[0]], prompt[1:9]):
            sink.clear()
            for model in (ref, gpu, cpu):
                model.eval(piece)
            rows = caps["gpu"].rows()
            rows_cpu = caps["cpu"].rows()
            host_flags += sink.pop("host")
            layers = sorted(sink)
            assert len(layers) == rows.shape[0], (len(layers), rows.shape)
            for il in layers:
                expected = sink[il][0]  # [H_kv, n_tok, n_kv]
                n_kv = expected.shape[-1]
                err_ref = max(err_ref, float(np.abs(rows[il, :, :, :n_kv] - expected).max()))
                assert np.all(rows[il, :, :, n_kv:] == 0)
            per_layer = np.abs(rows - rows_cpu).max(axis=(1, 2, 3))
            err_cpu = per_layer if err_cpu is None else np.maximum(err_cpu, per_layer)
            n_rows += rows.shape[2]
            for cap in caps.values():
                cap.clear()
    finally:
        for cap in caps.values():
            cap.close()
        for model in (gpu, cpu, ref):
            model.close()
    result = {
        "query_rows": n_rows,
        "max_abs_err_native_vs_reference_same_path": err_ref,
        # informational: the two paths' forward passes differ numerically (cuBLAS vs CPU
        # kernels) and deep random networks amplify that layer after layer
        "max_abs_diff_gpu_vs_cpu_native": float(err_cpu.max()),
        "max_abs_diff_gpu_vs_cpu_native_per_layer": [float(x) for x in err_cpu],
        "softmax_tensors_seen": len(host_flags),
        "softmax_tensors_in_device_memory": host_flags.count(False),
    }
    expect(result, err_ref <= 1e-5, "native rows differ from the reference on the same path")
    if args.gpu_layers != 0:
        expect(
            result,
            host_flags.count(False) == len(host_flags),
            "softmax ran on the host, not the GPU",
        )
    return result


def check_device_group_mean(args, model_path: str) -> dict:
    """Rows read from the graph's GQA mean node vs the whole softmax averaged on the host, on
    this path: equal, and the bytes read per 128-token chunk at ~N cells (what crosses from the
    GPU to the host) shrink by the group size."""
    result: dict = {}
    rows = {}
    for device_mean in (True, False):
        llm = make_llama(model_path, args.gpu_layers, args.threads, n_ctx=2048)
        cap = native.AttentionCapture(llm._ctx.ctx, max_queries=128)
        try:
            cap.set_device_mean(device_mean)
            rng = np.random.default_rng(0)
            tokens = rng.integers(100, llm.n_vocab() - 100, size=1024).tolist()
            llm.eval(tokens[:896])  # ~1k cells in use, disarmed
            cap.arm()
            llm.eval(tokens[896:])  # one captured chunk of 128 queries
            rows[device_mean] = cap.rows().copy()
            result[f"bytes_per_chunk_{'device' if device_mean else 'host'}_mean"] = cap.bytes_read
            result["group"] = low.llama_model_n_head(llm._model.model) // cap.n_head_kv
        finally:
            cap.close()
            llm.close()
    result["max_abs_diff"] = float(np.abs(rows[True] - rows[False]).max())
    ratio = result["bytes_per_chunk_host_mean"] / max(1, result["bytes_per_chunk_device_mean"])
    result["bytes_ratio"] = ratio
    expect(result, result["max_abs_diff"] <= 1e-6, "device and host GQA means differ")
    expect(result, ratio == result["group"], "bytes read should shrink by the GQA group size")
    return result


def check_test_native_on_device(args, model_path: str) -> dict:
    """tests/test_native.py's checks that need no host data pointer, on this device."""
    llm = make_llama(model_path, args.gpu_layers, args.threads)
    names = [
        "test_attention_rows_shape_sums_and_causality",
        "test_disarmed_capture_records_nothing",
        "test_capture_overflow_is_reported",
        "test_cell_map_after_removal_and_reuse",
        "test_removing_newest_position_is_refused",
        "test_read_keys",
    ]
    passed = []
    try:
        for name in names:
            fn = getattr(tn, name)
            if "counting_text" in fn.__code__.co_varnames[: fn.__code__.co_argcount]:
                fn(llm, COUNTING_TEXT)
            else:
                fn(llm)
            passed.append(name)
    finally:
        llm.close()
    return {"passed": passed}


def check_test_native_host_reference(args, model_path: str) -> dict:
    """test_native's own host-pointer reference comparison, on the CPU path of this build."""
    llm = make_llama(model_path, 0, args.threads)
    saved = tn._llama
    tn._llama = lambda path, **kw: make_llama(path, 0, args.threads, **kw)
    try:
        tn.test_capture_equals_independent_python_callback(model_path, llm)
    finally:
        tn._llama = saved
        llm.close()
    return {"passed": ["test_capture_equals_independent_python_callback (n_gpu_layers=0)"]}


def removal_schedule(llm, tokens: list[int], chunk: int = 128, n_sink: int = 4) -> dict:
    """test_native's 3,000 tokens through 512 cells with periodic removal, then 4 greedy steps."""
    ctx = llm._ctx.ctx
    t0 = time.perf_counter()
    removed = tn.eval_with_periodic_removal(llm, tokens, chunk, n_sink)
    seconds = time.perf_counter() - t0
    pos = native.cell_positions(ctx)
    logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),)).copy()
    n_embd_k = low.llama_model_n_head_kv(llm._model.model) * (
        llm.n_embd() // low.llama_model_n_head(llm._model.model)
    )
    keys = native.read_keys(ctx, 0, len(pos), n_embd_k)[pos >= 0]
    greedy = []
    for _ in range(4):
        step = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        greedy.append(int(np.argmax(step)))
        llm.eval(greedy[-1:])
    return {
        "pos": pos,
        "logits": logits,
        "keys": keys,
        "greedy": greedy,
        "removed": removed,
        "seconds": seconds,
    }


def check_removal_schedule(args, model_path: str) -> dict:
    gpu = make_llama(model_path, args.gpu_layers, args.threads)
    cpu = make_llama(model_path, 0, args.threads)
    try:
        tokens = gpu.tokenize(COUNTING_TEXT.encode())[: args.schedule_tokens]
        g = removal_schedule(gpu, tokens)
        c = removal_schedule(cpu, tokens)
    finally:
        gpu.close()
        cpu.close()
    live = g["pos"] >= 0
    result = {
        "tokens": len(tokens),
        "cells": int(len(g["pos"])),
        "live_cells_at_end": int(live.sum()),
        "cells_freed_by_removal": g["removed"],
        "same_cell_map_gpu_cpu": bool(np.array_equal(g["pos"], c["pos"])),
        "logits_max_abs_diff_gpu_cpu": float(np.abs(g["logits"] - c["logits"]).max()),
        "logits_max_abs": float(np.abs(c["logits"]).max()),
        "keys_layer0_max_abs_diff_gpu_cpu": float(np.abs(g["keys"] - c["keys"]).max()),
        "greedy_gpu": g["greedy"],
        "greedy_cpu": c["greedy"],
        "seconds_gpu": round(g["seconds"], 3),
        "seconds_cpu": round(c["seconds"], 3),
    }
    expect(result, len(tokens) == args.schedule_tokens, "tokenizer produced too few tokens")
    expect(result, result["live_cells_at_end"] <= tn.N_CTX, "more live cells than the context")
    expect(result, result["same_cell_map_gpu_cpu"], "removal left different cells on GPU, CPU")
    expect(result, bool(np.all(np.isfinite(g["logits"]))), "non-finite logits on the GPU")
    # logits/keys GPU-vs-CPU differences are reported, not judged (see check b)
    return result


def check_namm_budget(args, model_path: str, ngl: int) -> dict:
    from edge_namm.engine import NammLlama

    budget, interval, chunk = args.budget, args.update_interval, args.chunk
    llm = NammLlama(
        model_path,
        policy="namm",
        budget=budget,
        update_interval=interval,
        chunk=chunk,
        n_gpu_layers=ngl,
        n_threads=args.threads,
        n_threads_batch=args.threads,
        op_offload=ngl != 0,
    )
    after_update: list[int] = []
    occupancy: list[int] = []

    def observe(view, evict):
        after_update.append(view.n - len(evict))
        occupancy.append(int((native.cell_positions(llm._ctx.ctx) >= 0).sum()))

    llm.memory.on_update.append(observe)
    try:
        prompt = llm.tokenize(COUNTING_TEXT.encode())[: args.namm_prompt]
        t0 = time.perf_counter()
        out = llm.create_completion(prompt, max_tokens=args.namm_gen, temperature=0.0)
        seconds = time.perf_counter() - t0
        stats = llm.stats
        live_end = int((native.cell_positions(llm._ctx.ctx) >= 0).sum())
        scorer = getattr(llm.policy, "scorer", None)
        result = {
            "n_gpu_layers": ngl,
            "budget": budget,
            "update_interval": interval,
            "chunk": chunk,
            "prompt_tokens": len(prompt),
            "completion_tokens": out["usage"]["completion_tokens"],
            "text": out["choices"][0]["text"],
            "updates": len(after_update),
            "max_cells_after_update": max(after_update) if after_update else None,
            "max_live_cells_seen_at_update": max(occupancy) if occupancy else None,
            "live_cells_at_end": live_end,
            "physical_cells": llm._ctx.n_ctx() if hasattr(llm._ctx, "n_ctx") else None,
            "tokens_evicted": stats.tokens_evicted,
            "seconds_total": round(seconds, 3),
            "seconds_namm": round(stats.seconds_namm, 3),
            "seconds_llama": round(stats.seconds_llama, 3),
            "tokens_per_second_end_to_end": round(
                (len(prompt) + out["usage"]["completion_tokens"]) / seconds, 1
            ),
            "scorer": repr(scorer),
        }
    finally:
        llm.memory.on_update.clear()
        llm.close()
    expect(result, result["prompt_tokens"] >= 8 * budget, "prompt shorter than 8x the budget")
    expect(result, result["updates"] >= result["prompt_tokens"] // interval, "too few updates")
    expect(result, result["max_cells_after_update"] <= budget, "cells exceeded the budget")
    expect(result, stats.max_cells_after_update <= budget, "stats: cells exceeded the budget")
    expect(result, result["live_cells_at_end"] <= budget + interval, "too many live cells")
    expect(
        result,
        result["tokens_evicted"] >= len(prompt) - budget - interval,
        "too few tokens evicted",
    )
    expect(result, result["completion_tokens"] > 0, "nothing generated")
    return result


def bench_plain(args, model_path: str, ngl: int) -> dict:
    n_prompt, n_gen = args.bench_prompt, args.bench_gen
    llm = make_llama(
        model_path, ngl, args.threads, n_ctx=n_prompt + n_gen + 16, n_batch=512, n_ubatch=512
    )
    try:
        rng = np.random.default_rng(0)
        tokens = rng.integers(259, llm.n_vocab(), n_prompt).tolist()  # skip control/byte ids
        llm.reset()
        llm.eval(tokens[:64])  # warm-up (CUDA kernels, buffers)
        llm.eval(tokens[64:72])
        prefill, decode = [], []
        for _ in range(args.bench_reps):
            llm.reset()
            t0 = time.perf_counter()
            llm.eval(tokens)
            prefill.append(n_prompt / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for i in range(n_gen):
                llm.eval([tokens[i]])
            decode.append(n_gen / (time.perf_counter() - t0))
    finally:
        llm.close()
    return {
        "n_gpu_layers": ngl,
        "prompt_tokens": n_prompt,
        "generated_tokens": n_gen,
        "repeats": args.bench_reps,
        "prefill_tokens_per_s_median": round(statistics.median(prefill), 1),
        "decode_tokens_per_s_median": round(statistics.median(decode), 1),
        "prefill_all": [round(x, 1) for x in prefill],
        "decode_all": [round(x, 1) for x in decode],
    }


def check_onnxruntime() -> dict:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        return {"onnxruntime": None, "error": str(exc)}
    from edge_namm.scorers.runtime import auto_providers

    return {
        "onnxruntime": ort.__version__,
        "available_providers": ort.get_available_providers(),
        "edge_namm_auto_providers": auto_providers(),
        "device": ort.get_device(),
    }


def check_onnx_provider_parity(providers: str) -> dict:
    """The default scorer scored by ONNX Runtime on `providers` (CUDA on the device) vs numpy,
    on features the size of a SmolLM2 update at 1k cells (90 rows x 1,024 cells x 25)."""
    from edge_namm.scorers.default import default_scorer_path
    from edge_namm.scorers.file import load_scorer
    from edge_namm.scorers.runtime import compile_scorer

    scorer = load_scorer(default_scorer_path())
    onnx = compile_scorer(scorer, backend="onnx", providers=providers)
    x = np.random.default_rng(0).normal(size=(90, 1024, 25)).astype(np.float32)
    ref, got = scorer.score(x), onnx.score(x)
    onnx.score(x)  # warm
    t0 = time.perf_counter()
    onnx.score(x)
    result = {
        "requested": providers,
        "provider": onnx.info().get("provider"),
        "max_abs_diff_vs_numpy": float(np.abs(ref - got).max()),
        "max_abs_score": float(np.abs(ref).max()),
        "seconds_per_update": round(time.perf_counter() - t0, 4),
    }
    # float32 sums in another order: relative to the scores' scale, as tests/test_onnx.py
    tolerance = 1e-4 * max(1.0, result["max_abs_score"])
    expect(result, result["max_abs_diff_vs_numpy"] <= tolerance, "ONNX scores differ from numpy")
    return result


def gpu_memory_mib() -> int | None:
    """GPU memory in use (nvidia-smi), None without a GPU."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        )
        return int(out.stdout.split()[0])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired):
        return None


def bench_lengths(args, model_path: str, ngl: int) -> dict:
    """End to end at each of --lengths input tokens (+64 generated), 25% budget: plain
    llama-cpp-python, NammLlama full cache, namm, namm+recall. Per run: tokens/s, the NAMM share
    of the time, attention bytes read per capture chunk (what crosses from the GPU), GPU memory."""
    from edge_namm import NammLlama
    from edge_namm.eval.budgets import full_cache_cells

    rows = []
    for length in (int(x) for x in args.lengths.split(",")):
        full_cells = full_cache_cells(length + 64 + 256)
        runs = {
            "plain": None,
            "full": dict(policy="full", budget=full_cells),
            "namm": dict(policy="namm", budget=length // 4),
            "namm+recall": dict(policy="namm", budget=length // 4, recall=True),
        }
        for name, kw in runs.items():
            common = dict(n_gpu_layers=ngl, n_threads=args.threads, verbose=False)
            if kw is None:
                llm = llama_cpp.Llama(
                    model_path, n_ctx=full_cells, n_batch=512, n_ubatch=512, **common
                )
            else:
                llm = NammLlama(model_path, n_threads_batch=args.threads, **kw, **common)
            try:
                vocab = min(llm.n_vocab(), 10_000)
                tokens = np.random.default_rng(length).integers(259, vocab, length).tolist()
                llm.eval(tokens[:32])  # warm-up
                if kw is None:
                    llm.reset()
                else:
                    llm.reset(stats=True)
                cap = getattr(getattr(llm, "memory", None), "capture", None)
                bytes0 = cap.bytes_read if cap is not None else 0
                t0 = time.perf_counter()
                llm.eval(tokens)
                for i in range(64):
                    llm.eval([tokens[i]])
                seconds = time.perf_counter() - t0
                row = {
                    "length": length,
                    "run": name,
                    "tokens_per_s": round((length + 64) / seconds, 1),
                }
                row["seconds"] = round(seconds, 2)
                row["gpu_memory_mib"] = gpu_memory_mib()
                if kw is not None:
                    st = llm.stats
                    row["namm_share"] = round(st.seconds_namm / seconds, 3)
                    if cap is not None:
                        chunks = -(-length // llm.chunk)
                        per_chunk = (cap.bytes_read - bytes0) / chunks / 2**20
                        row["bytes_read_per_chunk_mib"] = round(per_chunk, 1)
                    row["tokens_recalled"] = int(st.tokens_recalled)
            finally:
                llm.close()
            rows.append(row)
            print(json.dumps(row), flush=True)
    return {"rows": rows}


# --- driver ----------------------------------------------------------------------------------
def write_markdown(report: Report) -> None:
    d = report.data
    lines = [f"# edge-namm CUDA check ({d.get('started')})", ""]
    for name, entry in d["checks"].items():
        status = "ok" if entry["ok"] else f"FAILED: {entry.get('error')}"
        lines.append(f"## {name}: {status} ({entry['seconds']} s)")
        if entry.get("details") is not None:
            lines += ["```json", json.dumps(entry["details"], indent=1, default=str), "```"]
        lines.append("")
    (report.out / "device_cuda_check.md").write_text("\n".join(lines))


def check_iswa(args, model_path: str, ngl: int) -> dict:
    """A random Gemma 3 (iSWA cache) offloaded: capture layers, full policy = plain Llama,
    then the namm budget check of d) on it."""
    from edge_namm.engine import NammLlama

    llm = NammLlama(
        model_path,
        policy="full",
        budget=256,
        update_interval=64,
        chunk=64,
        n_gpu_layers=ngl,
        n_threads=args.threads,
        op_offload=ngl != 0,
    )
    plain = make_llama(model_path, ngl, args.threads, n_ctx=llm.n_ctx(), n_batch=64, n_ubatch=64)
    try:
        layers = llm.memory.capture.layers
        prompt = "edge devices run small language models with bounded memory " * 6
        kw = dict(max_tokens=24, temperature=0.0, seed=3)
        ours = llm.create_completion(prompt, **kw)["choices"][0]["text"]
        ref = plain.create_completion(prompt, **kw)["choices"][0]["text"]
    finally:
        llm.close()
        plain.close()
    result = {"capture_layers": layers, "full_text": ours, "plain_text": ref}
    expect(result, layers == [5, 11], "capture should cover layers 5 and 11 only")
    expect(result, ours == ref and len(ours) > 0, "full policy differs from plain Llama")
    result["namm"] = check_namm_budget(args, model_path, ngl)
    expect(result, not result["namm"].get("failed_expectations"), "namm budget check failed")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="GGUF to use (default: write a random one, --preset)")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="tiny")
    parser.add_argument("--gpu-layers", type=int, default=-1)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "out")))
    parser.add_argument("--schedule-tokens", type=int, default=3000)
    parser.add_argument("--budget", type=int, default=128)
    parser.add_argument("--update-interval", type=int, default=64)
    parser.add_argument("--chunk", type=int, default=32)
    parser.add_argument("--namm-prompt", type=int, default=1536)
    parser.add_argument("--namm-gen", type=int, default=32)
    parser.add_argument("--bench-prompt", type=int, default=512)
    parser.add_argument("--bench-gen", type=int, default=64)
    parser.add_argument("--bench-reps", type=int, default=3)
    parser.add_argument("--skip-bench", action="store_true")
    parser.add_argument(
        "--lengths",
        default="4096,8192",
        help="input lengths of the end-to-end benchmark ('' skips)",
    )
    parser.add_argument("--onnx-providers", default="auto", help="e.g. CUDAExecutionProvider")
    parser.add_argument("--only", default="", help="comma list of checks to run (default: all)")
    parser.add_argument("--verbose-load", action="store_true")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    report = Report(args.out)
    report.only = frozenset(x for x in args.only.split(",") if x)
    report.data["args"] = {k: str(v) for k, v in vars(args).items()}

    with tempfile.TemporaryDirectory() as tmp:
        model_path = args.model
        if model_path is None:
            t0 = time.perf_counter()
            model_path = str(
                write_llama_gguf(Path(tmp) / f"{args.preset}.gguf", **PRESETS[args.preset])
            )
            report.data["model"] = {
                "preset": args.preset,
                **PRESETS[args.preset],
                "bytes": os.path.getsize(model_path),
                "seconds_to_write": round(time.perf_counter() - t0, 2),
            }
        else:
            report.data["model"] = {"path": model_path}
        print("model:", report.data["model"], flush=True)

        report.run("a_native_require", check_environment, args)
        report.run("a_offload", check_offload, args, model_path)
        report.run("b_capture_vs_reference", check_capture_vs_reference, args, model_path)
        report.run("b_c_test_native_on_device", check_test_native_on_device, args, model_path)
        report.run("b_device_group_mean", check_device_group_mean, args, model_path)
        report.run(
            "b_test_native_host_reference_cpu", check_test_native_host_reference, args, model_path
        )
        report.run("c_removal_schedule_gpu_vs_cpu", check_removal_schedule, args, model_path)
        report.run("d_namm_budget_gpu", check_namm_budget, args, model_path, args.gpu_layers)
        if not args.skip_bench:
            report.run("e_bench_plain_cpu", bench_plain, args, model_path, 0)
            report.run("e_bench_plain_gpu", bench_plain, args, model_path, args.gpu_layers)
            report.run("e_namm_cpu", check_namm_budget, args, model_path, 0)
            # again on the GPU, now that numba's kernels are compiled (d paid for that)
            report.run("e_namm_gpu", check_namm_budget, args, model_path, args.gpu_layers)
        report.run("f_onnxruntime", check_onnxruntime)
        report.run("f_onnx_provider_parity", check_onnx_provider_parity, args.onnx_providers)
        if args.lengths:
            report.run("h_lengths", bench_lengths, args, model_path, args.gpu_layers)
        gemma = str(write_llama_gguf(Path(tmp) / "gemma3.gguf", **PRESETS["tiny-gemma3"]))
        report.run("g_iswa_gemma3_gpu", check_iswa, args, gemma, args.gpu_layers)

    report.data["finished"] = time.strftime("%Y-%m-%d %H:%M:%S %Z")
    report.save()
    write_markdown(report)
    failed = [k for k, v in report.data["checks"].items() if not v["ok"]]
    print("FAILED:" if failed else "ALL CHECKS PASSED", " ".join(failed), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
