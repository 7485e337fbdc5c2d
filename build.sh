#!/usr/bin/env bash
# Sets up edge-namm: a virtual environment with llama-cpp-python built from the pinned sdist
# plus our native patch (native/), and edge-namm installed editable with its test extras.
#
#   ./build.sh            CPU build (default; Metal is chosen automatically on Apple Silicon)
#   ./build.sh --cuda     CUDA build   (CMAKE_ARGS=-DGGML_CUDA=on, needs nvcc)
#   ./build.sh --metal    Metal build  (macOS)
#   ./build.sh --cpu      force a CPU build
#   ./build.sh --portable x86-64 CPU build with runtime dispatch: one libggml-cpu per CPU
#                         generation (SSE4.2 .. AVX-512), the best is picked at load; for apps
#                         that ship the library to other machines
#   ./build.sh --amx      keep llama.cpp's Intel AMX matmul path (off by default: it crashes or
#                         gives wrong results on Q4_0/Q4_1 models, llama.cpp #20824 / PR #16315)
#
# Environment: EDGE_NAMM_VENV (default .venv), EDGE_NAMM_BUILD_DIR (default .build),
# PYTHON (interpreter used to create the venv, default python3), CMAKE_ARGS (extra flags).
# A second run with nothing changed skips the native build (stamp file) and finishes quickly.
set -euo pipefail

LLAMA_CPP_PYTHON_VERSION="0.3.36"
SDIST_SHA256="832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${EDGE_NAMM_VENV:-$ROOT/.venv}"
BUILD_DIR="${EDGE_NAMM_BUILD_DIR:-$ROOT/.build}"
PYTHON="${PYTHON:-python3}"

die() { echo "build.sh: error: $*" >&2; exit 1; }
step() { echo "==> $*"; }

backend="auto"
amx=0
portable=0
for arg in "$@"; do
    case "$arg" in
        --cuda) backend="cuda" ;;
        --metal) backend="metal" ;;
        --cpu) backend="cpu" ;;
        --portable) portable=1 ;;
        --amx) amx=1 ;;
        -h|--help) sed -n '2,18p' "$0"; exit 0 ;;
        *) die "unknown option '$arg' (valid: --cpu, --cuda, --metal, --portable, --amx)" ;;
    esac
done

if [[ "$backend" == "auto" ]]; then
    if [[ "$(uname -s)" == "Darwin" && "$(uname -m)" == "arm64" ]]; then
        backend="metal"
    else
        backend="cpu"
        if command -v nvcc >/dev/null 2>&1; then
            echo "note: nvcc found; building for CPU. Run './build.sh --cuda' for a CUDA build."
        fi
    fi
fi
case "$backend" in
    cuda) command -v nvcc >/dev/null 2>&1 || die "--cuda needs the CUDA toolkit (nvcc) on PATH"
          BACKEND_ARGS="-DGGML_CUDA=on"
          # With a static-only libstdc++ every .so embeds its own copy; without this flag libllama
          # bound into libggml-cuda's copy and crashed at model load (docs/PERFORMANCE.md).
          if [[ "$(uname -s)" == "Linux" ]]; then
              BACKEND_ARGS="$BACKEND_ARGS -DCMAKE_SHARED_LINKER_FLAGS=-Wl,--exclude-libs,ALL"
          fi ;;
    metal) [[ "$(uname -s)" == "Darwin" ]] || die "--metal only works on macOS"
           BACKEND_ARGS="-DGGML_METAL=on" ;;
    *) BACKEND_ARGS="-DGGML_CUDA=off -DGGML_METAL=off" ;;
esac

# llama.cpp compiles its AMX matmul kernels whenever the compiler targets an AMX CPU, which
# -march=native does on Sapphire Rapids and newer Xeons. Those kernels segfault in
# ggml_backend_amx_mul_mat and give wrong Q4_0/Q4_1 results (llama.cpp #20824, PR #16315), so the
# ISA extensions are switched off explicitly: GCC and Clang let an explicit -mno-* win over
# -march=native whatever the order. Compilers too old to know the flags never emit AMX anyway.
CPU_FLAGS=""
case "$(uname -m)" in
    x86_64|amd64|AMD64)
        if [[ "$amx" == 1 ]]; then
            echo "warning: --amx keeps llama.cpp's AMX path, known to crash (llama.cpp issue #20824)" \
                 "and to give wrong results for Q4_0/Q4_1 (llama.cpp PR #16315)" >&2
        else
            cc_bin="$(command -v cc || command -v gcc || command -v clang || true)"
            if [[ -n "$cc_bin" ]] && echo 'int main(void){return 0;}' \
                | "$cc_bin" -x c -mno-amx-tile -mno-amx-int8 -mno-amx-bf16 -o /dev/null - 2>/dev/null; then
                CPU_FLAGS="-mno-amx-tile -mno-amx-int8 -mno-amx-bf16"
            fi
        fi
        if [[ "$portable" == 1 ]]; then
            [[ "$backend" == "cpu" || "$backend" == "cuda" ]] || die "--portable is for x86-64 CPU/CUDA builds"
            # GGML_BACKEND_DL + GGML_CPU_ALL_VARIANTS: one libggml-cpu-<variant>.so per CPU
            # generation, scored at load time; our patch drops the AMX (sapphirerapids) variant.
            BACKEND_ARGS="$BACKEND_ARGS -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=ON -DGGML_CPU_ALL_VARIANTS=ON"
            backend="$backend-portable"
        fi ;;
    *) [[ "$portable" == 0 ]] || die "--portable is for x86-64 (other CPUs build natively)" ;;
esac
if [[ -n "$CPU_FLAGS" ]]; then
    BACKEND_ARGS="$BACKEND_ARGS -DCMAKE_C_FLAGS='$CPU_FLAGS' -DCMAKE_CXX_FLAGS='$CPU_FLAGS'"
fi
export CMAKE_ARGS="$BACKEND_ARGS -DLLAVA_BUILD=off ${CMAKE_ARGS:-}"

# --- prerequisites -------------------------------------------------------------------------
command -v "$PYTHON" >/dev/null 2>&1 || die "'$PYTHON' not found; install Python >= 3.10 or set PYTHON=/path/to/python3"
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else 1)' \
    || die "Python >= 3.10 is required, '$PYTHON' is $("$PYTHON" -c 'import platform; print(platform.python_version())'); set PYTHON=/path/to/python3.10+"
command -v c++ >/dev/null 2>&1 || command -v g++ >/dev/null 2>&1 || command -v clang++ >/dev/null 2>&1 \
    || die "no C++ compiler found; install one (Debian/Ubuntu: apt install build-essential; macOS: xcode-select --install)"
command -v patch >/dev/null 2>&1 || die "the 'patch' tool is missing (Debian/Ubuntu: apt install patch)"

# --- virtual environment -------------------------------------------------------------------
if [[ ! -x "$VENV/bin/python" ]]; then
    step "creating virtual environment $VENV"
    "$PYTHON" -m venv "$VENV" || die "could not create a venv (Debian/Ubuntu: apt install python3-venv)"
fi
VPY="$VENV/bin/python"
pip_q() { "$VPY" -m pip --disable-pip-version-check "$@"; }
pip_q install -q --upgrade pip >/dev/null 2>&1 || true
pip_q install -q "scikit-build-core[pyproject]>=0.9.2" "cmake>=3.21" ninja \
    || die "could not install build tools from PyPI; is the package registry reachable?"

# --- patched llama-cpp-python --------------------------------------------------------------
native_hash=$(cat "$ROOT"/native/llama-cpp.patch "$ROOT"/native/edge_namm.h "$ROOT"/native/edge_namm.cpp \
    | { echo "$LLAMA_CPP_PYTHON_VERSION $CMAKE_ARGS"; cat; } | sha256sum | cut -c1-16)
STAMP="$VENV/.edge-namm-native-$native_hash"
if [[ -f "$STAMP" ]] && "$VPY" -c "import llama_cpp, sys; sys.exit(llama_cpp.__version__ != '$LLAMA_CPP_PYTHON_VERSION')" 2>/dev/null; then
    step "patched llama-cpp-python $LLAMA_CPP_PYTHON_VERSION ($backend) is up to date"
else
    mkdir -p "$BUILD_DIR"
    SDIST="$BUILD_DIR/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz"
    if [[ ! -f "$SDIST" ]]; then
        step "downloading llama-cpp-python $LLAMA_CPP_PYTHON_VERSION sdist from PyPI"
        pip_q download -q --no-deps --no-binary :all: "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" -d "$BUILD_DIR" \
            || die "could not download the llama-cpp-python sdist; is PyPI reachable (proxy, offline machine)?"
    fi
    echo "$SDIST_SHA256  $SDIST" | sha256sum -c --quiet - \
        || { rm -f "$SDIST"; die "sdist checksum mismatch (deleted it); run ./build.sh again"; }

    SRC="$BUILD_DIR/llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION"
    LLAMA="$SRC/vendor/llama.cpp"
    if [[ ! -f "$SRC/.edge-namm-patched-$native_hash" ]]; then
        step "unpacking and patching the sdist"
        rm -rf "$SRC"
        tar -xzf "$SDIST" -C "$BUILD_DIR"
        if ! out=$(patch -p1 -d "$LLAMA" --dry-run --forward < "$ROOT/native/llama-cpp.patch" 2>&1); then
            echo "$out" >&2
            die "native/llama-cpp.patch does not apply to llama.cpp in llama-cpp-python $LLAMA_CPP_PYTHON_VERSION (failed hunks above)"
        fi
        patch -p1 -d "$LLAMA" --forward --quiet < "$ROOT/native/llama-cpp.patch"
        cp "$ROOT/native/edge_namm.cpp" "$LLAMA/src/edge-namm.cpp"
        cp "$ROOT/native/edge_namm.h" "$LLAMA/src/edge_namm.h"
        touch "$SRC/.edge-namm-patched-$native_hash"
    fi

    step "building llama-cpp-python ($backend; CMAKE_ARGS='$CMAKE_ARGS'); first build takes a few minutes"
    # a persistent CMake build directory makes rebuilds incremental
    pip_q install --no-build-isolation --no-deps --force-reinstall \
        -C "build-dir=$BUILD_DIR/cmake-$backend" -C cmake.verbose=false "$SRC" \
        || die "building llama-cpp-python failed (compiler output above)"
    if [[ "$backend" == *-portable ]]; then
        # the wheel installs libllama and libggml but not the per-CPU backends it loads at run
        # time: put them beside libllama, where edge-namm loads the best one for the CPU
        libdir=$("$VPY" -c "import llama_cpp, pathlib; print(pathlib.Path(llama_cpp.__file__).parent / 'lib')")
        variants=("$BUILD_DIR/cmake-$backend"/bin/libggml-cpu-*.so)
        [[ -e "${variants[0]}" ]] || die "--portable built no libggml-cpu-<variant>.so (see the build output)"
        cp "${variants[@]}" "$libdir/"
    fi
    rm -f "$VENV"/.edge-namm-native-*
    touch "$STAMP"
fi

# --- edge-namm itself ----------------------------------------------------------------------
step "installing edge-namm (editable) with test extras"
pip_q install -q -e "$ROOT[test]" || die "installing edge-namm's dependencies failed (see pip output above)"
"$VPY" -c "import edge_namm.native as n; n.require()" \
    || die "the installed llama.cpp lacks the edge-namm patch; delete $VENV and run ./build.sh again"
# Numba compiles on first call; doing it here keeps ~15-25 s of compiling out of the first chat
step "compiling the Numba kernels (once; cached beside the sources)"
"$VPY" -m edge_namm.kernels || die "compiling the Numba kernels failed (see the error above)"
step "done. Activate with: source ${VENV#$ROOT/}/bin/activate"
