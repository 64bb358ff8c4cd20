"""benchmarks/reasoner/exit_replay.py: the replayed rules pick the boundary their definition says."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from specexit.exit_policy import ExitConfig

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "reasoner" / "exit_replay.py"


@pytest.fixture(scope="module")
def replay():
    spec = importlib.util.spec_from_file_location("exit_replay", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def row(answers, cuts=None, right=None, thinking=100, conf=None):
    cuts = cuts or [10 * (i + 1) for i in range(len(answers))]
    return {"key": (0, 0), "labelled": True, "thinking": thinking, "full_right": True, "cuts": cuts,
            "right": right or [False] * len(answers), "probe": [], "answers": answers,
            "signals": {"confidence": conf} if conf else {}}  # fmt: skip


def test_agreement_exits_where_an_answer_is_given_the_kth_time(replay):
    # an intermediate number (6) repeats before the final one (30): agreement counts any answer
    r = row(["6", None, "6", "30", "30", "30"])
    assert replay.agreement_rule(1, 0)(r) == 0
    assert replay.agreement_rule(2, 0)(r) == 2  # the unanswered probe counts for nothing
    assert replay.agreement_rule(3, 0)(r) == 5
    assert replay.agreement_rule(4, 0)(r) is None


def test_agreement_counts_only_probed_boundaries(replay):
    r = row(["6", "6", "30", "30"], cuts=[10, 40, 60, 80], conf=[0.9, 0.1, 0.9, 0.9])
    gated = ExitConfig(thresholds={"confidence": 0.5}, smoothing="none", readout="boundary", agree=2)
    assert replay.rule_pick(gated)(r) == 3  # the second "6" was never probed
    assert replay.agreement_rule(2, 50)(r) == 3  # boundaries before 50 thinking tokens are not probed


def test_apply_scores_the_forced_answer_where_the_rule_exits(replay):
    rows = [row(["6", "6"], right=[False, False]), row(["30", "30"], right=[True, True])]
    rows[1]["key"] = (1, 0)
    s = replay.apply(rows, replay.agreement_rule(2, 0))
    assert s["accuracy"] == 0.5 and s["exit_rate"] == 1.0
    assert s["thinking_cut"] == pytest.approx(1 - (20 + 20) / 200)
