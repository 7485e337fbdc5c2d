"""Throughput of the streaming NAMM feature fold against a per-update scipy reference.

Workload (default): SmolLM2-135M shape, 30 layers x 3 KV heads x 2,048 cells, one update of 512
queries. Ours: ``AttentionFeatures.fold`` (Numba). Reference: the paper's per-update formula with
``scipy.signal.stft`` (prepend the 16-value tail, STFT, EMA-weighted frames plus the decayed
previous vector) and the attention sum, layer by layer, run on a subset of layers and scaled to
all of them.
Ours and the reference run interleaved so that both see the same machine load.

    python benchmarks/bench_features.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numba
import numpy as np
from scipy.signal import get_window, stft

from edge_namm.features import AttentionFeatures, FeatureConfig


class ScipyReference:
    """The paper's per-update spectrogram (docs/DESIGN.md §1.2) for tokens that are all cached."""

    def __init__(self, n_layer: int, n_head: int, n_cells: int, cfg: FeatureConfig) -> None:
        self.cfg = cfg
        self.win = get_window("hann", cfg.n_fft)  # periodic
        self.tail = np.zeros((n_layer, n_head, n_cells, cfg.n_fft - cfg.hop), np.float32)
        self.vec = np.zeros((n_layer, n_head, n_cells, cfg.n_bins))
        self.asum = np.zeros((n_layer, n_head, n_cells))

    def update(self, rows: np.ndarray) -> None:
        # One layer at a time: the per-layer arrays stay far smaller (the complex STFT output of
        # all layers at once is ~10x the input), which makes the reference ~2-3x faster here.
        for li in range(rows.shape[0]):
            self._update_layer(li, rows[li])

    def _update_layer(self, li: int, rows: np.ndarray) -> None:
        cfg = self.cfg
        n_new = rows.shape[1]
        series = np.concatenate([self.tail[li], rows.transpose(0, 2, 1)], axis=-1)
        _, _, z = stft(
            series,
            window=self.win,
            nperseg=cfg.n_fft,
            noverlap=cfg.n_fft - cfg.hop,
            nfft=cfg.n_fft,
            detrend=False,
            boundary=None,
            padded=False,
            axis=-1,
        )
        frames = np.abs(z) * self.win.sum()  # undo scipy's 'spectrum' scaling
        n_frames = frames.shape[-1]
        a = cfg.frame_decay
        weight = (1 - a) * a ** (n_frames - 1 - np.arange(n_frames))
        self.vec[li] = frames @ weight + cfg.ema_decay**n_new * self.vec[li]
        self.tail[li] = series[..., -(cfg.n_fft - cfg.hop) :]
        self.asum[li] += rows.sum(axis=1)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def timed_cpu(fn) -> tuple[float, float]:
    """(wall, CPU) seconds. CPU time of a single-threaded call barely depends on how many other
    processes share the machine, so it gives a fair ratio on a busy one."""
    t, c = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - t, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shape, few repeats (smoke test)")
    ap.add_argument("--layers", type=int, default=30)
    ap.add_argument("--heads", type=int, default=3)
    ap.add_argument("--cells", type=int, default=2048)
    ap.add_argument("--queries", type=int, default=512)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--ref-layers", type=int, default=3, help="layers the reference runs on")
    args = ap.parse_args()
    if args.quick:
        args.layers, args.cells, args.repeats, args.ref_layers = 4, 1024, 3, 2
    n_l, n_h, n_c, n_q = args.layers, args.heads, args.cells, args.queries
    ref_l = min(args.ref_layers, n_l)
    cfg = FeatureConfig()

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"numba {numba.__version__}, {numba.get_num_threads()} threads"
    )
    print(f"workload: {n_l} layers x {n_h} KV heads x {n_c} cells, {n_q} queries per update")
    rng = np.random.default_rng(0)
    rows = (rng.random((n_l, n_h, n_q, n_c), dtype=np.float32) * np.float32(2.0 / n_c)).astype(
        np.float32
    )

    feats = AttentionFeatures(n_l, n_h, n_c, cfg)
    feats.serial_work = 0  # the timed call is large anyway; make the warm-up use the same kernel
    t_warm = timed(lambda: feats.fold(rows[:, :, : cfg.hop]))
    print(f"first fold (compile or load from Numba's cache): {t_warm:.2f} s")
    feats.reset()

    # Correctness on the reference's layers: one update from zero state.
    ref = ScipyReference(ref_l, n_h, n_c, cfg)
    ref.update(rows[:ref_l])
    check = AttentionFeatures(ref_l, n_h, n_c, cfg)
    check.fold(rows[:ref_l])
    err = np.abs(check.spectrogram - ref.vec).max()
    print(
        f"max |ours - reference| after one update: {err:.2e} (spectrogram max {ref.vec.max():.3f})"
    )

    # Ours on all threads (the parallel kernel) and on one (the serial kernel), interleaved with
    # the single-threaded reference so that all three see the same load.
    serial = AttentionFeatures(n_l, n_h, n_c, cfg)
    serial.serial_work = 1 << 62
    serial.fold(rows[:, :, : cfg.hop])
    ours, ours1, theirs = [], [], []
    for _ in range(args.repeats):
        ours.append(timed(lambda: feats.fold(rows)))
        ours1.append(timed_cpu(lambda: serial.fold(rows)))
        theirs.append(np.array(timed_cpu(lambda: ref.update(rows[:ref_l]))) * n_l / ref_l)
    t_ours = float(np.median(ours))
    (t_ours1, c_ours1), (t_ref, c_ref) = np.median(ours1, axis=0), np.median(theirs, axis=0)
    cells_q = n_l * n_h * n_c * n_q
    for name, t in ((f"{numba.get_num_threads()} threads", t_ours), ("1 thread ", t_ours1)):
        print(
            f"ours  ({name}) fold({n_q} queries): median {t * 1e3:8.1f} ms over "
            f"{args.repeats} ({cells_q / t / 1e6:.0f} M cell-queries/s)"
        )
    print(
        f"scipy reference (1 thread) update    : median {t_ref * 1e3:8.1f} ms (run on {ref_l} of "
        f"{n_l} layers, scaled x{n_l / ref_l:g})"
    )
    print(
        f"speed-up (wall): {t_ref / t_ours:.1f}x with {numba.get_num_threads()} threads, "
        f"{t_ref / t_ours1:.1f}x on 1 thread (target >= 20x)"
    )
    print(
        f"speed-up (CPU time, 1 thread each): {c_ref / c_ours1:.1f}x "
        f"(ours {c_ours1 * 1e3:.1f} ms, reference {c_ref * 1e3:.1f} ms)"
    )
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    # Prefill-like chunks of 128 queries, a strided view along the query axis.
    big = np.zeros((n_l, n_h, 2 * 128, n_c), np.float32)
    big[:, :, ::2] = rows[:, :, :128]
    chunk = big[:, :, ::2]
    t_chunk = float(np.median([timed(lambda: feats.fold(chunk)) for _ in range(args.repeats)]))
    print(f"ours   fold(128 queries, strided view): median {t_chunk * 1e3:.1f} ms")

    # Generation: one query per call (15 of 16 calls only copy; every 16th emits a frame).
    gen = AttentionFeatures(n_l, n_h, n_c, cfg)
    one = np.ascontiguousarray(rows[:, :, :1])
    gen.fold(one)
    ts = np.array([timed(lambda: gen.fold(one)) for _ in range(4 * cfg.hop)])
    print(
        f"ours   fold(1 query): median {np.median(ts) * 1e3:.2f} ms, "
        f"mean {ts.mean() * 1e3:.2f} ms per generated token"
    )


if __name__ == "__main__":
    main()
