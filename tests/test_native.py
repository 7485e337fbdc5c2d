"""The native patch on the real model: attention capture, cell map, removal, keys."""

from __future__ import annotations

import ctypes
from collections.abc import Callable

import llama_cpp
import llama_cpp.llama_cpp as low
import numpy as np
import pytest

from edge_namm import native

N_CTX = 512


class _GgmlTensor(ctypes.Structure):
    """Leading fields of struct ggml_tensor (ggml.h of the pinned llama.cpp), enough to read
    name, shape and host data: the independent capture path of these tests."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("buffer", ctypes.c_void_p),
        ("ne", ctypes.c_int64 * 4),
        ("nb", ctypes.c_size_t * 4),
        ("op", ctypes.c_int),
        ("op_params", ctypes.c_int32 * 16),
        ("flags", ctypes.c_int32),
        ("src", ctypes.c_void_p * 10),
        ("view_src", ctypes.c_void_p),
        ("view_offs", ctypes.c_size_t),
        ("data", ctypes.c_void_p),
        ("name", ctypes.c_char * 64),
    ]


def _llama(model_path: str, **kw) -> llama_cpp.Llama:
    return llama_cpp.Llama(model_path, n_ctx=N_CTX, n_batch=128, n_ubatch=128, verbose=False, **kw)


@pytest.fixture(scope="module")
def llm(model_path):
    model = _llama(model_path)
    yield model
    model.close()


def ggml_base() -> ctypes.CDLL:
    """libggml-base of the loaded llama_cpp (already in the process: same handle)."""
    from pathlib import Path

    libdir = Path(llama_cpp.__file__).parent / "lib"
    path = next(iter(sorted(libdir.glob("libggml-base.*"))), None)
    lib = ctypes.CDLL(str(path) if path else "libggml-base.so")
    lib.ggml_backend_buffer_is_host.argtypes = [ctypes.c_void_p]
    lib.ggml_backend_buffer_is_host.restype = ctypes.c_bool
    lib.ggml_backend_tensor_get.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_size_t,
        ctypes.c_size_t,
    ]
    lib.ggml_backend_tensor_get.restype = None
    return lib


def python_capture_llama(make: Callable[[], llama_cpp.Llama], n_head_kv: int, sink: dict):
    """A Llama (built by ``make``) whose cb_eval, a slow Python callback independent of
    native/, copies every kq_soft_max node with ``ggml_backend_tensor_get`` (host or device
    memory) and averages GQA groups in numpy: ``sink[layer]`` gets [H_kv, n_tok, n_kv] arrays,
    ``sink["host"]`` whether each tensor lived in host memory."""
    base = ggml_base()

    def callback(tensor_ptr, ask, _user):
        t = ctypes.cast(tensor_ptr, ctypes.POINTER(_GgmlTensor)).contents
        name = t.name.decode()
        if not name.startswith("kq_soft_max-"):
            return False if ask else True
        if ask:
            return True
        n_kv, n_tok, n_head = t.ne[0], t.ne[1], t.ne[2]
        assert t.type == 0 and t.nb[1] == 4 * n_kv, "expected a contiguous f32 softmax"
        arr = np.empty((n_head, n_tok, n_kv), dtype=np.float32)
        base.ggml_backend_tensor_get(tensor_ptr, arr.ctypes.data, 0, arr.nbytes)
        grouped = arr.reshape(n_head_kv, n_head // n_head_kv, n_tok, n_kv).mean(axis=1)
        sink.setdefault(int(name.split("-")[1]), []).append(grouped)
        sink.setdefault("host", []).append(bool(base.ggml_backend_buffer_is_host(t.buffer)))
        return True

    cb = low.ggml_backend_sched_eval_callback(callback)
    original = low.llama_context_default_params

    def params_with_callback():
        params = original()
        params.cb_eval = cb
        return params

    low.llama_context_default_params = params_with_callback
    try:
        model = make()
    finally:
        low.llama_context_default_params = original
    model._edge_namm_test_cb = cb  # keep the callback alive
    return model


def test_native_available():
    assert native.available()
    native.require()


def test_attention_rows_shape_sums_and_causality(llm):
    cap = native.AttentionCapture(llm._ctx.ctx, max_queries=128)
    try:
        llm.reset()
        tokens = llm.tokenize(b"The quick brown fox jumps over the lazy dog. " * 12)[:100]
        cap.arm()
        llm.eval(tokens)
        rows = cap.rows()
        n_layer = low.llama_model_n_layer(llm._model.model)
        n_head_kv = low.llama_model_n_head_kv(llm._model.model)
        assert rows.shape == (n_layer, n_head_kv, len(tokens), cap.n_cells)
        assert n_head_kv == 3
        pos = native.cell_positions(llm._ctx.ctx)
        occupied = pos >= 0
        np.testing.assert_allclose(rows[..., occupied].sum(-1), 1.0, atol=1e-3)
        assert np.all(rows[..., ~occupied] == 0)
        query_pos = np.arange(len(tokens))
        future = pos[None, :] > query_pos[:, None]  # [query, cell]
        assert np.all(rows[:, :, future] == 0)
        assert np.all(rows[:, :, ~future & occupied[None, :]].min() >= 0)
        # each KV head gets its own series
        assert not np.allclose(rows[:, 0], rows[:, 1])
    finally:
        cap.close()


def test_capture_equals_independent_python_callback(model_path, llm):
    n_head_kv = low.llama_model_n_head_kv(llm._model.model)
    sink: dict[int, list[np.ndarray]] = {}
    ref = python_capture_llama(lambda: _llama(model_path), n_head_kv, sink)
    ours = _llama(model_path)
    cap = native.AttentionCapture(ours._ctx.ctx, max_queries=128)
    try:
        prompt = ref.tokenize(b"Edge devices run small language models with bounded memory.")
        cap.arm()
        for piece in (prompt, [prompt[-1]], [prompt[0]]):
            sink.clear()
            ref.eval(piece)
            ours.eval(piece)
            rows = cap.rows()
            assert all(sink.pop("host"))  # CPU build: the softmax lives in host memory
            for il, captured in sink.items():
                expected = captured[0]  # [H, n_tok, n_kv]
                n_kv = expected.shape[-1]
                np.testing.assert_allclose(rows[il, :, :, :n_kv], expected, atol=1e-5)
                assert np.all(rows[il, :, :, n_kv:] == 0)
            assert len(sink) == rows.shape[0]
            cap.clear()
    finally:
        cap.close()
        ours.close()
        ref.close()


def test_disarmed_capture_records_nothing(llm):
    cap = native.AttentionCapture(llm._ctx.ctx, max_queries=128)
    try:
        llm.reset()
        llm.eval(llm.tokenize(b"hello world"))
        assert cap.count == 0
        cap.arm()
        llm.eval(llm.tokenize(b" again", add_bos=False))
        assert cap.count == 2 or cap.count > 0
        cap.disarm()
        cap.clear()
        llm.eval(llm.tokenize(b" more", add_bos=False))
        assert cap.count == 0
    finally:
        cap.close()


def test_capture_overflow_is_reported(llm):
    cap = native.AttentionCapture(llm._ctx.ctx, max_queries=4)
    try:
        llm.reset()
        cap.arm()
        llm.eval(llm.tokenize(b"one two three four five six seven eight"))
        with pytest.raises(RuntimeError, match="overflowed"):
            _ = cap.count
    finally:
        cap.close()


def test_cell_map_after_removal_and_reuse(llm, counting_text):
    ctx = llm._ctx.ctx
    llm.reset()
    tokens = llm.tokenize(counting_text.encode())
    llm.eval(tokens[:300])
    pos = native.cell_positions(ctx)
    assert len(pos) >= N_CTX
    assert sorted(pos[pos >= 0].tolist()) == list(range(300))
    gone = np.r_[10:60, 100, 150, 151, 299 - 5]
    assert native.remove_positions(ctx, gone) == len(gone)
    pos = native.cell_positions(ctx)
    assert sorted(pos[pos >= 0].tolist()) == sorted(set(range(300)) - set(gone.tolist()))
    freed = set(np.flatnonzero(np.isin(np.arange(len(pos)), np.flatnonzero(pos < 0))).tolist())
    llm.eval(tokens[300:500])  # 200 new tokens: more than the free tail, so freed cells get reused
    pos2 = native.cell_positions(ctx)
    kept = sorted(set(range(500)) - set(gone.tolist()))
    assert sorted(pos2[pos2 >= 0].tolist()) == kept
    reused = [c for c in freed if pos2[c] >= 300]
    assert reused, "freed cells should be reused by new tokens"
    # removing an absent position frees nothing
    assert native.remove_positions(ctx, np.array([10])) == 0


def test_removing_newest_position_is_refused(llm):
    ctx = llm._ctx.ctx
    llm.reset()
    llm.eval(llm.tokenize(b"one two three four five"))
    newest = int(native.cell_positions(ctx).max())
    before = native.cell_positions(ctx).copy()
    with pytest.raises(native.NewestPositionError):
        native.remove_positions(ctx, np.array([0, newest]))
    np.testing.assert_array_equal(native.cell_positions(ctx), before)


def test_remove_cells_takes_only_those_cells(llm):
    """Two cells at one position (a recalled token beside a survivor): removing one cell
    leaves the other; the newest position and empty or foreign cells are refused."""
    ctx = llm._ctx.ctx
    llm.reset()
    llm.eval(llm.tokenize(b"one two three four five six seven eight nine ten"))
    pos = native.cell_positions(ctx)
    layout = native.cell_layout(ctx)
    k, v = native.export_cells(ctx, np.array([2]), layout)
    (twin,) = native.import_cells(ctx, np.array([int(pos[2])]), k, v)
    assert native.cell_positions(ctx)[twin] == pos[2]
    assert native.remove_cells(ctx, np.array([2])) == 1
    after = native.cell_positions(ctx)
    assert after[2] == -1 and after[twin] == pos[2]  # the twin at the same position stays
    newest = int(np.argmax(after))
    before = after.copy()
    with pytest.raises(native.NewestPositionError):
        native.remove_cells(ctx, np.array([twin, newest]))
    with pytest.raises(ValueError, match="out of range, empty"):
        native.remove_cells(ctx, np.array([2]))  # already empty
    np.testing.assert_array_equal(native.cell_positions(ctx), before)


def eval_with_periodic_removal(llm, tokens: list[int], chunk: int = 128, n_sink: int = 4) -> int:
    """Feed ``tokens`` in chunks into a context smaller than them, removing the oldest
    positions after the first ``n_sink`` whenever the next chunk would not fit; returns the
    number of cells removed. ``llm.eval`` raises if llama_decode finds no room."""
    ctx = llm._ctx.ctx
    llm.reset()
    llm.input_ids = np.zeros(len(tokens) + 1000, dtype=np.intc)  # plain Llama sizes it n_ctx
    removed = 0
    for start in range(0, len(tokens), chunk):
        pos = native.cell_positions(ctx)
        free = int((pos < 0).sum())
        piece = tokens[start : start + chunk]
        if free < len(piece):
            live = np.sort(pos[pos >= 0])
            removed += native.remove_positions(ctx, live[n_sink : n_sink + len(piece) - free + 64])
        llm.eval(piece)
    return removed


def test_512_cells_process_3000_tokens_with_periodic_removal(llm, counting_text):
    ctx = llm._ctx.ctx
    tokens = llm.tokenize(counting_text.encode())[:3000]
    assert eval_with_periodic_removal(llm, tokens) > 0
    assert llm.n_tokens == 3000
    assert int((native.cell_positions(ctx) >= 0).sum()) <= N_CTX
    text = llm.detokenize(tokens).decode()
    last_number = int(text.split()[-1])
    generated = []
    for _ in range(4):  # greedy continuation: decoding still works after 2,500 removals
        logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
        generated.append(int(np.argmax(logits)))
        llm.eval(generated[-1:])
    continuation = llm.detokenize(generated).decode().split()
    assert continuation[0] == str(last_number + 1)


def test_read_keys(llm):
    ctx = llm._ctx.ctx
    llm.reset()
    llm.eval(llm.tokenize(b"keys are stored after rope"))
    n_head_kv = low.llama_model_n_head_kv(llm._model.model)
    head = llm.n_embd() // low.llama_model_n_head(llm._model.model)
    pos = native.cell_positions(ctx)
    keys = native.read_keys(ctx, 0, len(pos), n_head_kv * head)
    norms = np.linalg.norm(keys[pos >= 0], axis=1)
    assert np.all(np.isfinite(norms)) and np.all(norms > 0)
    with pytest.raises(ValueError):
        native.read_keys(ctx, 999, len(pos), n_head_kv * head)
