#!/usr/bin/env bash
# CUDA check of the edge-namm native patch (see benchmarks/device_cuda_check.py).
#
#   benchmarks/device_cuda_check.sh prepare   # here: trimmed patched source + wheels to carry
#   benchmarks/device_cuda_check.sh device    # on the GPU machine: build with CUDA, run checks
#
# prepare needs ./build.sh to have unpacked and patched the sdist (.build/llama_cpp_python-*)
# and writes .cudasrc/llama_cpp_python-trimmed.tar.gz (~4 MB: no tests, docs, examples, tools,
# vocab GGUFs or other backends; LLAMA_BUILD_TESTS/EXAMPLES/TOOLS/SERVER are off when
# llama.cpp is a subdirectory) and .whl/ (gguf, diskcache for Python 3.12), both git-ignored:
# carry both.
#
# device: installs the wheels into /tmp/site, builds llama-cpp-python with
#   -DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAVA_BUILD=off
#   -DGGML_CUDA_FA=off     (flash-attention kernels compiled empty: edge-namm runs with
#                           flash_attn=False because its policies read the softmax)
#   -DGGML_CUDA_NCCL=off   (multi-GPU only)
#   -DCMAKE_SHARED_LINKER_FLAGS=-Wl,--exclude-libs,ALL
#                          (the device's compiler, /opt/gcc g++ 13.3, has only a static
#                           libstdc++, so every .so embeds a copy; without this flag libllama's
#                           std::ostream calls bound to libggml-cuda's copy and llama_model's
#                           print_info segfaulted while loading a model)
# and runs the checks on a random SmolLM2-135M-shaped model; then, when the parts of the real
# SmolLM2 Q4_1 are there (.carry/, written by prepare, git-ignored), the
# NAMM, ONNX-on-CUDA and 4k/8k end-to-end checks on it, and with LONG=32768 the end-to-end
# benchmark on a random Llama-3.2-1B-shaped model. Logs and results go to $OUT.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
VERSION=0.3.36
TARBALL=.cudasrc/llama_cpp_python-trimmed.tar.gz

prepare() {
    set -e
    local src=".build/llama_cpp_python-$VERSION"
    ls "$src"/.edge-namm-patched-* >/dev/null 2>&1 || { echo "run ./build.sh first" >&2; exit 1; }
    local tmp
    tmp=$(mktemp -d)
    cp -a "$src" "$tmp/llama_cpp_python-$VERSION"
    (
        cd "$tmp/llama_cpp_python-$VERSION"
        rm -rf .git .github docker docs examples tests CHANGELOG.md llama_cpp/lib
        cd vendor/llama.cpp
        rm -rf models docs tests examples pocs benches media .github .devops gguf-py conversion \
            tools skills ci requirements app scripts licenses grammars ./*.py
        cd ggml/src
        rm -rf ggml-blas ggml-cann ggml-et ggml-hexagon ggml-hip ggml-metal ggml-musa \
            ggml-opencl ggml-openvino ggml-rpc ggml-sycl ggml-virtgpu ggml-vulkan ggml-webgpu \
            ggml-zdnn ggml-zendnn
    )
    mkdir -p .cudasrc .whl
    tar -czf "$TARBALL" -C "$tmp" "llama_cpp_python-$VERSION"
    rm -rf "$tmp"
    "${PYTHON:-.venv/bin/python}" -m pip download -q --no-deps --only-binary=:all: \
        --python-version 3.12 --implementation cp --platform manylinux2014_x86_64 \
        -d .whl gguf==0.19.0 diskcache==5.6.3
    ls -la "$TARBALL" .whl
    # the shipped SmolLM2 Q4_1 (~94 MB) in parts under the 64 MiB a device call carries:
    # carry .carry/smol.part.aa in one call and .carry/smol.part.ab in the next
    local model="${MODEL:-$HOME/.cache/edge-namm/models/SmolLM2-135M-Instruct.Q4_1.gguf}"
    if [[ -f "$model" ]]; then
        mkdir -p .carry && rm -f .carry/smol.part.*
        split -b 48M "$model" .carry/smol.part.
        ls -la .carry
    fi
}

device() {
    local out="${OUT:-$ROOT/out}" py="${PYTHON:-python3}"
    mkdir -p "$out"
    export PYTHONUNBUFFERED=1
    {
        date -u
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
        nvcc --version | tail -n 2
        echo "nproc $(nproc)"
        "$py" --version
    } 2>&1 | tee "$out/env.txt"
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || return 1
    export PYTHONPATH="/tmp/site:$ROOT"
    rm -rf /tmp/src && mkdir -p /tmp/src && tar -xzf "$TARBALL" -C /tmp/src || return 1
    export CMAKE_ARGS="-DGGML_CUDA=on -DCMAKE_CUDA_ARCHITECTURES=90 -DLLAVA_BUILD=off \
-DGGML_CUDA_FA=off -DGGML_CUDA_NCCL=off -DCMAKE_SHARED_LINKER_FLAGS=-Wl,--exclude-libs,ALL"
    export CMAKE_BUILD_PARALLEL_LEVEL=16
    echo "CMAKE_ARGS=$CMAKE_ARGS" | tee -a "$out/env.txt"
    local t0 t1 rc
    t0=$(date +%s.%N)
    [[ -f /tmp/site/llama_cpp/lib/libggml-cuda.so ]] && echo "reusing the build in /tmp/site" || timeout "${BUILD_TIMEOUT:-420}" "$py" -m pip install -v --no-build-isolation --no-deps \
        --no-compile --target /tmp/site -C build-dir=/tmp/cmake-cuda -C cmake.verbose=false \
        "/tmp/src/llama_cpp_python-$VERSION" >"$out/build.log" 2>&1
    rc=$?
    t1=$(date +%s.%N)
    echo "build rc=$rc seconds=$(awk "BEGIN{printf \"%.1f\", $t1 - $t0}")" | tee -a "$out/env.txt"
    grep -E "CUDA Toolkit|CMAKE_CUDA_ARCHITECTURES|Including CUDA" "$out/build.log" | head -5 \
        | tee -a "$out/env.txt"
    [[ $rc -eq 0 ]] || { tail -n 40 "$out/build.log"; return 1; }
    ls /tmp/site/llama_cpp/lib | tee -a "$out/env.txt"
    mkdir -p /tmp/models
    "$py" tests/tiny_gguf.py /tmp/models/smol.gguf --preset smollm2-135m
    ldd /tmp/site/llama_cpp/lib/libllama.so | tee -a "$out/env.txt"
    [[ -n "${DIAGNOSE:-}" ]] && diagnose "$py" 2>&1 | tee "$out/diag.log"
    local preload
    preload=$(cat /tmp/preload 2>/dev/null)
    echo "LD_PRELOAD for the check: '${preload}'" | tee -a "$out/env.txt"
    local check=("$py" -X faulthandler benchmarks/device_cuda_check.py --model /tmp/models/smol.gguf
        --gpu-layers -1 --threads "$(nproc)" --out "$out" "$@")
    LD_PRELOAD="$preload" "${check[@]}" 2>&1 | tee "$out/check.log"
    rc=${PIPESTATUS[0]}
    echo "check rc=$rc"
    # the shipped model itself (brought over in parts by `prepare`, see the header), then long
    # inputs at a 1B shape; both only measure, the checks above decide the exit status
    if ls .carry/smol.part.* >/dev/null 2>&1; then
        cat .carry/smol.part.* >/tmp/models/real.gguf
        echo "real model sha256 $(sha256sum /tmp/models/real.gguf | cut -c1-64)" | tee -a "$out/env.txt"
        LD_PRELOAD="$preload" "$py" benchmarks/device_cuda_check.py --model /tmp/models/real.gguf \
            --gpu-layers -1 --threads "$(nproc)" --out "$out/real-q4_1" \
            --only d_namm_budget_gpu,f_onnx_provider_parity,h_lengths \
            --onnx-providers CUDAExecutionProvider 2>&1 | tee "$out/check-real.log"
    fi
    if [[ -n "${LONG:-}" ]]; then
        "$py" tests/tiny_gguf.py /tmp/models/llama1b.gguf --preset llama-1b
        LD_PRELOAD="$preload" "$py" benchmarks/device_cuda_check.py --model /tmp/models/llama1b.gguf \
            --gpu-layers -1 --threads "$(nproc)" --out "$out/llama-1b" --only h_lengths \
            --lengths "$LONG" 2>&1 | tee "$out/check-1b.log"
    fi
    if [[ $rc -ge 128 ]] && command -v cuda-gdb >/dev/null; then
        echo "=== backtrace of the crashed check (cuda-gdb) ===" | tee -a "$out/diag.log"
        LD_PRELOAD="$preload" timeout 60 cuda-gdb -q -batch -ex run -ex bt \
            -ex "info sharedlibrary" --args "${check[@]}" 2>&1 | grep -vE "^\[New Thread|^\[Thread" \
            | tail -n 80 | tee -a "$out/diag.log"
    fi
    return "$rc"
}

# Loads the random models in a fresh interpreter (no other imports) under LD_PRELOAD variants;
# writes the first variant under which every load works to /tmp/preload; backtrace on a crash.
diagnose() {
    local py=$1 lib=/tmp/site/llama_cpp/lib
    ldd "$lib/libllama.so" | grep -E "stdc|gomp|cuda|cublas|ggml"
    readelf -d "$lib/libllama.so" "$lib/libggml-cuda.so" | grep -Ei "rpath|runpath"
    ls -la /opt/gcc/lib64/libstdc++.so.6* /usr/lib/x86_64-linux-gnu/libstdc++.so.6* 2>&1
    local load='import sys, llama_cpp
m = llama_cpp.Llama(sys.argv[1], n_ctx=512, n_gpu_layers=int(sys.argv[2]), verbose=False)
print("LOADED"); m.eval(m.tokenize(b"hello world")); print("EVAL-OK")'
    local variant pre m ngl rc all_ok
    : >/tmp/preload
    for variant in none /usr/lib/x86_64-linux-gnu/libstdc++.so.6 /opt/gcc/lib64/libstdc++.so.6; do
        pre=""
        [[ $variant != none ]] && pre=$variant
        [[ -n $pre && ! -f $pre ]] && continue
        all_ok=1
        for m in tiny smol; do
            for ngl in -1 0; do
                LD_PRELOAD="$pre" timeout 60 "$py" -X faulthandler -c "$load" "/tmp/models/$m.gguf" \
                    "$ngl" >/tmp/d.log 2>&1
                rc=$?
                echo "preload=$variant model=$m ngl=$ngl rc=$rc $(grep -E '^(LOADED|EVAL-OK)' /tmp/d.log | tr '\n' ' ')"
                if [[ $rc -ne 0 ]]; then
                    all_ok=0
                    tail -n 15 /tmp/d.log
                    if [[ $variant == none && $m == smol && $ngl == -1 ]]; then
                        echo "=== backtrace (cuda-gdb) ==="
                        timeout 90 cuda-gdb -q -batch -ex run -ex bt -ex "info sharedlibrary" \
                            --args "$py" -c "$load" /tmp/models/smol.gguf -1 2>&1 \
                            | grep -vE "^\[New Thread|^\[Thread" | tail -n 70
                    fi
                fi
            done
        done
        if [[ $all_ok -eq 1 ]]; then
            echo "$pre" >/tmp/preload
            echo "all loads ok with preload=$variant"
            return 0
        fi
    done
    echo "no variant loaded every model"
}

case "${1:-}" in
    prepare) prepare ;;
    device) shift; device "$@" ;;
    *) sed -n '2,20p' "$0"; exit 2 ;;
esac
