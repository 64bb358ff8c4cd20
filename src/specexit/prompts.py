"""Prompt files: JSONL, one object per line with ``question`` (str) and optional ``answer`` (gold).

Used by the training pipeline (traces) and by the benchmark.  Every problem is reported with the
file and line it comes from (``jsonl.iter_jsonl``), so a bad file never fails somewhere deep inside a run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .jsonl import DataError, iter_jsonl


@dataclass(frozen=True)
class Prompt:
    id: int  # 0-based index in the file (stable: resumable stages key on it)
    question: str
    answer: str | None


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
