"""`edge-namm eval` on the real SmolLM2 model, kept tiny: ~400-token prompts, 1 sample each."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from edge_namm.eval.report import write_report
from edge_namm.eval.runner import RESULTS_FILE, parse_budget, parse_budgets, run_eval
from edge_namm.tasks import Haystack

POLICIES = "full,streaming,namm"
BUDGETS = "0.5,100000"  # half the input, and far more than the input (-> no eviction)
TASKS = "passkey,lm"
LENGTH = 320
COMMON = dict(update_interval=128, chunk=64, samples=1, seed=0, mode="after", n_threads=1)


@pytest.fixture(scope="module")
def haystack_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("haystack")
    (d / "filler.txt").write_text(" ".join(Haystack.synthetic(0).sentences), encoding="utf-8")
    return d


@pytest.fixture(scope="module")
def scorer(tmp_path_factory) -> str | None:
    """The shipped scorer when present, else a zero linear scorer written here."""
    from edge_namm.scorers.default import default_scorer_path

    if default_scorer_path().is_file():
        return None
    from edge_namm.scorers.file import save_scorer
    from edge_namm.scorers.registry import zero_scorer

    path = tmp_path_factory.mktemp("scorer") / "zero-mlp.json"
    save_scorer(zero_scorer("mlp"), path)
    return str(path)


def _standard_eval(model_path, haystack_dir, scorer, out):
    """The run the module's tests share; called twice to check resumability."""
    return run_eval(
        model_path,
        POLICIES,
        BUDGETS,
        TASKS,
        [LENGTH],
        out_dir=out,
        haystack=haystack_dir,
        scorer=scorer,
        progress=False,
        **COMMON,
    )


@pytest.fixture(scope="module")
def run(model_path, haystack_dir, scorer, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    t0 = time.perf_counter()
    rows = _standard_eval(model_path, haystack_dir, scorer, out)
    return out, rows, time.perf_counter() - t0


def _lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line.strip()]


def test_files_rows_and_no_eviction(run):
    out, rows, _ = run
    for name in (
        RESULTS_FILE,
        "summary.csv",
        "summary.md",
        "runs.jsonl",
        "score_vs_budget.png",
        "normalised_vs_budget.png",
        "heatmap_full.png",
        "heatmap_streaming.png",
        "heatmap_namm.png",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    # full once per sample, the others once per budget and sample
    assert len(rows) == 2 * (1 + 2 + 2)
    assert len(_lines(out / RESULTS_FILE)) == len(rows)
    for r in rows:
        huge = r["budget"] == "100000"
        if r["policy"] == "full" or huge:
            assert r["no_eviction"] is True
            assert r["tokens_evicted"] == 0 or r["policy"] == "namm"
        else:
            assert r["budget"] == "50%" and r["no_eviction"] is False
            assert r["tokens_evicted"] > 0
            assert r["cells_used"] <= r["engine_cells"]
            assert r["kv_bytes_in_use"] < r["kv_bytes_full_cache"]
        assert r["length"] > 0.8 * LENGTH and r["task"] in ("passkey", "lm")
    md = (out / "summary.md").read_text()
    assert "100000 (no eviction)" in md
    assert "Normalised by the full cache" in md and "outside llama.cpp decode" in md
    assert "lm (ppl ↓)" in md
    csv_lines = _lines(out / "summary.csv")
    assert csv_lines[0].startswith("policy,budget,task,metric,n,score,normalised")
    assert len(csv_lines) == 1 + len(rows)  # one sample per group here


def test_scores_and_time_accounting(run):
    _, rows, _ = run
    for r in rows:
        assert r["seconds_total"] > 0 and r["seconds_llama"] > 0 and r["seconds_namm"] >= 0
        assert r["seconds_llama"] + r["seconds_namm"] <= r["seconds_total"]
        if r["task"] == "lm":
            assert r["metric"] == "perplexity" and 1 < r["score"] < 1e4
            assert r["n_generated"] > 100  # the scored continuation
        else:
            assert 0 <= r["score"] <= 1 and r["metric"] == "exact_contains"
            assert r["depth"] == 0.5 and isinstance(r["prediction"], str)
    full = {r["task"]: r["score"] for r in rows if r["policy"] == "full"}
    # a budget that evicts nothing gives the full cache's result for a non-negative-evicting policy
    for r in rows:
        if r["policy"] == "streaming" and r["budget"] == "100000":
            assert math.isclose(r["score"], full[r["task"]], rel_tol=1e-6)


def test_rerun_skips_finished_rows(run, model_path, haystack_dir, scorer):
    out, rows, first = run
    n_lines = len(_lines(out / RESULTS_FILE))
    t0 = time.perf_counter()
    again = _standard_eval(model_path, haystack_dir, scorer, out)
    took = time.perf_counter() - t0
    assert len(_lines(out / RESULTS_FILE)) == n_lines
    assert [r["prediction"] for r in again] == [r["prediction"] for r in rows]
    assert took < max(10.0, first / 3)


def test_deterministic_with_a_seed(run, model_path, haystack_dir, tmp_path):
    _, rows, _ = run
    again = run_eval(
        model_path,
        "streaming",
        "0.5",
        "passkey",
        [LENGTH],
        out_dir=tmp_path,
        haystack=haystack_dir,
        progress=False,
        report=False,
        **COMMON,
    )
    before = [
        r
        for r in rows
        if r["policy"] == "streaming" and r["budget"] == "50%" and r["task"] == "passkey"
    ]
    assert [r["prediction"] for r in again] == [r["prediction"] for r in before]
    assert again[0]["tokens_evicted"] == before[0]["tokens_evicted"]


def test_cli_prints_summary_and_reuses_rows(run, model_path, haystack_dir, scorer):
    from edge_namm.cli.main import cli

    out, rows, _ = run
    extra = ["--scorer", scorer] if scorer else []
    result = CliRunner().invoke(
        cli,
        [
            "eval",
            "--model",
            model_path,
            "--policies",
            POLICIES,
            "--budgets",
            BUDGETS,
            "--tasks",
            TASKS,
            "--lengths",
            str(LENGTH),
            "--samples",
            "1",
            "--seed",
            "0",
            "--out",
            str(out),
            "--haystack",
            str(haystack_dir),
            "--update-interval",
            "128",
            "--chunk",
            "64",
            "--threads",
            "1",
            *extra,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "## Score per policy × budget" in result.output
    assert str(out / "summary.md") in result.output
    assert len(_lines(out / RESULTS_FILE)) == len(rows)


@pytest.mark.parametrize(
    ("kwargs", "listed"),
    [
        (dict(policies="full,bogus"), "streaming"),
        (dict(tasks="passkey,nosuchtask"), "vartrack"),
        (dict(tasks="longbench:nosuchset"), "hotpotqa"),
    ],
)
def test_unknown_names_list_the_valid_ones(model_path, tmp_path, kwargs, listed):
    args = dict(policies="full", budgets="0.5", tasks="passkey", lengths=[LENGTH])
    args.update(kwargs)
    with pytest.raises(ValueError, match=listed):
        run_eval(model_path, out_dir=tmp_path, progress=False, **args)
    assert not (tmp_path / RESULTS_FILE).exists()


def test_cli_unknown_policy_is_a_one_line_error(model_path, tmp_path):
    from edge_namm.cli.main import cli

    result = CliRunner().invoke(
        cli, ["eval", "--model", model_path, "--policies", "bogus", "--out", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert "unknown policy 'bogus'" in result.output and "h2o" in result.output
    assert "Traceback" not in result.output


def test_budget_parsing():
    assert parse_budget("1024").cells == 1024
    assert parse_budget("0.25").fraction == 0.25 and parse_budget("25%").label == "25%"
    assert parse_budget(0.125).label == "12.5%"
    assert parse_budget("0.25").resolve(1000) == 256  # rounded to 16 cells
    assert len(parse_budgets("0.25,25%,512")) == 2
    assert parse_budget("none").unbounded and parse_budget("None").label == "none"
    assert parse_budget("none").resolve(1000) == 1000
    for bad in ("abc", "-3", "0", "0%"):
        with pytest.raises(ValueError, match="budget"):
            parse_budget(bad)


@pytest.mark.parametrize("command", ["eval", "chat", "serve"])
def test_recall_max_takes_tokens_or_a_share_and_says_what_else(command):
    import click

    from edge_namm.cli.main import cli
    from edge_namm.cli.options import RecallCap

    cap = RecallCap()
    assert cap.convert("256", None, None) == 256
    assert cap.convert("0.5", None, None) == cap.convert("50%", None, None) == 0.5
    for bad in ("half", "0", "1.5", "-3", "150%"):
        with pytest.raises(click.BadParameter, match="token count"):
            cap.convert(bad, None, None)
    result = CliRunner().invoke(cli, [command, "--recall-max", "lots"])
    assert result.exit_code == 2 and "neither a token count (256) nor a share" in result.output
    assert "Traceback" not in result.output


def test_budget_none_lets_only_the_policys_rule_evict(model_path, haystack_dir, tmp_path):
    """``--budgets none``: no cap; NAMM's score < 0 rule still evicts, streaming keeps all."""
    import numpy as np

    from edge_namm.scorers.file import save_scorer
    from edge_namm.scorers.registry import zero_scorer

    params = np.zeros(zero_scorer("mlp").n_params)
    params[-1] = -1.0  # every score negative: the rule evicts all it may
    path = tmp_path / "negative.json"
    save_scorer(zero_scorer("mlp").with_params(params), path)
    rows = run_eval(
        model_path,
        "streaming,namm",
        "none",
        "lm",
        [LENGTH],
        out_dir=tmp_path / "out",
        haystack=haystack_dir,
        scorer=str(path),
        progress=False,
        **COMMON,
    )
    by = {r["policy"]: r for r in rows}
    assert set(by) == {"streaming", "namm"}
    for r in rows:
        assert r["budget"] == "none" and r["no_eviction"] is False
        assert r["engine_cells"] >= r["tokens_seen"]
    assert by["streaming"]["tokens_evicted"] == 0
    assert by["namm"]["tokens_evicted"] > 0
    assert by["namm"]["cells_used"] < by["namm"]["tokens_seen"] / 2
    assert "none" in (tmp_path / "out" / "summary.md").read_text()


def _longbench_record(i: int) -> dict:
    context = " ".join(f"Paragraph {k}: the river town number {k} grows apples." for k in range(10))
    context += f" The festival of the town is held in month {i + 3}."
    return {
        "input": "In which month is the festival held?",
        "context": context,
        "answers": [f"month {i + 3}"],
        "length": 300,
        "dataset": "hotpotqa",
        "language": "en",
        "all_classes": None,
        "_id": f"rec{i}",
    }


def test_longbench_file_with_a_malformed_line(model_path, tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    good = [json.dumps(_longbench_record(i)) for i in range(2)]
    lines = [good[0], '{"input": "broken', good[1]]
    (data / "hotpotqa.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with pytest.warns(UserWarning, match=r"hotpotqa\.jsonl:2"):
        rows = run_eval(
            model_path,
            "streaming",
            "0.5",
            "longbench:hotpotqa",
            [LENGTH],
            out_dir=tmp_path / "o",
            data_dir=data,
            progress=False,
            report=False,
            **dict(COMMON, samples=5),
        )
    assert [r["sample_id"] for r in rows] == ["rec0", "rec1"]
    assert {r["task"] for r in rows} == {"longbench:hotpotqa"}
    assert all(r["metric"] == "qa_f1" and 0 <= r["score"] <= 1 for r in rows)
    paths = write_report(tmp_path / "o")
    assert "longbench:hotpotqa" in paths["md"].read_text()


def test_per_sample_ratios_invert_perplexity():
    """Summary.per_sample: accuracy-like scores are policy / full, perplexity full / policy,
    and samples the full cache did not run are left out."""
    from edge_namm.eval.report import Summary

    def row(policy, task, metric, sid, score):
        return dict(
            policy=policy,
            budget="full" if policy == "full" else "25%",
            task=task,
            metric=metric,
            sample_id=sid,
            score=score,
        )

    rows = [
        row("full", "lm", "perplexity", "a", 20.0),
        row("full", "lm", "perplexity", "b", 30.0),
        row("tova", "lm", "perplexity", "a", 25.0),
        row("tova", "lm", "perplexity", "b", 30.0),
        row("tova", "lm", "perplexity", "c", 10.0),  # no full-cache run: left out
        row("full", "passkey", "exact", "p", 1.0),
        row("tova", "passkey", "exact", "p", 0.5),
    ]
    s = Summary(rows)
    assert s.per_sample("tova", "25%", "lm") == pytest.approx({"a": 0.8, "b": 1.0})
    assert s.per_sample("tova", "25%", "passkey") == pytest.approx({"p": 0.5})
    assert s.per_sample("h2o", "25%", "lm") == {}
