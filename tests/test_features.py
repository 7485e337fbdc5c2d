"""Streaming NAMM features vs an independent per-update reference (paper formula, scipy STFT)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.signal import get_window, stft

from edge_namm.features import (
    AttentionFeatures,
    FeatureConfig,
    NormStats,
    _fft_generated,
    age_embedding,
    fft_codegen,
    normalise,
    raw_features,
)
from edge_namm.features import stft as kernels
from edge_namm.features.fft_codegen import frame32_source

# ----------------------------------------------------------------------------------------------
# Reference: the paper's per-update computation (docs/DESIGN.md §1.2), written from scratch.


def ref_stft_mag(series: np.ndarray, n_fft: int, hop: int) -> np.ndarray:
    """|STFT| as torch.stft(normalized=False, center=False, onesided=True) with periodic Hann.

    series [..., T] -> [..., n_bins, n_frames]. scipy's get_window('hann', n) is periodic
    (fftbins=True); boundary=None and padded=False give no extension or padding; detrend=False;
    scaling='spectrum' divides by the window sum, which we undo.
    """
    win = get_window("hann", n_fft)
    _, _, z = stft(
        series,
        window=win,
        nperseg=n_fft,
        noverlap=n_fft - hop,
        nfft=n_fft,
        detrend=False,
        return_onesided=True,
        boundary=None,
        padded=False,
        axis=-1,
        scaling="spectrum",
    )
    return np.abs(z) * win.sum()


class PaperReference:
    """Per-update NAMM spectrogram: prepend tail, STFT, masked EMA over frames, decayed previous."""

    def __init__(self, n_layer: int, n_head: int, n_cells: int, cfg: FeatureConfig) -> None:
        self.cfg = cfg
        self.tail = np.zeros((n_layer, n_head, n_cells, cfg.n_fft - cfg.hop))
        self.vec = np.zeros((n_layer, n_head, n_cells, cfg.n_bins))

    def update(self, rows: np.ndarray, arrival: np.ndarray) -> None:
        """rows [L, H, n_new, C]; arrival[c] = index among this update's queries at which the
        cell's token arrived (-1: token cached before this update, or no token).

        Frame f ends with new query hop * f + hop - 1, so a token arriving at query i is in
        frames f >= i // hop (the paper's rule, for hop 16), whatever n_fft."""
        cfg = self.cfg
        n_new = rows.shape[2]
        assert n_new % cfg.hop == 0
        new = arrival >= 0
        self.tail[:, :, new] = 0.0  # new tokens: zero tail, no previous vector
        self.vec[:, :, new] = 0.0
        series = np.concatenate([self.tail, rows.transpose(0, 1, 3, 2)], axis=-1)
        frames = ref_stft_mag(series, cfg.n_fft, cfg.hop)  # [L, H, C, bins, F]
        n_frames = frames.shape[-1]
        assert n_frames == n_new // cfg.hop
        a = cfg.ema_decay**cfg.hop
        f = np.arange(n_frames)
        weight = (1 - a) * a ** (n_frames - 1 - f)  # [F]
        keep = np.ones((rows.shape[3], n_frames), dtype=bool)
        keep[new] = f[None, :] >= (arrival[new] // cfg.hop)[:, None]
        self.vec = (frames * (weight * keep)[None, None, :, None, :]).sum(-1) + (
            cfg.ema_decay**n_new
        ) * self.vec
        self.tail = series[..., -(cfg.n_fft - cfg.hop) :]

    def evict(self, cells: np.ndarray) -> None:
        self.tail[:, :, cells] = 0.0
        self.vec[:, :, cells] = 0.0


def make_rows(rng, n_layer, n_head, n_new, n_cells, alive, arrival):
    """Random post-softmax-like rows: zero for cells without a token yet, rows sum to 1."""
    x = rng.random((n_layer, n_head, n_new, n_cells)) ** 3
    exists = np.zeros((n_new, n_cells), dtype=bool)
    exists[:, alive & (arrival < 0)] = True
    for c in np.flatnonzero(arrival >= 0):
        exists[arrival[c] :, c] = True
    x *= exists
    x /= np.maximum(x.sum(-1, keepdims=True), 1e-30)
    return x.astype(np.float32)


def fold_in_chunks(feats: AttentionFeatures, rows: np.ndarray, sizes: list[int], strided: bool):
    assert sum(sizes) == rows.shape[2]
    if strided:  # non-contiguous along the query axis, contiguous in cells
        big = np.zeros(rows.shape[:2] + (2 * rows.shape[2], rows.shape[3]), np.float32)
        big[:, :, ::2] = rows
        rows = big[:, :, ::2]
        assert not rows.flags.c_contiguous and rows.strides[3] == 4
    start = 0
    for n in sizes:
        feats.fold(rows[:, :, start : start + n])
        start += n


# (32, 16) is the paper (straight-line frame kernel); (32, 8) moves the frame start around the
# ring; (16, 8) exercises the generic frame kernel. Small folds run single-threaded unless
# serial_work is 0.
@pytest.mark.parametrize(
    "n_fft,hop,parallel", [(32, 16, False), (32, 16, True), (32, 8, False), (16, 8, True)]
)
def test_streaming_matches_paper_update(n_fft: int, hop: int, parallel: bool) -> None:
    rng = np.random.default_rng(1234 + n_fft)
    cfg = FeatureConfig(n_fft=n_fft, hop=hop)
    n_layer, n_head, n_cells, n_new = 2, 3, 70, 64  # 70 cells: a partial tile too
    feats = AttentionFeatures(n_layer, n_head, n_cells, cfg)
    if parallel:
        feats.serial_work = 0
    ref = PaperReference(n_layer, n_head, n_cells, cfg)
    alive = np.zeros(n_cells, dtype=bool)
    history = np.zeros((n_layer, n_head, 0, n_cells), np.float32)  # zeroed on eviction
    plans = [
        ([1, 7, 40, 16], False),
        ([13, 3, 48], True),
        ([64], True),
        ([1] * 20 + [44], False),  # generation-like single-query folds
    ]
    victims = np.zeros(0, dtype=int)
    for u, (sizes, strided) in enumerate(plans):
        # New tokens land at random query indices in the cells evicted last time (reuse) and in
        # a few never-used ones.
        unused = np.setdiff1d(np.flatnonzero(~alive), victims)
        fresh = rng.choice(unused, size=50 if u == 0 else 3, replace=False)
        cells = np.concatenate([victims, fresh])
        n_arrive = len(cells)
        arrival = np.full(n_cells, -1)
        arrival[cells] = np.sort(rng.integers(0, n_new, size=n_arrive))
        if u == 0:
            arrival[cells[0]] = 0
        rows = make_rows(rng, n_layer, n_head, n_new, n_cells, alive, arrival)
        alive[cells] = True

        fold_in_chunks(feats, rows, sizes, strided)
        ref.update(rows.astype(np.float64), arrival)
        history = np.concatenate([history, rows], axis=2)

        err = np.abs(feats.spectrogram - ref.vec).max()
        assert err <= 1e-5, (u, err)
        assert ref.vec.max() > 0.05  # not vacuous
        assert feats.spectrogram.dtype == np.float32
        assert feats.spectrogram.shape == (n_layer, n_head, n_cells, cfg.n_bins)
        assert np.abs(feats.spectrogram[:, :, ~alive]).max() == 0.0
        assert feats.n_queries == (u + 1) * n_new
        np.testing.assert_allclose(feats.attention_sum, history.sum(2), rtol=1e-6, atol=1e-9)
        np.testing.assert_array_equal(feats.last_row, history[:, :, -1])
        for n in (1, 5, cfg.n_fft):
            np.testing.assert_array_equal(feats.recent(n), history[:, :, -n:].transpose(0, 1, 3, 2))

        # Evict a few live cells: their state goes, and a later token reuses the cell.
        victims = rng.choice(np.flatnonzero(alive), size=9, replace=False)
        feats.reset_cells(victims)
        ref.evict(victims)
        history[..., victims] = 0.0
        alive[victims] = False
        assert np.abs(feats.spectrogram[:, :, victims]).max() == 0.0
        assert np.abs(feats.attention_sum[:, :, victims]).max() == 0.0
        assert np.abs(feats.recent(cfg.n_fft)[:, :, victims]).max() == 0.0


@pytest.mark.parametrize("n_fft,hop,parallel", [(32, 16, True), (32, 16, False), (16, 8, True)])
def test_long_fold_equals_query_by_query(n_fft: int, hop: int, parallel: bool) -> None:
    """A fold of many queries at once leaves the same state as feeding them one by one."""
    rng = np.random.default_rng(7)
    cfg = FeatureConfig(n_fft=n_fft, hop=hop)
    n_q = 229  # many frames, not a multiple of hop
    rows = rng.random((2, 3, n_q, 140)).astype(np.float32) * 0.01
    whole = AttentionFeatures(2, 3, 140, cfg)
    single = AttentionFeatures(2, 3, 140, cfg)
    if parallel:
        whole.serial_work = 0
    whole.fold(rows[:, :, :5])  # start mid-hop, as after a prompt chunk
    whole.fold(rows[:, :, 5:])
    for i in range(n_q):
        single.fold(rows[:, :, i : i + 1])
    np.testing.assert_allclose(whole.spectrogram, single.spectrogram, rtol=1e-6, atol=1e-9)
    assert whole.spectrogram.max() > 0  # not vacuous
    np.testing.assert_array_equal(whole.recent(n_fft), single.recent(n_fft))
    np.testing.assert_allclose(whole.attention_sum, single.attention_sum, rtol=1e-6)


def test_generated_frame_kernel_is_current() -> None:
    """_fft_generated.py is what fft_codegen writes; if not, run the command in its header."""
    committed = fft_codegen.GENERATED_PATH.read_text(encoding="utf-8")
    assert committed == fft_codegen.generated_module(kernels.TILE), fft_codegen.REGENERATE_COMMAND
    assert kernels._frame32 is _fft_generated._frame32
    assert fft_codegen.main(["--check"]) == 0


@pytest.mark.parametrize("n_fft", [8, 16, 32, 64])
def test_generated_frame_is_the_windowed_rfft_magnitude(n_fft: int) -> None:
    """The generator's code, run as plain Python, against numpy's FFT (any power of two)."""
    tile, nc = 4, 3
    src, flops = frame32_source(tile, n_fft)
    scope = {"np": np, "njit": lambda **_: lambda f: f}
    exec(src, scope)
    rng = np.random.default_rng(n_fft)
    ft = rng.random(n_fft * tile).astype(np.float32)
    et = rng.random((n_fft // 2 + 1) * tile).astype(np.float32)
    decay = np.float32(0.9)
    frames = ft.reshape(n_fft, tile)[:, :nc].astype(np.float64)
    mag = np.abs(np.fft.rfft(frames * get_window("hann", n_fft)[:, None], axis=0))
    want = 0.9 * et.reshape(-1, tile)[:, :nc] + 0.1 * mag
    scope["_frame32"](ft, et, nc, decay)
    np.testing.assert_allclose(et.reshape(-1, tile)[:, :nc], want, rtol=1e-5, atol=1e-6)
    assert flops < 2 * n_fft * n_fft  # fewer operations than a plain DFT matrix


def test_recent_before_window_filled_and_reset() -> None:
    rng = np.random.default_rng(0)
    feats = AttentionFeatures(1, 2, 5)
    assert feats.last_row.shape == (1, 2, 5) and not feats.last_row.any()
    rows = rng.random((1, 2, 3, 5), dtype=np.float32)
    feats.fold(rows)
    r = feats.recent(32)
    assert r.shape == (1, 2, 5, 32)
    assert not r[..., :29].any()
    np.testing.assert_array_equal(r[..., 29:], rows.transpose(0, 1, 3, 2))
    np.testing.assert_array_equal(feats.recent(0), np.zeros((1, 2, 5, 0), np.float32))
    with pytest.raises(ValueError):
        feats.recent(33)
    feats.fold(rows[:, :, :0])  # empty fold is a no-op
    assert feats.n_queries == 3
    feats.fold(rows.astype(np.float64))  # converted
    assert feats.n_queries == 6
    with pytest.raises(ValueError):
        feats.fold(rows[:, :1])
    feats.reset()
    assert feats.n_queries == 0 and not feats.recent(32).any() and not feats.attention_sum.any()
    with pytest.raises(IndexError):
        feats.reset_cells(np.array([5]))


def test_input_layouts_agree() -> None:
    """Strided, reversed, read-only, float64 and Fortran-ordered rows give identical state."""
    rng = np.random.default_rng(11)
    rows = rng.random((2, 3, 40, 150), dtype=np.float32)
    big = np.zeros((2, 3, 120, 150), np.float32)
    big[:, :, ::3] = rows
    rev = rows[:, :, ::-1].copy()
    readonly = rows.copy()
    readonly.flags.writeable = False
    variants = [
        rows,
        big[:, :, ::3],
        rev[:, :, ::-1],
        readonly,
        rows.astype(np.float64),
        np.asfortranarray(rows),
        rows.transpose(1, 0, 2, 3).copy().transpose(1, 0, 2, 3),
    ]
    states = []
    for v in variants:
        feats = AttentionFeatures(2, 3, 150)
        feats.fold(v[:, :, :17])
        feats.fold(v[:, :, 17:])
        states.append(feats.state_dict())
    for st in states[1:]:
        for key in ("ring", "ema", "attention_sum"):
            np.testing.assert_array_equal(st[key], states[0][key])


def test_state_dict_round_trip() -> None:
    rng = np.random.default_rng(3)
    a = AttentionFeatures(2, 2, 33)
    a.fold(rng.random((2, 2, 23, 33), dtype=np.float32))  # mid-frame: 23 % 16 != 0
    state = a.state_dict()
    b = AttentionFeatures(2, 2, 33)
    b.load_state_dict(state)
    more = rng.random((2, 2, 41, 33), dtype=np.float32)
    a.fold(more)
    b.fold(more)
    np.testing.assert_array_equal(a.spectrogram, b.spectrogram)
    np.testing.assert_array_equal(a.attention_sum, b.attention_sum)
    np.testing.assert_array_equal(a.recent(32), b.recent(32))
    assert a.n_queries == b.n_queries == 64
    assert state["n_queries"] == 23  # the state dict is a copy
    with pytest.raises(ValueError):
        AttentionFeatures(2, 2, 32).load_state_dict(state)


def test_feature_config() -> None:
    cfg = FeatureConfig()
    assert (cfg.n_bins, cfg.n_features) == (17, 25)
    assert cfg.frame_decay == pytest.approx(0.99**16)
    d = json.loads(json.dumps(cfg.to_dict()))
    assert FeatureConfig.from_dict(d) == cfg
    with pytest.raises(ValueError):
        FeatureConfig.from_dict({**d, "bogus": 1})
    with pytest.raises(ValueError):
        FeatureConfig(n_fft=30)
    with pytest.raises(ValueError):
        FeatureConfig(age_dims=7)


def test_age_embedding_and_raw_features() -> None:
    ages = np.array([[0, 1, 100], [511, 12345, 65535]])
    emb = age_embedding(ages)
    assert emb.shape == (2, 3, 8) and emb.dtype == np.float32
    np.testing.assert_array_equal(age_embedding(np.array(0)), [0, 0, 0, 0, 1, 1, 1, 1])
    for k in range(4):
        w = 50000.0 ** (-k / 4)
        np.testing.assert_allclose(emb[..., k], np.sin(ages * w), atol=1e-6)
        np.testing.assert_allclose(emb[..., 4 + k], np.cos(ages * w), atol=1e-6)

    rng = np.random.default_rng(5)
    spec = rng.random((6, 3, 17), dtype=np.float32)
    feats = raw_features(spec, ages[1])
    assert feats.shape == (6, 3, 25) and feats.dtype == np.float32
    np.testing.assert_array_equal(feats[..., 8:], spec)
    np.testing.assert_array_equal(feats[..., :8], np.broadcast_to(emb[1], (6, 3, 8)))
    with pytest.raises(ValueError):
        raw_features(spec[..., :16], ages[1])


def test_normalise() -> None:
    rng = np.random.default_rng(6)
    x = rng.random((4, 5, 25), dtype=np.float32)
    mean = rng.random(17)
    std = rng.random(17) + 0.5
    std[3] = 0.0  # floored to 1e-7
    y = normalise(x, mean, std)
    assert y.dtype == np.float32 and y.shape == x.shape
    np.testing.assert_array_equal(y[..., :8], x[..., :8])
    expect = (x[..., 8:].astype(np.float64) - mean) / np.maximum(std, 1e-7)
    np.testing.assert_allclose(y[..., 8:], expect, rtol=1e-5)
    assert not np.shares_memory(x, y)


def test_norm_stats() -> None:
    rng = np.random.default_rng(7)
    batches = [rng.random((n, 17)) * 3 + 1e4 for n in (1, 50, 300)]
    batches.append(rng.random((2, 3, 40, 17)))  # leading dims are samples too
    stats = NormStats()
    np.testing.assert_array_equal(stats.std, np.zeros(17))
    for b in batches:
        stats.update(b)
    stats.update(np.zeros((0, 17)))
    allx = np.concatenate([b.reshape(-1, 17) for b in batches])
    assert stats.count == allx.shape[0]
    np.testing.assert_allclose(stats.mean, allx.mean(0), rtol=1e-12)
    np.testing.assert_allclose(stats.std, allx.std(0), rtol=1e-9)
    back = NormStats.from_dict(json.loads(json.dumps(stats.to_dict())))
    np.testing.assert_array_equal(back.mean, stats.mean)
    np.testing.assert_array_equal(back.std, stats.std)
    assert back.count == stats.count


def test_the_feature_vector_and_scorers_load_without_numba_or_llama_cpp():
    """Scorers, ONNX export and training's simulator share one numpy-only feature module."""
    import subprocess
    import sys

    code = (
        "import sys, edge_namm.scorers, edge_namm.features.vector; "
        "print('numba' in sys.modules, 'llama_cpp' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
