"""The reasoner recipe's problems: a training mix and held-out problems that never touch GSM8K's test set."""

from __future__ import annotations

import json

import pytest

from specexit.bench.datasets import load_dataset
from specexit.cli import main
from specexit.errors import ConfigError
from specexit.reasoner.problems import REASONING_GYM_TASKS, make_mix
from specexit.scoring import answers_equal, extract_answer

pytest.importorskip("reasoning_gym")


def test_mix_is_deterministic_disjoint_and_free_of_gsm8k():
    train, heldout = make_mix(60, 8, "train"), make_mix(40, 8, "heldout")
    assert [p.question for p in train] == [p.question for p in make_mix(60, 8, "train")]
    assert {p.source for p in train} == {"testbed", *(f"reasoning-gym:{t}" for t in REASONING_GYM_TASKS)}
    assert not {p.question for p in train} & {p.question for p in heldout}
    # every reasoning-gym task keeps (nearly) all its held-out problems: the two seed ranges do not overlap
    for task in REASONING_GYM_TASKS:
        assert sum(p.source == f"reasoning-gym:{task}" for p in heldout) >= 6, task
    gsm8k = {p.question for p in load_dataset("gsm8k100")}
    assert not gsm8k & {p.question for p in train + heldout}


def test_answers_are_scorable():
    for p in make_mix(20, 5, "train"):
        assert answers_equal(extract_answer(f"\\boxed{{{p.answer}}}"), p.answer), p


def test_gsm_symbolic_is_refused():
    with pytest.raises(ConfigError, match="GSM8K"):
        make_mix(0, 5, "train", tasks=("gsm_symbolic",))


def test_cli_writes_a_prompt_file(tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    assert main(["reasoner", "problems", "--out", str(out), "--n-testbed", "5", "--n-per-task", "2"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 + 2 * len(REASONING_GYM_TASKS) and all({"question", "answer"} <= set(r) for r in rows)
    empty = ["reasoner", "problems", "--out", str(tmp_path / "x.jsonl"), "--n-testbed", "0", "--n-per-task", "0"]
    assert main(empty) == 2
    assert not (tmp_path / "x.jsonl").exists()
