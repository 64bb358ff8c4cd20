"""specexit bench: method parsing, the runner's resume, the report's statistics, the CLI end to end."""

from __future__ import annotations

import json

import pytest
from conftest import make_thinking_tiny

from specexit.bench.datasets import load_dataset
from specexit.bench.methods import parse_method, parse_methods, split_methods
from specexit.bench.report import paired_bootstrap, pareto_front, summarize, wilson
from specexit.cli import main as cli_main
from specexit.errors import ConfigError
from specexit.prompts import DataError

ALL = "vanilla,spec,specexit,specexit[confidence=0.4,progress=off,alpha=0.5],budget:16,probe[threshold=0.9],nothink"


def test_parse_methods():
    ms = parse_methods(ALL)
    assert [m.kind for m in ms] == ["vanilla", "spec", "specexit", "specexit", "budget", "probe", "nothink"]
    assert [m.mode for m in ms] == ["vanilla", "spec", "specexit", "specexit", "spec", "spec", "spec"]
    knobbed = ms[3].exit_config
    assert knobbed.thresholds == {"confidence": 0.4, "remain": 200.0} and knobbed.alpha == 0.5
    assert ms[4].exit_config.thinking_budget == 16 and ms[5].probe.threshold == 0.9
    assert not ms[6].enable_thinking and ms[0].enable_thinking
    assert split_methods("a[x=1,y=2],b") == ["a[x=1,y=2]", "b"]
    confirmed = parse_method("specexit[confidence=0.5,progress=off,remain=off,agree=2,agree_tokens=16]").exit_config
    assert (confirmed.thresholds, confirmed.agree, confirmed.agree_tokens) == ({"confidence": 0.5}, 2, 16)
    for bad, match in [
        ("specexit[agree=-1]", "agree must be an integer >= 0"),
        ("specexit[agree=1.5]", "is not a number"),
        ("specexit[agree_tokens=0]", "agree_tokens must be"),
        ("specexit[colour=1]", "unknown knob 'colour'"),
        ("specexit[confidence=high]", "is not a number"),
        ("budget", "budget needs a token count"),
        ("eagle", "unknown method 'eagle'"),
        ("specexit[alpha=2]", "alpha must be"),
        ("specexit[confidence=off,progress=off,remain=off]", "at least one signal threshold"),
    ]:
        with pytest.raises(ConfigError, match=match):
            parse_method(bad)
    with pytest.raises(ConfigError, match="unbalanced"):
        split_methods("specexit[confidence=0.4")
    with pytest.raises(ConfigError, match="lists a method twice"):
        parse_methods("spec,spec")


def test_statistics():
    lo, hi = wilson(8, 10)
    assert lo == pytest.approx(0.4902, abs=1e-3) and hi == pytest.approx(0.9433, abs=1e-3)
    assert wilson(0, 0) == (0.0, 0.0)
    a = {i: i % 2 == 0 for i in range(100)}
    b = {i: True for i in range(100)}
    mean, low, high = paired_bootstrap(a, b)
    assert mean == pytest.approx(-0.5) and low < -0.4 and high > -0.6 and low < mean < high
    front = pareto_front([(1.0, 0.5, "a"), (2.0, 0.4, "b"), (3.0, 0.9, "c"), (0.5, 0.2, "d")])
    assert [p[2] for p in front] == ["d", "a", "c"]
    rows = summarize(
        [
            {"problem_id": "p", "method": "spec", "seed": 0, "correct": True, "extracted": True,
             "thinking_tokens": 100, "total_tokens": 120, "latency_s": 2.0, "mean_accept_length": 3.0,
             "exited_early": False},
            {"problem_id": "p", "method": "specexit", "seed": 0, "correct": True, "extracted": True,
             "thinking_tokens": 40, "total_tokens": 60, "latency_s": 0.8, "mean_accept_length": 3.0,
             "exited_early": True},
        ]
    )  # fmt: skip
    assert rows["specexit"]["latency_speedup_vs_spec"] == pytest.approx(2.5)
    assert rows["specexit"]["thinking_cut_vs_spec"] == pytest.approx(0.6)
    assert rows["specexit"]["exit_rate"] == 1.0 and rows["specexit"]["accuracy_diff_vs_spec"][0] == 0.0


def test_dataset_errors(tmp_path):
    f = tmp_path / "q.jsonl"
    f.write_text('{"question": "a"}\n')
    with pytest.raises(DataError, match="needs an 'answer'"):
        load_dataset(str(f))
    with pytest.raises(DataError, match="unknown dataset 'mmlu'"):
        load_dataset("mmlu")
    with pytest.raises(DataError, match="reasoning-gym:TASK"):
        load_dataset("reasoning-gym")


def test_gsm8k100_ships_with_the_package():  # no extra install: package data
    problems = load_dataset("gsm8k100")
    assert len(problems) == 100 and problems[0].answer.rstrip().split()[-1].isdigit()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = make_thinking_tiny(tmp_path_factory.mktemp("bench-tiny"))
    draft = tmp_path_factory.mktemp("bench-draft")
    assert cli_main(["init-draft", "--target", str(path), "--out", str(draft)]) == 0
    prompts = tmp_path_factory.mktemp("bench-data") / "q.jsonl"
    prompts.write_text('{"question": "What is 2 + 3?", "answer": "5"}\n{"question": "Half of 18?", "answer": "9"}\n')
    return path, draft, prompts


def test_two_questions_every_method_every_output_and_resume(tiny, tmp_path, capsys):
    path, draft, prompts = tiny
    out = tmp_path / "bench"
    argv = ["bench", "--target", str(path), "--draft", str(draft), "--dataset", str(prompts), "--methods", ALL,
            "--max-new-tokens", "48", "--out", str(out), "--no-progress", "--temperature", "0.7",
            "--seeds", "0,1"]  # fmt: skip
    assert cli_main([*argv, "--limit", "1"]) == 0
    first = (out / "results.jsonl").read_text().splitlines()
    assert len(first) == 7 * 2
    # a kill mid-write leaves half a line; the rerun cuts it, keeps the rest, adds only what is missing
    (out / "results.jsonl").write_text("\n".join(first[:-1]) + "\n" + first[-1][:20])
    assert cli_main(argv) == 0
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    keys = [(r["problem_id"], r["method"], r["seed"]) for r in lines]
    assert len(keys) == 2 * 7 * 2 == len(set(keys))
    assert {json.dumps(r, sort_keys=True) for r in map(json.loads, first[:-1])} <= {
        json.dumps(r, sort_keys=True) for r in lines
    }
    for name in ("summary.json", "summary.md", "run.json", "accuracy_vs_latency.png", "thinking_tokens_hist.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    summary = json.loads((out / "summary.json").read_text())
    assert list(summary) == [m.label for m in parse_methods(ALL)]
    budget = [r for r in lines if r["method"] == "budget:16"]
    assert all(r["thinking_tokens"] <= 16 for r in budget)
    assert all(r["exit"]["thinking_tokens"] == 16 and r["exit"]["boundary"] == "budget" for r in budget if r["exit"])
    assert summary["nothink"]["thinking_tokens"] == 0
    assert summary["probe[threshold=0.9]"]["probe_calls"] is not None
    assert "| specexit |" in capsys.readouterr().out


def test_bench_bad_input(tiny, tmp_path, capsys):
    path, draft, prompts = tiny
    base = ["bench", "--target", str(path), "--dataset", str(prompts), "--out", str(tmp_path / "b"), "--no-progress"]
    assert cli_main([*base, "--methods", "spec"]) == 2
    assert "needs a draft" in capsys.readouterr().err
    assert cli_main([*base, "--draft", str(draft), "--methods", "spec", "--seeds", "0,1"]) == 2
    assert "only make sense with --temperature" in capsys.readouterr().err
    assert cli_main([*base, "--draft", str(draft), "--methods", "turbo"]) == 2
    assert "unknown method 'turbo'" in capsys.readouterr().err


def test_shards_split_the_work_and_merge_into_one_report(tiny, tmp_path, capsys):
    path, draft, prompts = tiny
    out = tmp_path / "sharded"
    argv = ["bench", "--target", str(path), "--draft", str(draft), "--dataset", str(prompts),
            "--methods", "vanilla,spec", "--max-new-tokens", "24", "--out", str(out), "--no-progress",
            "--temperature", "0.7", "--seeds", "0,1", "--no-plots"]  # fmt: skip
    assert cli_main([*argv, "--shard", "0/2"]) == 0
    assert cli_main([*argv, "--shard", "1/2"]) == 0
    assert "rerun without --shard" in capsys.readouterr().out
    assert not (out / "summary.json").exists()
    parts = [[json.loads(x) for x in (out / f"results.shard{k}of2.jsonl").read_text().splitlines()] for k in (0, 1)]
    units = [{(r["problem_id"], r["seed"]) for r in part} for part in parts]
    assert len(units[0]) == len(units[1]) == 2 and not units[0] & units[1]  # whole (seed, question) units
    assert all({r["method"] for r in part if (r["problem_id"], r["seed"]) == u} == {"vanilla", "spec"}
               for part, us in zip(parts, units, strict=True) for u in us)  # fmt: skip
    assert cli_main(argv) == 0  # nothing left to run: only the report
    assert not (out / "results.jsonl").exists()  # no empty results file beside the shards'
    summary = json.loads((out / "summary.json").read_text())
    assert summary["vanilla"]["runs"] == summary["spec"]["runs"] == 4
    assert cli_main([*argv, "--shard", "2/2"]) == 2
    assert "--shard must be K/N" in capsys.readouterr().err


def test_every_method_with_an_answer_trigger(tiny, tmp_path):
    """A model run as one without think tokens: every method goes through the trigger path; nothink
    has no reasoning, a budget cuts at N and then writes the trigger, run.json records the trigger."""
    path, draft, prompts = tiny
    out = tmp_path / "bench"
    trigger = "The final answer is \\boxed{"
    argv = ["bench", "--target", str(path), "--draft", str(draft), "--dataset", str(prompts), "--methods", ALL,
            "--max-new-tokens", "40", "--out", str(out), "--no-progress", "--no-plots",
            "--answer-trigger", trigger, "--answer-markers", "@@never@@"]  # fmt: skip
    assert cli_main(argv) == 0
    lines = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines()]
    assert len(lines) == 2 * 7
    by = {(r["problem_id"], r["method"]): r for r in lines}
    for pid in {r["problem_id"] for r in lines}:
        assert by[pid, "nothink"]["thinking_tokens"] == 0
        assert by[pid, "vanilla"]["thinking_tokens"] == by[pid, "vanilla"]["total_tokens"]  # no marker: all
        budget = by[pid, "budget:16"]
        assert budget["thinking_tokens"] == 16 and budget["exit"]["boundary"] == "budget"
        assert by[pid, "spec"]["output_digest"] == by[pid, "vanilla"]["output_digest"]
    run = json.loads((out / "run.json").read_text())
    assert run["answer_trigger"] == trigger and run["answer_markers"] == ["@@never@@"]


def test_tree_option_takes_a_dynamic_tree_or_a_chain(tmp_path, capsys):
    from specexit.cli_options import parse_tree

    chain = parse_tree("chain:4")
    assert chain.chain and chain.depth == 4 and chain.total_tokens == 4
    tree = parse_tree("16,5,4")
    assert not tree.chain and (tree.total_tokens, tree.depth, tree.branching) == (16, 5, 4)
    for bad in ("chain:x", "16,5", "tree"):
        with pytest.raises(ValueError):
            parse_tree(bad)
    argv = ["bench", "--target", str(tmp_path), "--dataset", "gsm8k100", "--tree", "16,5", "--out", str(tmp_path / "o")]
    assert cli_main(argv) == 2
    assert "total,depth,branching or chain:DEPTH" in capsys.readouterr().err


def test_report_only_summarises_the_questions_every_method_finished(tiny, tmp_path, capsys):
    """Stopping the shards mid-run: --report-only writes the summary without a model, from the units
    that have every method, so a method is never measured on other questions than the rest."""
    path, draft, prompts = tiny
    out = tmp_path / "stopped"
    argv = ["bench", "--target", str(path), "--draft", str(draft), "--dataset", str(prompts),
            "--methods", "vanilla,spec", "--max-new-tokens", "24", "--out", str(out), "--no-progress",
            "--no-plots"]  # fmt: skip
    assert cli_main([*argv, "--shard", "0/2"]) == 0  # question 0, both methods
    lines = (out / "results.shard0of2.jsonl").read_text().splitlines()
    other = json.loads(lines[0]) | {"problem_id": "other-question"}  # a unit with vanilla only (killed)
    (out / "results.shard1of2.jsonl").write_text(json.dumps(other) + "\n")
    capsys.readouterr()
    assert cli_main(["bench", "--target", "unused", "--dataset", "unused", "--methods", "vanilla,spec",
                     "--out", str(out), "--report-only", "--no-plots"]) == 0  # fmt: skip
    assert "| spec |" in capsys.readouterr().out
    summary = json.loads((out / "summary.json").read_text())
    assert summary["vanilla"]["runs"] == summary["spec"]["runs"] == 1
    assert "Partial run: 1 (question, seed) units have every method" in (out / "summary.md").read_text()
    # without --methods, the report covers the methods the run was made with (run.json), not the defaults
    (out / "summary.json").unlink()
    assert cli_main(["bench", "--target", "t", "--dataset", "d", "--out", str(out), "--report-only", "--no-plots"]) == 0
    assert set(json.loads((out / "summary.json").read_text())) == {"vanilla", "spec"}
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli_main(["bench", "--target", "t", "--dataset", "d", "--out", str(empty), "--report-only"]) == 2
    err = capsys.readouterr().err
    assert "--report-only without --methods needs" in err and "run.json" in err
    bare = ["bench", "--target", "t", "--dataset", "d", "--out", str(empty), "--report-only", "--methods", "spec"]
    assert cli_main(bare) == 2
    assert "no results*.jsonl" in capsys.readouterr().err


def test_the_plots_are_drawn_when_a_method_gets_every_problem_right(tmp_path):
    """Wilson's upper bound for 6 of 6 rounded to just under 1.0 in floats, and the plot's error bar went
    negative; the interval now contains the accuracy itself."""
    pytest.importorskip("matplotlib")
    from specexit.bench.report import plots, summarize

    results = [{"problem_id": f"p{i}", "method": m, "seed": 0, "correct": m == "spec" or i < 4, "extracted": True,
                "thinking_tokens": 100 + i, "total_tokens": 120 + i, "latency_s": 1.0 + i / 10,
                "mean_accept_length": 3.0, "exited_early": False, "exit": None, "finish_reason": "stop"}
               for i in range(6) for m in ("vanilla", "spec")]  # fmt: skip
    rows = summarize(results)
    assert rows["spec"]["accuracy"] == 1.0 and rows["spec"]["accuracy_ci95"][1] == 1.0  # was 0.9999999999999999
    assert all(wilson(k, n)[0] <= k / n <= wilson(k, n)[1] for n in range(1, 40) for k in range(n + 1))
    assert plots(results, rows, tmp_path)
