"""ONNX export and the ONNX Runtime backend: parity with numpy, metadata, errors, providers."""

from __future__ import annotations

import json
import sys
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from onnx import TensorProto, helper  # noqa: E402
from scorer_cases import random_scorer as shared_random_scorer  # noqa: E402
from scorer_cases import raw_features  # noqa: E402

from edge_namm.scorers import (  # noqa: E402
    DEFAULT_FEATURE_CONFIG,
    SCORERS,
    OnnxScorer,
    ScorerFileError,
    build_onnx_model,
    compile_scorer,
    export_onnx,
    load_onnx_scorer,
    read_onnx_metadata,
    zero_scorer,
)
from edge_namm.scorers.onnx_export import _Graph  # noqa: E402

TYPES = sorted(SCORERS)
CASES = [(3, 1), (5, 7), (2, 256), (90, 32), (1, 4096)]


def random_scorer(type_name: str, seed: int = 0, scale: float = 0.2, **kw):
    return shared_random_scorer(type_name, seed, scale, **kw)


def ort_scorer(scorer, **kw) -> OnnxScorer:
    return OnnxScorer(build_onnx_model(scorer, **kw).SerializeToString(), "cpu")


@pytest.fixture(scope="module", params=TYPES)
def pair(request):
    opts = {"window": 16} if request.param == "bam-window" else None
    sc = random_scorer(request.param, seed=2, options=opts)
    return sc, ort_scorer(sc)


@pytest.mark.parametrize("r, n", CASES)
def test_parity_with_numpy(pair, r: int, n: int) -> None:
    sc, onx = pair
    x = raw_features(r, n, seed=r * 1000 + n)
    want = sc.score(x)
    got = onx.score(x)
    assert got.shape == (r, n) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("type_name", ["bam", "bam-window"])
def test_parity_many_blocks(type_name: str) -> None:
    """A tiny block budget forces 16-query blocks, a partial last block and window edges."""
    opts = {"window": 5} if type_name == "bam-window" else None
    sc = random_scorer(type_name, seed=4, options=opts)
    onx = ort_scorer(sc, block_elems=1)
    for n in (1, 16, 17, 100):
        x = raw_features(3, n, seed=n)
        np.testing.assert_allclose(onx.score(x), sc.score(x), rtol=1e-4, atol=1e-4)


def test_default_window_parity() -> None:
    sc = random_scorer("bam-window", seed=9)
    assert sc.window == 256
    x = raw_features(2, 700)
    np.testing.assert_allclose(ort_scorer(sc).score(x), sc.score(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("type_name", TYPES)
def test_zero_scorer_onnx_is_zero(type_name: str) -> None:
    out = ort_scorer(zero_scorer(type_name)).score(raw_features(2, 33))
    assert np.all(out == 0.0)


def test_backward_mask_in_graph() -> None:
    sc = random_scorer("bam", seed=6, scale=0.1)
    onx = ort_scorer(sc, block_elems=1)
    x = raw_features(2, 40, seed=7)
    base = onx.score(x)
    older = x.copy()
    older[:, 10] += 3.0
    np.testing.assert_allclose(onx.score(older)[:, 11:], base[:, 11:], rtol=0, atol=1e-6)
    newer = x.copy()
    newer[:, 30] += 3.0
    assert np.all(np.abs(onx.score(newer)[:, :30] - base[:, :30]) > 1e-6)


def test_opset_and_empty_inputs() -> None:
    sc = random_scorer("bam-window", options={"window": 3})
    x = raw_features(2, 20)
    onx13 = OnnxScorer(build_onnx_model(sc, opset=13).SerializeToString(), "cpu")
    np.testing.assert_allclose(onx13.score(x), sc.score(x), rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="opset"):
        build_onnx_model(sc, opset=11)
    assert onx13.score(np.zeros((4, 0, 25), np.float32)).shape == (4, 0)


def test_export_file_and_metadata(tmp_path) -> None:
    sc = random_scorer(
        "bam-window", options={"window": 9}, aggregation="max", provenance={"seed": 5}
    )
    path = tmp_path / "s.onnx"
    export_onnx(sc, path, provenance={"command": "edge-namm export"})
    model = onnx.load(str(path))
    onnx.checker.check_model(model)
    meta = {p.key: p.value for p in model.metadata_props}
    assert meta["format"] == "edge-namm-scorer" and json.loads(meta["version"]) == 1
    assert meta["type"] == "bam-window" and json.loads(meta["n_params"]) == 4172
    assert meta["aggregation"] == "max"
    assert json.loads(meta["features"]) == DEFAULT_FEATURE_CONFIG
    assert json.loads(meta["provenance"]) == {"seed": 5, "command": "edge-namm export"}
    assert json.loads(meta["options"]) == {"window": 9}
    assert len(json.loads(meta["normalization"])["mean"]) == 17
    assert [i.name for i in model.graph.input] == ["features"]
    assert [o.name for o in model.graph.output] == ["scores"]
    assert read_onnx_metadata(path)["type"] == "bam-window"

    loaded = load_onnx_scorer(path, expect_features=dict(DEFAULT_FEATURE_CONFIG), providers="cpu")
    assert loaded.type_name == "bam-window" and loaded.n_params == 4172
    assert loaded.options == {"window": 9} and loaded.aggregation == "max"
    assert loaded.provenance["command"] == "edge-namm export"
    assert loaded.feature_config == DEFAULT_FEATURE_CONFIG
    np.testing.assert_array_equal(loaded.norm_mean, sc.norm_mean)
    assert loaded.backend == "onnx" and loaded.provider == "CPUExecutionProvider"
    x = raw_features(2, 30)
    np.testing.assert_allclose(loaded.score(x), sc.score(x), rtol=1e-4, atol=1e-4)


def test_feature_mismatch(tmp_path) -> None:
    path = tmp_path / "s.onnx"
    export_onnx(random_scorer("mlp"), path)
    with pytest.raises(ScorerFileError, match=r"feature configuration mismatch: n_fft"):
        load_onnx_scorer(path, expect_features={**DEFAULT_FEATURE_CONFIG, "n_fft": 64})


def _relu_model(
    inp: str = "features", out: str = "scores", meta: dict | None = None, in_shape=("R", "N", 25)
) -> bytes:
    g = helper.make_graph(
        [
            helper.make_node("Relu", [inp], ["r"]),
            helper.make_node("ReduceSum", ["r"], [out], keepdims=0, axes=[2]),
        ],
        "g",
        [helper.make_tensor_value_info(inp, TensorProto.FLOAT, list(in_shape))],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, ["R", "N"])],
    )
    ops = [helper.make_opsetid("", 12)]
    m = helper.make_model(g, opset_imports=ops, ir_version=helper.find_min_ir_version_for(ops))
    if meta:
        helper.set_model_props(m, meta)
    return m.SerializeToString()


def _scorer_meta() -> dict:
    model = build_onnx_model(zero_scorer("mlp"))
    return {p.key: p.value for p in model.metadata_props}


def test_bad_onnx_files(tmp_path) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"\x00\x01 definitely not protobuf \xff" * 10)
    with pytest.raises(ScorerFileError, match="not an ONNX model"):
        load_onnx_scorer(junk)
    with pytest.raises(ScorerFileError, match="cannot read"):
        load_onnx_scorer(tmp_path / "missing.onnx")
    with pytest.raises(ScorerFileError, match="not an edge-namm ONNX scorer"):
        OnnxScorer(_relu_model())
    # Metadata says "scorer" but the graph has the wrong interface.
    with pytest.raises(ScorerFileError, match="input 'features'.*got x"):
        OnnxScorer(_relu_model(inp="x", meta=_scorer_meta()))
    with pytest.raises(ScorerFileError, match="input 'features'"):
        OnnxScorer(_relu_model(meta=_scorer_meta(), in_shape=("R", "N", 24)))
    with pytest.raises(ScorerFileError, match="output 'scores'"):
        OnnxScorer(_relu_model(out="y", meta=_scorer_meta()))
    # The relu model with correct interface + metadata is accepted (interface is all we check).
    assert OnnxScorer(_relu_model(meta=_scorer_meta()), "cpu").type_name == "mlp"
    # Bad metadata is reported like a bad JSON scorer file.
    with pytest.raises(ScorerFileError, match="unknown scorer type 'lstm'"):
        OnnxScorer(_relu_model(meta={**_scorer_meta(), "type": "lstm"}))
    with pytest.raises(ScorerFileError, match="unsupported scorer file version"):
        OnnxScorer(_relu_model(meta={**_scorer_meta(), "version": "7"}))


def test_bad_score_inputs() -> None:
    onx = ort_scorer(zero_scorer("mlp"))
    with pytest.raises(ValueError, match=r"\[rows, cells, 25\]"):
        onx.score(np.zeros((3, 25), np.float32))
    with pytest.raises(ValueError, match=r"\[rows, cells, 25\]"):
        onx.score(np.zeros((1, 3, 26), np.float32))
    assert onx.score(np.zeros((1, 3, 25), np.float64)).dtype == np.float32


def test_provider_fallback_warns_once() -> None:
    data = build_onnx_model(zero_scorer("mlp")).SerializeToString()
    missing = "NoSuchExecutionProvider"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        onx = OnnxScorer(data, [missing])
    msgs = [str(w.message) for w in caught]
    assert len(msgs) == 1 and missing in msgs[0] and "\n" not in msgs[0]
    assert onx.provider == "CPUExecutionProvider"
    with pytest.warns(RuntimeWarning, match=missing):
        assert OnnxScorer(data, ["cpu", missing]).provider == "CPUExecutionProvider"
    if sys.platform != "darwin":
        with pytest.warns(RuntimeWarning, match="CoreMLExecutionProvider"):
            assert OnnxScorer(data, "coreml").provider == "CPUExecutionProvider"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert OnnxScorer(data, "cpu").provider == "CPUExecutionProvider"
        auto = OnnxScorer(data)  # auto never warns
    assert auto.provider.endswith("ExecutionProvider")


def test_compile_scorer() -> None:
    sc = random_scorer("mlp2")
    assert compile_scorer(sc, "numpy") is sc
    assert sc.backend == "numpy" and sc.provider == "numpy"
    onx = compile_scorer(sc, "onnx", providers="cpu", intra_op_threads=1)
    assert onx.backend == "onnx" and onx.provider == "CPUExecutionProvider"
    assert onx.info()["type"] == "mlp2"
    x = raw_features(4, 50)
    np.testing.assert_allclose(onx.score(x), sc.score(x), rtol=1e-4, atol=1e-4)
    auto = compile_scorer(sc)
    assert auto.backend == "onnx"
    assert compile_scorer(onx) is onx
    with pytest.raises(ValueError, match="backend"):
        compile_scorer(sc, "tvm")


def test_graph_helper_names_unique() -> None:
    g = _Graph("p_")
    assert len({g.name("a") for _ in range(5)}) == 5


def _split_sizes(model) -> list[int]:
    """Widths of the q, k and v projections of an exported BAM graph (outer graph or Loop body)."""
    inits = list(model.graph.initializer)
    for node in model.graph.node:
        inits += [t for a in node.attribute if a.g.name for t in a.g.initializer]
    widths = {
        t.name.removeprefix("body_").split("_W_")[0]: t.dims[1] for t in inits if "_W_" in t.name
    }
    return [widths["q"], widths["k"], widths["v"]]


@pytest.mark.parametrize("type_name", ["bam", "bam-window"])
def test_dead_attention_dims_are_left_out_exactly(type_name: str) -> None:
    """A bam-diagonal BAM uses 8 q/k dims and 25 v dims of 32: the graph keeps only those."""
    from edge_namm.train.subspace import bam_diagonal

    sub = bam_diagonal(np.zeros(SCORERS["bam"].n_params))
    theta = np.random.default_rng(3).normal(0.0, 0.5, sub.dims)
    base = random_scorer(type_name, options={"window": 7} if type_name == "bam-window" else None)
    sc = base.with_params(sub.embed(theta))
    model = build_onnx_model(sc, block_elems=1)
    assert _split_sizes(model) == [8, 8, 25]
    x = raw_features(3, 150, seed=5)
    got = OnnxScorer(model.SerializeToString(), "cpu").score(x)
    np.testing.assert_allclose(got, sc.score(x), rtol=1e-4, atol=1e-4)
    # a dense BAM keeps every dim, an all-zero one a single (zero) dim of each
    assert _split_sizes(build_onnx_model(random_scorer(type_name))) == [32, 32, 32]
    assert _split_sizes(build_onnx_model(zero_scorer(type_name))) == [1, 1, 1]


@pytest.mark.parametrize("window, rows, want", [(64, 90, 64), (5, 3, 64), (256, 90, 203)])
def test_window_blocks_stay_near_the_window(window: int, rows: int, want: int) -> None:
    """Blocks much longer than the window compute logits the mask throws away."""
    from edge_namm.scorers.bam import attn_block_size

    assert attn_block_size(rows, 4096, window) == want
    sc = random_scorer("bam-window", options={"window": window})
    x = raw_features(rows, 300, seed=window)
    np.testing.assert_allclose(ort_scorer(sc).score(x), sc.score(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("type_name", ["bam", "bam-window"])
def test_bam_window_projects_keys_per_block(type_name: str) -> None:
    """bam-window holds no [R, N, dims] k/v buffers: its projections all run inside the Loop."""
    model = build_onnx_model(random_scorer(type_name))
    outer_matmuls = sum(n.op_type == "MatMul" for n in model.graph.node)
    assert outer_matmuls == (2 if type_name == "bam" else 0)
