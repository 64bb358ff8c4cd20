"""Choosing and certifying an exit rule (specexit.calibration.choose), the policy file, and the CLI."""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import pytest

from specexit.calibration.choose import calibrate, split_problems
from specexit.calibration.replay import TraceSignals, summarize
from specexit.cli import main
from specexit.errors import ConfigError
from specexit.policy_file import CalibratedPolicy, load_policy, read_policy, rule_of, write_policy

ASSETS = Path(__file__).resolve().parents[1] / "src" / "specexit" / "assets"


def synthetic(n: int, seed: int, p_settled_wrong: float = 0.02) -> list[TraceSignals]:
    """Traces of 8 boundaries, 40 tokens apart; the answer is right from boundary j* on, where the
    confidence signal jumps from ~0.2 to ~0.9 (but with probability ``p_settled_wrong`` the jump comes
    one boundary early, where the forced answer is still wrong)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        j = rng.randrange(1, 6)
        early = rng.random() < p_settled_wrong
        conf = tuple(min(1.0, max(0.0, (0.9 if k >= j - early else 0.2) + rng.gauss(0, 0.04))) for k in range(8))
        prog = tuple((k + 1) / 9 for k in range(8))
        out.append(TraceSignals(i, 0, 360, rng.random() < 0.97, tuple(40 * (k + 1) for k in range(8)),
                                tuple(k >= j for k in range(8)), {"confidence": conf, "progress": prog}))  # fmt: skip
    return out


def test_the_chosen_rule_cuts_and_keeps_its_promise_on_fresh_problems():
    cal = calibrate(synthetic(800, 0), ["confidence", "progress"], eps=0.03, delta=0.1)
    assert cal.rule is not None and cal.rule.readout == "boundary"
    test = summarize(cal.rule, synthetic(4000, 1))
    assert test["thinking_cut"] > 0.3  # a real cut: the signal is informative
    assert test["accuracy_full"] - test["accuracy_exit"] <= 0.03


def test_nothing_is_certified_when_every_exit_loses_too_much():
    # the confidence jump always comes one boundary early: every exiting rule loses ~97% of the answers
    cal = calibrate(synthetic(400, 0, p_settled_wrong=1.0), ["confidence", "progress"], eps=0.01, delta=0.1)
    assert cal.rule is None or summarize(cal.rule, synthetic(2000, 2, 1.0))["exit_rate"] == 0.0


def test_selection_and_certification_parts_are_disjoint_problems():
    traces = [*synthetic(100, 0), TraceSignals(5, 1, 10, True, (), (), {"confidence": ()})]  # a 2nd sample
    select, cert = split_problems(traces, 0.3, seed=3)
    ids = [t.prompt_id for t in select + cert]
    assert len(select) == 30 and len(ids) == len(set(ids)) == 100 and all(t.sample == 0 for t in select + cert)


def test_too_few_problems_are_refused():
    with pytest.raises(ConfigError, match="too few"):
        calibrate(synthetic(20, 0), ["confidence"], eps=0.05, delta=0.1)


def _policy(tmp_path, threshold: float = 0.5) -> CalibratedPolicy:
    from specexit.exit_policy import ExitConfig

    rule = rule_of(ExitConfig(thresholds={"confidence": threshold}, smoothing="none", readout="boundary"))
    return CalibratedPolicy(rule, {"eps": 0.01, "delta": 0.1, "loss": "net", "n": 500}, {"thinking_cut": 0.4}, {})


def test_policy_file_round_trips_and_bad_files_are_named(tmp_path):
    path = write_policy(_policy(tmp_path), tmp_path / "exit_policy.json")
    pol = read_policy(path)
    cfg = pol.exit_config()
    assert cfg.thresholds == {"confidence": 0.5} and cfg.readout == "boundary"
    assert cfg.origin["source"] == "calibrated" and cfg.origin["eps"] == 0.01 and cfg.origin["policy"] == str(path)
    assert load_policy(tmp_path).rule == pol.rule and load_policy(tmp_path / "nothing") is None
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "exit_policy.json").write_text(json.dumps({**pol.to_dict(), "rule": {"thresholds": {"x": 1}}}))
    with pytest.raises(ConfigError, match=r"bad/exit_policy.json: invalid rule"):
        load_policy(bad)
    (bad / "exit_policy.json").write_text("{")
    with pytest.raises(ConfigError, match="not a readable exit policy"):
        load_policy(bad)


def test_generate_uses_the_drafts_calibrated_rule_and_flags_replace_it(tmp_path, capsys):
    draft = tmp_path / "draft"
    shutil.copytree(ASSETS / "testbed-draft", draft)
    write_policy(_policy(tmp_path, threshold=0.05), draft / "exit_policy.json")
    base = ["generate", "--target", str(ASSETS / "testbed"), "--draft", str(draft), "--max-new-tokens", "200",
            "--json", "--prompt", "Tom has 3 apples and buys 4 more. How many apples does he have?"]  # fmt: skip
    assert main(base) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["exit"] is not None and out["exit"]["origin"]["source"] == "calibrated"
    assert out["exit"]["thresholds"] == {"confidence": 0.05}
    # every signal at the exit point, for audits (e.g. predicted remaining thinking vs the actual)
    assert set(out["exit"]["signals_at_exit"]) == {"confidence", "progress", "remain"}
    assert out["exit"]["signals_at_exit"]["confidence"] == pytest.approx(out["exit"]["raw"]["confidence"])
    assert main([*base, "--thresholds", "confidence=0.05", "--readout", "boundary", "--smoothing", "none"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["exit"]["origin"] == {"source": "flags"}
    (draft / "exit_policy.json").write_text("not json")
    assert main(base) == 2
    assert "exit_policy.json: not a readable exit policy" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--risk", "1.5"], "--risk must be a fraction"),
        (["--risk", "0.01", "--delta", "0"], "--delta must be in (0, 1)"),
        (["--risk", "0.01", "--select-fraction", "1"], "--select-fraction"),
    ],
)
def test_calibrate_bad_numbers_are_one_line_errors(tmp_path, capsys, extra, message):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"question": "1 + 1?", "answer": "2"}) + "\n")
    argv = ["calibrate", "--target", str(ASSETS / "testbed"), "--draft", str(ASSETS / "testbed-draft"),
            "--data", str(prompts), "--out", str(tmp_path / "out"), *extra]  # fmt: skip
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and not (tmp_path / "out").exists()


def test_calibrate_end_to_end_on_the_testbed(tmp_path, capsys):
    from specexit.testbed.problems import write_jsonl

    prompts = write_jsonl(tmp_path / "p.jsonl", 48, seed=11, split="test")
    out = tmp_path / "cal"
    draft = tmp_path / "draft"
    shutil.copytree(ASSETS / "testbed-draft", draft)
    argv = ["--threads", "1", "calibrate", "--target", str(ASSETS / "testbed"), "--draft", str(draft), "--data",
            str(prompts), "--risk", "0.2", "--delta", "0.2", "--out", str(out), "--max-new-tokens", "400",
            "--batch-size", "16", "--no-progress", "--install"]  # fmt: skip
    rc = main(argv)
    report = json.loads((out / "calibration.json").read_text())
    problems = {json.loads(x)["prompt_id"] for x in (out / "signals.jsonl").read_text().splitlines()}
    assert report["n_select"] + report["n_certify"] == len(problems) >= 40
    if rc == 0:
        pol = read_policy(out / "exit_policy.json")
        assert pol.guarantee["eps"] == 0.2 and pol.data["temperature"] == 0.6
        assert (draft / "exit_policy.json").read_text() == (out / "exit_policy.json").read_text()
    else:
        assert rc == 1 and not (out / "exit_policy.json").exists()
        assert "no exit rule is certified" in capsys.readouterr().out
    assert main(argv) == rc  # a rerun resumes every stage and decides the same
