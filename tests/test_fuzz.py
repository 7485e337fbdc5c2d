"""Property-based tests of bad input: every case gets a clear error (one of ours, with a next
step), never a crash, a hang or a silent wrong result. The number of cases tried is printed in
the test summary ("fuzz: ...")."""

from __future__ import annotations

import json
import math
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tiny_gguf import write_llama_gguf

from edge_namm import NammLlama
from edge_namm.engine import EngineConfigError, ModelFileError
from edge_namm.engine.cold import ColdStoreError
from edge_namm.scorers.base import ScorerFileError
from edge_namm.scorers.default import MODELS_DIR
from edge_namm.scorers.file import load_scorer
from edge_namm.scorers.runtime import load_onnx_scorer
from edge_namm.tasks.longbench import load_longbench

CASES: Counter = Counter()
FAST = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
SCORER = MODELS_DIR / "namm-mlp-smollm2-135m.json"
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=8,
)


def _write(tmp: Path, name: str, data: bytes) -> Path:
    path = tmp / name
    path.write_bytes(data)
    return path


def _loads_or_clear_error(path: Path) -> None:
    """A scorer file either loads into finite scores or is refused with ScorerFileError."""
    try:
        scorer = load_scorer(path)
    except ScorerFileError as exc:
        assert str(path) in str(exc)
        return
    x = np.zeros((4, 25), dtype=np.float32)
    assert np.isfinite(scorer.score(x[None])).all()


@FAST
@given(cut=st.integers(min_value=0, max_value=2000), junk=st.binary(max_size=64))
def test_truncated_or_garbled_scorer_files(tmp_path, cut, junk):
    text = SCORER.read_bytes()
    _loads_or_clear_error(_write(tmp_path, "s.json", text[:cut] + junk))
    CASES["scorer files (truncated/garbled)"] += 1


@FAST
@given(
    key=st.sampled_from(
        [
            "format",
            "version",
            "type",
            "n_params",
            "params",
            "normalization",
            "aggregation",
            "features",
            "options",
            "provenance",
        ]
    ),
    value=JSON_VALUES,
    delete=st.booleans(),
)
def test_scorer_files_with_a_wrong_field(tmp_path, key, value, delete):
    doc = json.loads(SCORER.read_text())
    if delete:
        doc.pop(key, None)
    else:
        doc[key] = value
    _loads_or_clear_error(_write(tmp_path, "s.json", json.dumps(doc).encode()))
    CASES["scorer files (wrong/missing field)"] += 1


@FAST
@given(
    index=st.integers(min_value=0, max_value=25),
    bad=st.sampled_from([math.nan, math.inf, -math.inf, 1e39, "x", None, [1.0]]),
    where=st.sampled_from(["params", "mean", "std"]),
)
def test_scorer_files_with_non_finite_or_wrong_shaped_numbers(tmp_path, index, bad, where):
    doc = json.loads(SCORER.read_text())
    target = doc["params"] if where == "params" else doc["normalization"][where]
    if index < len(target):
        target[index] = bad
    else:
        target.append(0.0)  # one value too many
    path = _write(tmp_path, "s.json", json.dumps(doc).encode())  # NaN/inf written as JSON tokens
    with pytest.raises(ScorerFileError):
        load_scorer(path)
    CASES["scorer files (NaN/inf/shape)"] += 1


@FAST
@given(data=st.binary(max_size=256))
def test_onnx_files_that_are_not_scorers(tmp_path, data):
    with pytest.raises(ScorerFileError):
        load_onnx_scorer(_write(tmp_path, "s.onnx", data))
    CASES["onnx files"] += 1


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return write_llama_gguf(tmp_path_factory.mktemp("fuzz") / "tiny.gguf", seed=3)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(fraction=st.floats(min_value=0.0, max_value=0.999), flip=st.integers(0, 255))
def test_truncated_and_corrupt_gguf_files(tmp_path, tiny, fraction, flip):
    data = bytearray(tiny.read_bytes())
    cut = bytes(data[: int(len(data) * fraction)])
    path = _write(tmp_path, "bad.gguf", cut)
    with pytest.raises(ModelFileError, match="re-download|GGUF|not found"):
        NammLlama(str(path), policy="streaming", budget=128, update_interval=32, chunk=32)
    # a corrupt byte in the header (after the magic): refused, or the model still loads
    if len(data) > 16:
        data[8 + flip % 8] ^= 0xFF
        path = _write(tmp_path, "flip.gguf", bytes(data))
        try:
            NammLlama(
                str(path), policy="streaming", budget=128, update_interval=32, chunk=32
            ).close()
        except ModelFileError:
            pass
    CASES["gguf files"] += 1


@FAST
@given(
    budget=st.integers(-10, 5000),
    interval=st.integers(-20, 600),
    chunk=st.integers(-5, 700),
    cold_budget=st.one_of(st.none(), st.integers(-5, 10)),
)
def test_absurd_budgets_intervals_and_chunks(tiny, budget, interval, chunk, cold_budget):
    try:
        llm = NammLlama(
            str(tiny),
            policy="streaming",
            budget=budget,
            update_interval=interval,
            chunk=chunk,
            recall=cold_budget is not None,
            cold_budget=cold_budget,
        )
    except (EngineConfigError, ColdStoreError) as exc:
        assert "must" in str(exc) or "too small" in str(exc)
    else:
        llm.close()
    CASES["engine settings"] += 1


@pytest.fixture(scope="module")
def tiny_llm(tiny, module_engines):
    return module_engines(tiny, policy="streaming", budget=96, update_interval=32, chunk=32)


@FAST
@given(raw=st.binary(min_size=1, max_size=80))
def test_prompts_with_invalid_utf8_decode_or_fail_clearly(tiny_llm, raw):
    tokens = tiny_llm.tokenize(raw, add_bos=True)
    tiny_llm.reset()
    out = tiny_llm.create_completion(tokens, max_tokens=2, temperature=0.0)
    assert isinstance(out["choices"][0]["text"], str)
    CASES["prompts (invalid UTF-8)"] += 1


@FAST
@given(tokens=st.lists(st.integers(-3, 600), min_size=1, max_size=20))
def test_prompts_of_special_or_out_of_vocabulary_tokens(tiny_llm, tokens):
    tiny_llm.reset()
    if all(0 <= t < tiny_llm.n_vocab() for t in tokens):
        tiny_llm.create_completion(tokens, max_tokens=2, temperature=0.0)
    else:
        with pytest.raises(ValueError, match="outside the vocabulary"):
            tiny_llm.create_completion(tokens, max_tokens=2, temperature=0.0)
    CASES["prompts (token ids)"] += 1


@FAST
@given(
    lines=st.lists(
        st.one_of(
            st.text(max_size=40),
            JSON_VALUES.map(json.dumps),
            st.just(json.dumps({"input": "q", "context": "c", "answers": ["a"], "length": 3})),
        ),
        max_size=6,
    )
)
def test_longbench_files_with_bad_lines(tmp_path, lines):
    folder = tmp_path / "lb"
    folder.mkdir(exist_ok=True)
    (folder / "hotpotqa.jsonl").write_text("\n".join(lines), encoding="utf-8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        samples = load_longbench(folder, ["hotpotqa"])
    good = sum(line.startswith('{"input": "q"') for line in lines)
    assert len(samples) == good  # every good line kept, every bad one skipped
    assert all(s.answers == ["a"] and "c" in s.context for s in samples)
    CASES["longbench lines"] += 1


def pytest_fuzz_summary() -> str:
    return "fuzz: " + ", ".join(f"{n} {what}" for what, n in sorted(CASES.items()))
