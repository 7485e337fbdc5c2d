"""Training subspaces: the bam-diagonal wiring keeps its start exactly and every searched
coordinate reaches the scores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from edge_namm.scorers import SCORERS, load_scorer
from edge_namm.scorers.bam import BAM_N_PARAMS, bam_params_from_linear, unpack_bam
from edge_namm.scorers.base import AGE_DIMS, N_FEATURES
from edge_namm.train.subspace import bam_diagonal

MODELS = Path(__file__).parents[1] / "models"


def _features(n: int = 96, rows: int = 3) -> np.ndarray:
    """Normalised-scale features with a real age embedding (sin/cos of the cell's age)."""
    rng = np.random.default_rng(5)
    x = rng.normal(size=(rows, n, N_FEATURES)).astype(np.float32)
    age = np.arange(n)[::-1].astype(np.float32)  # oldest first
    freqs = 1.0 / 50.0 ** (np.arange(AGE_DIMS // 2) / (AGE_DIMS // 2))
    x[..., : AGE_DIMS // 2] = np.sin(age[:, None] * freqs)
    x[..., AGE_DIMS // 2 : AGE_DIMS] = np.cos(age[:, None] * freqs)
    return x


def _bam(params: np.ndarray):
    return SCORERS["bam"](params.astype(np.float32))  # identity normalisation


def test_the_start_scores_exactly_like_the_linear_scorer():
    lin = load_scorer(MODELS / "namm-mlp-2budget-smollm2-135m.json")
    sub = bam_diagonal(bam_params_from_linear(lin.params))
    assert sub.dims == AGE_DIMS + 2 * N_FEATURES + N_FEATURES + 1 == 84
    theta = sub.project(sub.offset)
    np.testing.assert_array_equal(sub.embed(theta)[sub.free], theta)
    x = _features()
    linear = SCORERS["mlp"](lin.params)
    np.testing.assert_allclose(_bam(sub.embed(theta)).score(x), linear.score(x), atol=1e-5)


@pytest.mark.parametrize(
    "group, coords",
    [
        ("residual", slice(AGE_DIMS, AGE_DIMS + N_FEATURES)),
        ("gate", slice(AGE_DIMS + N_FEATURES, AGE_DIMS + 2 * N_FEATURES)),
        ("score head", slice(AGE_DIMS + 2 * N_FEATURES, None)),
    ],
)
def test_every_group_of_coordinates_moves_the_scores(group, coords):
    lin = load_scorer(MODELS / "namm-mlp-2budget-smollm2-135m.json")
    sub = bam_diagonal(bam_params_from_linear(lin.params))
    theta = sub.project(sub.offset)
    x = _features()
    before = _bam(sub.embed(theta)).score(x)
    theta[coords] += 0.3
    after = _bam(sub.embed(theta)).score(x)
    assert np.abs(after - before).max() > 1e-3, group


def test_the_age_kernel_shapes_the_attention():
    """W_q's age diagonal only matters through the attention: with a residual in place,
    changing it must change the scores (the kernel over the age distance is live)."""
    sub = bam_diagonal(np.zeros(BAM_N_PARAMS))
    theta = np.zeros(sub.dims)
    theta[AGE_DIMS : AGE_DIMS + N_FEATURES] = 1.0  # residual = backward mean of features
    theta[AGE_DIMS + 2 * N_FEATURES : -1] = 1.0  # score head reads it
    x = _features()
    uniform = _bam(sub.embed(theta)).score(x)
    theta[:AGE_DIMS] = 4.0
    local = _bam(sub.embed(theta)).score(x)
    assert np.abs(local - uniform).max() > 1e-3
    p = unpack_bam(sub.embed(theta))
    assert np.all(p["W_qkv"][:AGE_DIMS, :AGE_DIMS] == np.diag(np.full(AGE_DIMS, 4.0)))


def test_a_bam_outside_the_subspace_is_refused():
    params = np.zeros(BAM_N_PARAMS)
    unpack_bam(params)["W_o"][3, 7] = 0.5  # an off-diagonal mixing weight
    with pytest.raises(ValueError, match="--subspace full"):
        bam_diagonal(params)
    with pytest.raises(ValueError, match="4172 parameters"):
        bam_diagonal(np.zeros(26))
    # W_o diagonals in use but the wiring missing: wiring it would change the scores
    unwired = np.zeros(BAM_N_PARAMS)
    unpack_bam(unwired)["W_o"][3, 3] = 0.5
    with pytest.raises(ValueError, match="--subspace full"):
        bam_diagonal(unwired)


def test_a_trained_point_of_the_subspace_resumes_in_it():
    sub = bam_diagonal(np.zeros(BAM_N_PARAMS))
    theta = np.random.default_rng(2).normal(0, 0.1, sub.dims)
    point = sub.embed(theta)
    again = bam_diagonal(point)
    np.testing.assert_array_equal(again.project(point), theta)
    np.testing.assert_array_equal(again.embed(theta), point)
