"""Does a portable build run, and give the same answer, on CPUs this machine is not?

`./build.sh --portable` ships one libggml-cpu-<variant>.so per x86-64 generation and picks one
at load from CPUID. This script runs the same short edge-namm job (a NAMM-managed cache over
real text: prefill, two memory updates, the logits of the last token) natively and then under
QEMU's user-mode emulation with older or other CPU models (`qemu-x86_64 -cpu <model>`; QEMU
answers CPUID for that model, so ggml, Numba and ONNX Runtime all dispatch as they would on
it). Each run reports the variant that loaded, and its logits and kept tokens are compared with
the native run's.

    apt-get install qemu-user   # QEMU 7.2 or newer emulates AVX2, not AVX-512
    python benchmarks/emulated_cpus.py --python .venv-portable/bin/python \\
        --cpus Nehalem,Haswell,EPYC-Rome

Emulation is slow (tens of times); the job is kept small. Most of an emulated run is Numba
compiling the feature kernels for the emulated CPU (~10 min each); `--numba-cpu generic` compiles
them once for any x86-64 and lets the later runs reuse that cache.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import default_model, machine  # noqa: E402

TEXT = Path(__file__).resolve().parent.parent / "README.md"
# the rule tests/test_backend.py holds two kernels of one build to: quantized kernels differ in
# rounding, a wrong one in everything
MIN_CORRELATION = 0.999


def child(model: str, n_tokens: int) -> dict:
    """The job itself: runs in the process being emulated; returns what the parent compares."""
    from edge_namm import NammLlama
    from edge_namm.cli.info import collect_info

    llm = NammLlama(
        model, policy="namm", budget=64, update_interval=32, chunk=32, n_threads=1, verbose=False
    )
    first: dict = {}  # the first update's scores: every CPU scores the same tokens there
    score = llm.policy.score

    def last_logits() -> np.ndarray:
        logits = np.ctypeslib.as_array(llm._ctx.get_logits_ith(-1), shape=(llm.n_vocab(),))
        return np.array(logits, dtype=np.float32)

    def recording(view: Any) -> Any:
        if not first:  # the cache holds the same tokens on every CPU until this update
            first["logits"] = last_logits().tolist()
        out = score(view)
        first.setdefault("scores", np.asarray(out, dtype=np.float64).tolist())
        first.setdefault("positions", view.positions.tolist())
        spec = view.per_head(view.features.spectrogram)
        first.setdefault("spectrogram", spec.ravel().tolist())
        return out

    llm.policy.score = recording
    try:
        tokens = llm.tokenize(TEXT.read_bytes()[:4000])[:n_tokens]
        t0 = time.perf_counter()
        llm.eval(tokens)
        seconds = time.perf_counter() - t0
        logits = last_logits()  # after evictions that may differ between CPUs (near-ties)
        info = collect_info()
        return {
            "variant": info.get("cpu_variant"),
            "features": info.get("cpu_features_used"),
            "seconds": seconds,
            "kept": llm.kept_positions().tolist(),
            "updates": llm.memory.stats.updates,
            "logits": logits.tolist(),
            "first_logits": first["logits"],
            "scores": first["scores"],
            "scored_positions": first["positions"],
            "spectrogram": first["spectrogram"],
        }
    finally:
        llm.close()


def parts() -> dict:
    """Each numeric part alone on fixed inputs: the STFT/EMA fold (Numba) and the default
    scorer in numpy and in ONNX Runtime, to tell which one a difference comes from."""
    from edge_namm.features import AttentionFeatures, raw_features
    from edge_namm.scorers import load_scorer
    from edge_namm.scorers.default import default_scorer_path
    from edge_namm.scorers.runtime import compile_scorer

    rng = np.random.default_rng(0)
    state = AttentionFeatures(4, 3, 256)
    state.fold(rng.dirichlet(np.ones(256), size=(4, 3, 64)).astype(np.float32))
    spec = state.spectrogram.reshape(12, 256, -1)
    x = raw_features(spec, np.arange(256)[::-1])
    scorer = load_scorer(default_scorer_path())
    return {
        "stft": spec.ravel().tolist(),
        "numpy": scorer.score(x).ravel().tolist(),
        "onnx": compile_scorer(scorer, "onnx").score(x).ravel().tolist(),
    }


def run(
    python: str,
    cpu: str | None,
    model: str,
    n_tokens: int,
    numba_cpu: str | None = None,
    only_parts: bool = False,
) -> dict:
    cmd = [python, __file__, "--child", "--model", model, "--tokens", str(n_tokens)]
    cmd += ["--parts"] if only_parts else []
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NUMBA_NUM_THREADS": "1"}
    if cpu is not None:
        cmd = ["qemu-x86_64", "-cpu", cpu, *cmd]
        if numba_cpu:
            env["NUMBA_CPU_NAME"] = numba_cpu
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if done.returncode != 0:
        errors = [line for line in done.stderr.splitlines() if "TCG doesn't support" not in line]
        return {"error": f"exit {done.returncode}: " + " | ".join(errors[-5:]), "wall": wall}
    out = json.loads(done.stdout.strip().splitlines()[-1])
    out["wall"] = wall
    return out


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--python", default=sys.executable, help="the build's Python (its venv)")
    ap.add_argument("--cpus", default="Nehalem,Haswell,EPYC-Rome", help="QEMU CPU models")
    ap.add_argument("--model", default=None, help="GGUF (default: the default model)")
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--numba-cpu", default=None, help="NUMBA_CPU_NAME for the emulated runs")
    ap.add_argument(
        "--parts", action="store_true", help="only the STFT and the scorer on fixed inputs (fast)"
    )
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    model = args.model or str(default_model())
    if args.child:
        print(json.dumps(parts() if args.parts else child(model, args.tokens)))
        return
    if args.parts:
        compare_parts(args)
        return

    print(f"machine: {machine()}; build: {args.python}; {args.tokens} tokens of {Path(model).name}")
    ref = run(args.python, None, model, args.tokens)
    if "error" in ref:
        raise SystemExit(f"the native run failed: {ref['error']}")
    ref_logits = np.asarray(ref["logits"])
    print()
    print(
        "| CPU (QEMU model) | variant loaded | job (s) | 1st update: logit correlation "
        "| max logit diff | max spectrogram diff | max NAMM score diff | end: same top token "
        "| kept tokens that differ |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---|---:|")
    print(
        f"| this machine (native) | {ref['variant']} | {ref['seconds']:.2f} | 1 | 0 | 0 | 0 "
        "| yes | 0 |"
    )
    failed = False
    for cpu in args.cpus.split(","):
        got = run(args.python, cpu, model, args.tokens, args.numba_cpu)
        if "error" in got:
            failed = True
            print(f"| {cpu} | failed: {got['error'][:200]} | | | | | | | |")
            continue
        logits = np.asarray(got["logits"])
        diff = float(np.abs(np.subtract(got["first_logits"], ref["first_logits"])).max())
        corr = float(np.corrcoef(got["first_logits"], ref["first_logits"])[0, 1])
        top = int(logits.argmax()) == int(ref_logits.argmax())
        # another variant rounds attention differently, so features and scores move a little
        # and a near-tie at the budget's edge can flip: reported, not judged
        same_view = got["scored_positions"] == ref["scored_positions"]
        score_diff, spec_diff = (
            (
                float(np.abs(np.subtract(got[key], ref[key])).max())
                for key in ("scores", "spectrogram")
            )
            if same_view
            else (float("inf"), float("inf"))
        )
        kept_diff = len(set(got["kept"]) ^ set(ref["kept"])) // 2
        failed |= not (top and corr > MIN_CORRELATION)
        print(
            f"| {cpu} | {got['variant']} | {got['seconds']:.2f} | {corr:.6f} | {diff:.2g} "
            f"| {spec_diff:.2g} | {score_diff:.2g} | {'yes' if top else 'NO'} "
            f"| {kept_diff} of {len(ref['kept'])} |"
        )
    if failed:
        raise SystemExit("at least one emulated CPU failed or answered differently")


def compare_parts(args: argparse.Namespace) -> None:
    ref = run(args.python, None, "", 0, only_parts=True)
    print(f"machine: {machine()}; build: {args.python}; each part on fixed inputs")
    print()
    print("| CPU (QEMU model) | STFT/EMA max diff | scorer, numpy | scorer, ONNX Runtime |")
    print("|---|---:|---:|---:|")
    for cpu in args.cpus.split(","):
        got = run(args.python, cpu, "", 0, args.numba_cpu, only_parts=True)
        if "error" in got:
            print(f"| {cpu} | failed: {got['error'][:200]} | | |")
            continue
        diffs = [np.abs(np.subtract(got[k], ref[k])).max() for k in ("stft", "numpy", "onnx")]
        print(f"| {cpu} | " + " | ".join(f"{d:.2g}" for d in diffs) + " |")


if __name__ == "__main__":
    main()
