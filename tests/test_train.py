"""`edge-namm train`: config validation, train/eval split, and a tiny end-to-end run on SmolLM2."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from click.testing import CliRunner

from edge_namm.scorers.default import MODELS_DIR
from edge_namm.train import TrainConfig, TrainConfigError, Trainer
from edge_namm.train.checkpoint import CHECKPOINT, load_checkpoint
from edge_namm.train.outputs import LOG_FILE, SCORER_FILE
from edge_namm.train.record import Recording, context_importance, offline_fitness, prepare_z
from edge_namm.train.trainer import training_samples

PLACEHOLDER = MODELS_DIR / "placeholder-mlp-handset.json"


def _config(model_path: str, **kw) -> TrainConfig:
    base = dict(
        model_path=model_path,
        scorer_type="mlp",
        stages=[["passkey"]],
        lengths=[192],
        budget="80",
        update_interval=64,
        chunk=64,
        population=4,
        elites=2,
        offline_generations=1,
        online_generations=1,
        prompts=1,
        online_prompts=1,
        seed=3,
    )
    base.update(kw)
    return TrainConfig(**base)


@pytest.mark.parametrize(
    "kw, message",
    [
        (dict(stages=[["passkey", "nosuchtask"]]), "unknown task 'nosuchtask'"),
        (dict(population=1, elites=0), "population must be at least 2"),
        (dict(budget="32"), "too small"),
        (dict(budget="0.05"), "too small"),
        (dict(budget="0.5,0.05"), "budget 0.05 gives"),
        (dict(budget="0.5,lots"), "lots"),
        (dict(elites=3), "population // 2"),
        (dict(sigma=0.0), "sigma must be > 0"),
        (dict(scorer_type="transformer"), "unknown scorer type"),
        (dict(subspace="bam-diagonal"), "is for BAM scorers"),
        (dict(scorer_type="bam", subspace="tiny"), "unknown subspace 'tiny'"),
        (dict(scorer_type="bam", window=64), "--window is for --scorer-type bam-window"),
        (dict(scorer_type="bam-window", window=-1), "--window must be >= 0"),
        (dict(online_fitness="bleu"), "online fitness must be one of task, logprob"),
    ],
)
def test_bad_configs_are_refused(kw, message):
    with pytest.raises(TrainConfigError, match=message):
        _config("unused.gguf", **kw).validate()


def test_several_budgets_resolve_each():
    from edge_namm.train.trainer import budget_cells

    cfg = _config("unused.gguf", budget="0.25, 0.5,300", lengths=[1024])
    cfg.validate()
    assert cfg.budgets == ["0.25", "0.5", "300"]
    assert budget_cells(cfg, 1024) == [256, 512, 300]


def test_unknown_task_lists_the_valid_ones():
    with pytest.raises(TrainConfigError) as err:
        _config("unused.gguf", stages=[["nosuchtask"]]).validate()
    assert "passkey" in str(err.value) and "vartrack" in str(err.value)


def test_cli_reports_bad_config_without_traceback(model_path, tmp_path):
    from edge_namm.cli.main import cli

    runner = CliRunner()
    for args, message in (
        (["--tasks", "nosuchtask"], "unknown task"),
        (["--population", "1"], "population must be at least 2"),
        (["--budget", "16"], "too small"),
    ):
        res = runner.invoke(cli, ["train", "--model", model_path, "--out", str(tmp_path), *args])
        assert res.exit_code == 1, res.output
        assert message in res.output
        assert "Traceback" not in res.output


def test_train_prompts_never_overlap_eval_prompts():
    from edge_namm.tasks import approx_count_tokens, make_samples

    class Counter:
        count_tokens = staticmethod(approx_count_tokens)

    for task in ("passkey", "niah", "vartrack"):
        train = [s for _, s in training_samples([task], [512], 4, 0, Counter())]
        evals = make_samples(task, 4, 512, 0, split="eval", count_tokens=approx_count_tokens)
        assert {s.sample_id for s in train}.isdisjoint({s.sample_id for s in evals})
        assert all(s.meta.get("split") == "train" for s in train)
        train_answers = {a for s in train for a in s.answers}
        assert train_answers.isdisjoint({a for s in evals for a in s.answers})
        assert {s.context for s in train}.isdisjoint({s.context for s in evals})


def test_offline_fitness_prefers_keeping_important_tokens():
    """A scorer that keeps old tokens beats one that keeps recent ones when the importance
    sits at the start (pure numpy, no model)."""
    from edge_namm.scorers import zero_scorer

    rng = np.random.default_rng(0)
    times = [64, 128, 192]
    spec = [rng.random((6, t, 17)).astype(np.float16) for t in times]
    imp = np.zeros(180)
    imp[10:20] = 0.1
    rec = Recording("passkey", "x", 200, 216, 180, times, spec, imp)
    base = zero_scorer("mlp")
    prepare_z([rec], base.norm_mean, base.norm_std)
    # dim 6 is cos(age * 50000**-0.5), falling from 1 at age 0 to ~0.65 at age 192
    w_old = np.zeros(26)
    w_old[6], w_old[25] = -50.0, 60.0  # all positive, larger for old tokens
    w_new = np.zeros(26)
    w_new[6] = 50.0  # all positive, larger for recent tokens
    f_old, kept_old, _ = offline_fitness(base.with_params(w_old), [rec], lambda r: [80])
    f_new, _, _ = offline_fitness(base.with_params(w_new), [rec], lambda r: [80])
    assert f_old > f_new
    assert 0 < kept_old <= 1
    # several budgets: the mean of the single-budget results
    f_big, kept_big, _ = offline_fitness(base.with_params(w_new), [rec], lambda r: [190])
    f_both, kept_both, _ = offline_fitness(base.with_params(w_new), [rec], lambda r: [80, 190])
    assert f_big > f_new
    assert f_both == pytest.approx((f_new + f_big) / 2)
    assert kept_both > kept_old / 2
    # a BAM holding the same linear scorer replays identically, on numpy and on ONNX Runtime
    from edge_namm.scorers.bam import bam_params_from_linear

    bam = zero_scorer("bam").with_params(bam_params_from_linear(w_old))
    for backend in ("numpy", "onnx"):
        f_bam, kept_bam, _ = offline_fitness(bam, [rec], lambda r: [80], backend)
        assert f_bam == pytest.approx(f_old, abs=1e-6)
        assert kept_bam == pytest.approx(kept_old)


def test_context_importance_normalises_and_caps_sinks():
    before = np.zeros((2, 3, 50))
    after = np.zeros((2, 3, 60))
    after[..., 0] = 10.0  # the attention sink
    after[..., 30] = 1.0
    imp = context_importance(before, after[..., :50], 40)
    assert imp.shape == (40,)
    assert imp.sum() == pytest.approx(1.0)
    assert imp[0] <= imp[30] + 1e-12


def test_task_ratio_rewards_lower_perplexity():
    """Perplexity is lower-is-better: a candidate that lowers it must score above 1."""
    from edge_namm.train.fitness import task_ratio

    assert task_ratio([0.5, 1.0], [1.0, 1.0]) == pytest.approx(0.75)
    assert task_ratio([30.0], [40.0], lower_is_better=True) == pytest.approx(40 / 30)
    assert task_ratio([50.0], [40.0], lower_is_better=True) < 1.0
    assert task_ratio([0.5], [0.0]) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "name, window, want",
    [
        ("namm-bam-smollm2-135m.json", None, 256),  # a full BAM: bam-window's default
        ("namm-bam-w64-smollm2-135m.json", None, 64),  # a bam-window keeps its window
        ("namm-bam-w64-smollm2-135m.json", 16, 16),  # unless --window says otherwise
    ],
)
def test_bam_window_starts_from_either_bam_type(tmp_path, name, window, want):

    from edge_namm.scorers import load_scorer

    src = MODELS_DIR / name
    for subspace in ("full", "bam-diagonal"):  # the shipped BAMs lie in bam-diagonal
        cfg = _config(
            "unused.gguf",
            scorer_type="bam-window",
            init_scorer=str(src),
            window=window,
            subspace=subspace,
        )
        tr = Trainer(cfg, tmp_path / subspace, progress=False)
        tr.state = tr._init_state()
        start = tr.params_of(tr.state.optimizer.mean)
        np.testing.assert_allclose(start, load_scorer(src).params, rtol=1e-6)
        assert tr.base_scorer().window == want


@pytest.mark.slow
def test_tiny_training_run_checkpoints_resumes_and_ships(model_path, tmp_path):
    from edge_namm.scorers import load_scorer

    out = tmp_path / "run"
    config = _config(model_path)
    trainer = Trainer(config, out, progress=False, echo=lambda _m: None)
    trainer.run(max_generations=1)  # "killed" after the first generation
    assert (out / CHECKPOINT).is_file()
    assert trainer.state.gen == 1
    first_mean = np.array(trainer.state.optimizer.mean)

    with pytest.raises(TrainConfigError, match="--resume"):
        Trainer(_config(model_path), out, progress=False)

    resumed = Trainer(_config(model_path), out, resume=True, progress=False, echo=lambda _m: None)
    assert resumed.state.gen == 1
    np.testing.assert_array_equal(resumed.state.optimizer.mean, first_mean)
    scorer = resumed.run()
    assert resumed.state.gen == 2  # the generation count continues
    assert [r["phase"] for r in resumed.state.log] == ["offline", "online"]

    rows = list(csv.DictReader(open(out / LOG_FILE)))
    assert [int(r["gen"]) for r in rows] == [1, 2]
    assert all(float(r["sigma"]) > 0 for r in rows)
    assert (out / "curve.png").stat().st_size > 1000

    loaded = load_scorer(out / SCORER_FILE)
    assert loaded.type_name == "mlp" and loaded.n_params == 26
    np.testing.assert_allclose(loaded.params, scorer.params)
    assert np.abs(loaded.params).max() > 0  # the optimizer moved the mean away from 0
    assert loaded.provenance["generations"] == 2 and loaded.provenance["seed"] == 3
    assert np.all(loaded.norm_std > 0)  # normalisation estimated from the recordings

    # a finished run takes more generations of its last phase, but never of an earlier one
    with pytest.raises(TrainConfigError, match="moved past stage 1's offline phase"):
        Trainer(_config(model_path, offline_generations=2), out, resume=True, progress=False)
    extended = Trainer(
        _config(model_path, online_generations=2),
        out,
        resume=True,
        progress=False,
        echo=lambda _m: None,
    )
    extended.run()
    assert [r["phase"] for r in extended.state.log] == ["offline", "online", "online"]
    assert load_scorer(out / SCORER_FILE).provenance["generations"] == 3

    # resuming is exact: the same means as one uninterrupted run of all three generations
    straight = Trainer(
        _config(model_path, online_generations=2),
        tmp_path / "straight",
        progress=False,
        echo=lambda _m: None,
    )
    straight.run()
    for a, b in zip(straight.state.log, extended.state.log, strict=True):
        assert a["fitness_mean"] == b["fitness_mean"] and a["sigma"] == b["sigma"]
    np.testing.assert_array_equal(straight.state.optimizer.mean, extended.state.optimizer.mean)


def test_checkpoint_restores_the_optimizer_exactly(tmp_path):
    """cmaes' pickling drops its RNG; the checkpoint keeps it, so resumed candidates match."""
    import pickle

    trainer = Trainer(
        _config("unused.gguf", init_scorer=str(PLACEHOLDER)), tmp_path / "run", progress=False
    )
    trainer.state = trainer._init_state()
    opt = trainer.state.optimizer
    sols = [opt.ask() for _ in range(opt.population_size)]
    opt.tell([(x, float(np.sum(x**2))) for x in sols])  # a non-isotropic covariance
    trainer.save_checkpoint()
    expected = [opt.ask() for _ in range(3)]
    loaded = load_checkpoint(tmp_path / "run" / CHECKPOINT)
    np.testing.assert_array_equal([loaded.optimizer.ask() for _ in range(3)], expected)

    # a checkpoint of before held the optimizer as cmaes pickles it: still loads, with a warning
    state = type(loaded).__new__(type(loaded))
    with pytest.warns(UserWarning, match="predates exact optimizer snapshots"):
        state.__setstate__(dict(loaded.__dict__, optimizer=pickle.loads(pickle.dumps(opt))))
    assert state.optimizer.population_size == opt.population_size


def test_bam_starts_from_a_linear_scorer(tmp_path):
    """--init-scorer with an mlp file and --scorer-type bam: the start is that linear scorer."""

    from edge_namm.scorers import load_scorer
    from edge_namm.scorers.bam import bam_params_from_linear

    cfg = _config("unused.gguf", scorer_type="bam", init_scorer=str(PLACEHOLDER))
    state = Trainer(cfg, tmp_path / "run", progress=False)._init_state()
    lin = load_scorer(PLACEHOLDER)
    np.testing.assert_allclose(state.optimizer.mean, bam_params_from_linear(lin.params))
    np.testing.assert_array_equal(state.norm_mean, lin.norm_mean)
    cfg = _config("unused.gguf", scorer_type="mlp2", init_scorer=str(PLACEHOLDER))
    with pytest.raises(TrainConfigError, match="types must match"):
        Trainer(cfg, tmp_path / "b", progress=False)._init_state()


@pytest.mark.slow
def test_a_subspace_run_moves_only_its_coordinates(model_path, tmp_path):
    """bam-diagonal: CMA-ES searches 84 coordinates; the shipped BAM keeps every other weight
    at the wiring, and starts from the linear scorer it was given."""

    from edge_namm.scorers import load_scorer
    from edge_namm.scorers.bam import bam_params_from_linear
    from edge_namm.train.subspace import bam_diagonal

    cfg = _config(
        model_path,
        scorer_type="bam",
        subspace="bam-diagonal",
        init_scorer=str(PLACEHOLDER),
        online_generations=0,
    )
    assert cfg.optimizer_kind() == "full"  # 84 dims: full covariance is affordable
    trainer = Trainer(cfg, tmp_path / "run", progress=False, echo=lambda _m: None)
    trainer.run()
    sub = bam_diagonal(bam_params_from_linear(load_scorer(PLACEHOLDER).params))
    assert trainer.state.optimizer.mean.shape == (sub.dims,)
    shipped = load_scorer(tmp_path / "run" / SCORER_FILE)
    assert shipped.type_name == "bam"
    fixed = np.setdiff1d(np.arange(shipped.n_params), sub.free)
    np.testing.assert_array_equal(shipped.params[fixed], sub.offset[fixed].astype(np.float32))
    assert np.abs(shipped.params[sub.free] - sub.offset[sub.free]).max() > 0  # it moved
    assert "bam-diagonal (84 coordinates" in shipped.provenance["subspace"]


def test_logprob_fitness_with_repeat_features_is_continuous_and_ships_the_flag(
    tiny_model, tmp_path
):
    """Phase 2 scores retrieval by the reference answer's probability: a real number in (0, 1]
    for every candidate (the tiny random model never answers right, so `task` would be all 0),
    and the repeat-pass features reach the recordings and the shipped scorer."""
    from edge_namm.scorers import load_scorer

    out = tmp_path / "run"
    config = _config(
        tiny_model,
        lengths=[160],
        budget="96",
        update_interval=32,
        chunk=32,
        online_fitness="logprob",
        repeat_features=True,
        llama_kwargs={"n_threads": 1},
    )
    trainer = Trainer(config, out, progress=False, echo=lambda _m: None)
    trainer.run()
    assert (out / "recordings-repeat" / "passkey.pkl").is_file()
    fulls = trainer.state.full_scores
    assert fulls and all(k.endswith(":logprob") for k in fulls)
    assert all(0.0 < v <= 1.0 for v in fulls.values())
    online = [r for r in trainer.state.log if r["phase"] == "online"]
    assert online and 0.0 < online[0]["fitness_mean"] < 10.0
    shipped = load_scorer(out / SCORER_FILE)
    assert shipped.feature_config["repeat"] is True


def test_geometry_features_widen_the_init_scorer_and_reach_recordings(tiny_model, tmp_path):
    """--geometry-features: a 25-input start is widened (its weights kept, zeros on the new
    inputs), the recordings carry key geometry per update, and the shipped scorer reads it."""
    from edge_namm.scorers import load_scorer, save_scorer
    from edge_namm.scorers.registry import zero_scorer
    from edge_namm.train.record import load_recordings

    start = zero_scorer("mlp").with_params(np.linspace(-1.0, 1.0, 26))
    save_scorer(start, tmp_path / "start.json")
    out = tmp_path / "run"
    config = _config(
        tiny_model,
        init_scorer=str(tmp_path / "start.json"),
        geometry_features=True,
        online_generations=0,
        llama_kwargs={"n_threads": 1},
    )
    trainer = Trainer(config, out, progress=False, echo=lambda _m: None)
    trainer.run()
    np.testing.assert_allclose(trainer.state.start_params[:25], start.params[:25])
    np.testing.assert_array_equal(trainer.state.start_params[25:28], 0.0)
    (rec,) = load_recordings(out / "recordings-geometry" / "passkey.pkl")
    assert len(rec.geometry) == len(rec.update_times) > 0
    for t, spec, geo in zip(rec.update_times, rec.spec, rec.geometry, strict=True):
        assert geo.shape == spec.shape[:2] + (3,) and spec.shape[1] == t
    shipped = load_scorer(out / SCORER_FILE)
    assert shipped.feature_config["geometry"] is True and shipped.n_params == 29
    assert shipped.provenance["geometry_features"] is True
    with pytest.raises(TrainConfigError, match="add --geometry-features"):
        Trainer(
            _config(tiny_model, init_scorer=str(out / SCORER_FILE)), tmp_path / "again",
            progress=False, echo=lambda _m: None,
        ).run()  # fmt: skip
