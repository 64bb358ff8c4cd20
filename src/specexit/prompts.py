"""Prompt files: JSONL, one object per line with ``question`` (str) and optional ``answer`` (gold).

Used by the training pipeline (traces) and by the benchmark.  Every problem is reported with the
file and line it comes from, so a bad file never fails somewhere deep inside a run.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import SpecExitError


class DataError(SpecExitError):
    """A data file (prompts, traces, labels) is missing, empty or malformed."""


@dataclass(frozen=True)
class Prompt:
    id: int  # 0-based index in the file (stable: resumable stages key on it)
    question: str
    answer: str | None


def iter_jsonl(path: str | Path):
    """Yield (line number, object) for each non-blank line; malformed JSON is a DataError naming the line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    with path.open(encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise DataError(f"{path}:{n}: expected a JSON object, got {type(obj).__name__}")
            yield n, obj


def drop_torn_tail(path: str | Path) -> None:
    """An append-only JSONL file killed mid-write ends in half a line: cut it off (it is redone)."""
    path = Path(path)
    if not path.exists():
        return
    raw = path.read_bytes()
    if raw and not raw.endswith(b"\n"):
        path.write_bytes(raw[: raw.rfind(b"\n") + 1])


def load_prompts(path: str | Path) -> list[Prompt]:
    prompts = []
    for n, obj in iter_jsonl(path):
        q = obj.get("question")
        if not isinstance(q, str) or not q.strip():
            raise DataError(f"{path}:{n}: needs a non-empty string field 'question' (got keys {sorted(obj)})")
        a = obj.get("answer")
        if a is not None and not isinstance(a, (str, int, float)):
            raise DataError(f"{path}:{n}: 'answer' must be a string or a number, got {type(a).__name__}")
        prompts.append(Prompt(id=len(prompts), question=q, answer=None if a is None else str(a)))
    if not prompts:
        raise DataError(f"{path}: no prompts (the file is empty)")
    return prompts
