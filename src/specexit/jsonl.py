"""JSON Lines files: one object per line.  Errors name the file and line, so a bad file never fails
somewhere deep inside a run; append-only files are made resumable by cutting a torn last line."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from .errors import SpecExitError


class DataError(SpecExitError):
    """A data file (prompts, traces, labels) is missing, empty or malformed."""


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict]]:
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


def append_jsonl(path: str | Path, records: Iterable[dict]) -> None:
    """Append one line per record (``json.dumps`` defaults: a log line reads the same everywhere)."""
    with Path(path).open("a", encoding="utf-8") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
