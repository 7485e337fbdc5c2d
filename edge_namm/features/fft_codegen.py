"""Generator of the frame kernel ``_fft_generated._frame32`` (a real FFT, magnitudes only).

Why generated code: a frame is one 32-point real FFT per cell, computed for 128 cells side by
side. Written as straight-line code over scalars, LLVM vectorises it across cells and keeps most
intermediates in registers; a loop over butterfly tables does not vectorise as well.

What is generated: radix-2 decimation in time, applied recursively to real sequences, so each
level only computes bins ``0 .. m/2`` and takes the others as complex conjugates (free: a sign).
Multiplications by 0, +-1, +-i and the 45-degree twiddles are simplified while emitting, and
identical expressions are emitted once. For ``n_fft = 32`` that is 309 floating-point operations
per frame and cell (30 of them the Hann window), against 504 for the folded DFT it replaced;
the 17 magnitudes then update the EMA in place.

The kernel lives in ``_fft_generated.py``, which ``python edge_namm/features/fft_codegen.py``
writes (``--check`` only compares; run as a file it imports nothing of the package, so it works
even when the generated module is broken); ``tests/test_features.py`` checks that the committed
file is what this generator writes, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: Cells per parallel work item of ``stft`` (flat scratch of n_fft * TILE floats stays in L1).
#: Here rather than in ``stft`` because the generated kernel has it built into its offsets.
TILE = 128

#: The module ``main`` writes; ``stft.py`` imports the kernel from it.
GENERATED_PATH = Path(__file__).with_name("_fft_generated.py")
REGENERATE_COMMAND = "python edge_namm/features/fft_codegen.py"

# A real scalar while generating: None for an exact zero, else (sign, variable name).
Scalar = tuple[int, str] | None
Complex = tuple[Scalar, Scalar]


def hann_periodic(n_fft: int) -> np.ndarray:
    """Periodic Hann window (``torch.hann_window(n)``, ``scipy.signal.get_window('hann', n)``)."""
    k = np.arange(n_fft, dtype=np.float64)
    return 0.5 - 0.5 * np.cos(2.0 * np.pi * k / n_fft)


class _Emitter:
    """Collects assignments ``tN = expr``; an expression seen before reuses its variable."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.names: dict[str, str] = {}
        self.flops = 0

    def emit(self, expr: str, flops: int) -> str:
        if expr not in self.names:
            self.names[expr] = f"t{len(self.names)}"
            self.lines.append(f"{self.names[expr]} = {expr}")
            self.flops += flops
        return self.names[expr]

    def add(self, a: Scalar, b: Scalar) -> Scalar:
        if a is None or b is None:
            return b if a is None else a
        (sa, na), (sb, nb) = a, b
        if sa == sb:
            x, y = sorted((na, nb))
            return sa, self.emit(f"{x} + {y}", 1)
        return 1, self.emit(f"{na} - {nb}" if sa > 0 else f"{nb} - {na}", 1)

    def sub(self, a: Scalar, b: Scalar) -> Scalar:
        return self.add(a, None if b is None else (-b[0], b[1]))

    def scale(self, a: Scalar, coef: float) -> Scalar:
        if a is None or abs(coef) < 1e-12:
            return None
        sign = a[0] * (1 if coef > 0 else -1)
        if abs(abs(coef) - 1.0) < 1e-12:
            return sign, a[1]
        return sign, self.emit(f"np.float32({abs(float(coef))!r}) * {a[1]}", 1)

    def twiddle(self, x: Complex, k: int, m: int) -> Complex:
        """``x * exp(-2 pi i k / m)``."""
        theta = 2.0 * np.pi * k / m
        c, s = np.cos(theta), np.sin(theta)
        c, s = (0.0 if abs(c) < 1e-12 else c), (0.0 if abs(s) < 1e-12 else s)
        xr, xi = x
        if c != 0.0 and abs(abs(c) - abs(s)) < 1e-12:  # (+-1 +- i) / sqrt(2): 2 mul + 2 add
            re = self.add(self.scale(xr, np.sign(c)), self.scale(xi, np.sign(s)))
            im = self.sub(self.scale(xi, np.sign(c)), self.scale(xr, np.sign(s)))
            return self.scale(re, abs(c)), self.scale(im, abs(c))
        re = self.add(self.scale(xr, c), self.scale(xi, s))
        im = self.sub(self.scale(xi, c), self.scale(xr, s))
        return re, im

    def rfft(self, xs: list[Scalar]) -> list[Complex]:
        """Bins ``0 .. m/2`` of the DFT of the real sequence ``xs`` (length a power of two)."""
        m = len(xs)
        if m == 1:
            return [(xs[0], None)]
        even, odd = self.rfft(xs[0::2]), self.rfft(xs[1::2])
        h = m // 2

        def bin_of(half: list[Complex], k: int) -> Complex:  # bin k of a real length-h sequence
            if k <= h // 2:
                return half[k]
            re, im = half[h - k]
            return re, None if im is None else (-im[0], im[1])

        out = []
        for k in range(h):
            t = self.twiddle(bin_of(odd, k), k, m)
            e = bin_of(even, k)
            out.append((self.add(e[0], t[0]), self.add(e[1], t[1])))
        e, o = bin_of(even, 0), bin_of(odd, 0)
        out.append((self.sub(e[0], o[0]), self.sub(e[1], o[1])))
        return out


def frame32_source(tile: int = 128, n_fft: int = 32) -> tuple[str, int]:
    """Source of ``_frame32(ft, et, nc, decay)`` and its operation count per cell (window and
    FFT; the magnitudes and the EMA come on top).

    ``ft`` holds ``n_fft`` rows of ``tile`` cells in time order; ``et`` holds ``n_fft/2 + 1`` rows
    of EMA values, updated in place as ``decay * et + (1 - decay) * |X_j|``.
    """
    if n_fft & (n_fft - 1):
        raise ValueError(f"n_fft must be a power of two, got {n_fft}")
    gen = _Emitter()
    w = hann_periodic(n_fft)
    samples = [
        gen.scale((1, gen.emit(f"ft[{k * tile} + c]", 0)), w[k]) if abs(w[k]) > 1e-12 else None
        for k in range(n_fft)
    ]
    bins = gen.rfft(samples)
    body = list(gen.lines)
    for j, (re, im) in enumerate(bins):
        parts = [p[1] for p in (re, im) if p is not None]
        if len(parts) == 2:
            mag = f"np.sqrt({parts[0]} * {parts[0]} + {parts[1]} * {parts[1]})"
        else:
            mag = f"np.abs({parts[0]})"
        out = f"et[{j * tile} + c]"
        body.append(f"{out} = decay * {out} + gain * {mag}")
    head = [
        "@njit(cache=True, fastmath=False)",
        "def _frame32(ft, et, nc, decay):",
        f'    """Generated by frame32_source({tile}, {n_fft}): one frame, nc <= {tile} cells."""',
        "    gain = np.float32(1.0) - decay",
        "    for c in range(nc):",
    ]
    return "\n".join(head + ["        " + line for line in body]) + "\n", gen.flops


def generated_module(tile: int) -> str:
    """The whole text of ``_fft_generated.py``: ``frame32_source(tile)`` with a header and imports.

    ``# fmt: off`` keeps ``ruff format`` away from it, so the file stays what this writes.
    """
    header = [
        "# Generated by edge_namm/features/fft_codegen.py; do not edit. Regenerate with:",
        f"#     {REGENERATE_COMMAND}",
        "# tests/test_features.py fails when this file is not what the generator writes.",
        "# fmt: off",
        '"""The straight-line 32-point frame kernel of ``stft.py`` (see ``fft_codegen``)."""',
        "",
        "import numpy as np",
        "from numba import njit",
        "",
        "",
        "",
    ]
    return "\n".join(header) + frame32_source(tile)[0]


def main(argv: Sequence[str] | None = None) -> int:
    """Write ``_fft_generated.py`` for ``TILE``; with ``--check`` only report whether the
    committed file is current (exit status 1 if not)."""
    parser = argparse.ArgumentParser(prog=REGENERATE_COMMAND, description=main.__doc__)
    parser.add_argument("--check", action="store_true", help="compare, do not write")
    args = parser.parse_args(argv)
    text = generated_module(TILE)
    current = GENERATED_PATH.exists() and GENERATED_PATH.read_text(encoding="utf-8") == text
    if args.check:
        print(f"{GENERATED_PATH.name} is {'current' if current else 'stale'}")
        return 0 if current else 1
    if not current:
        GENERATED_PATH.write_text(text, encoding="utf-8")
    print(f"{'unchanged' if current else 'wrote'}: {GENERATED_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
