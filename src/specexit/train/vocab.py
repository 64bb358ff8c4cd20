"""Stage 3: the draft vocabulary — the most frequent target tokens in the traces' outputs.

EAGLE-3 drafts predict over a reduced vocabulary (32k for Llama-3 / Qwen3) to make the draft head
cheap; tokens outside it can still be accepted as the bonus token, never proposed.  Frequencies are
counted over the generated outputs only (the prompt is never drafted).  Stop tokens and the think
markers are always included: the draft must be able to propose the end of thinking and of the answer.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from ..errors import ConfigError


def count_tokens(traces: Iterable[dict]) -> Counter:
    counts: Counter = Counter()
    for tr in traces:
        counts.update(tr["output_ids"])
    return counts


def choose_vocab(counts: Counter, size: int, vocab_size: int, always: Iterable[int | None] = ()) -> list[int]:
    """Sorted target ids: the ``always`` ids, then the most frequent tokens (ties by lower id), then,
    when the traces use fewer distinct tokens than ``size``, the lowest unused ids as filler."""
    if size <= 0:
        raise ConfigError(f"draft vocabulary size must be positive, got {size}")
    size = min(size, vocab_size)
    chosen = [i for i in dict.fromkeys(always) if i is not None and 0 <= i < vocab_size][:size]
    seen = set(chosen)
    for tid, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        if len(chosen) >= size:
            break
        if 0 <= tid < vocab_size and tid not in seen:
            chosen.append(tid)
            seen.add(tid)
    filler = (i for i in range(vocab_size) if i not in seen)
    while len(chosen) < size:
        chosen.append(next(filler))
    return sorted(chosen)


def coverage(counts: Counter, used: Iterable[int]) -> float:
    """Share of output tokens that lie inside the draft vocabulary."""
    total = sum(counts.values())
    used = set(used)
    return sum(c for t, c in counts.items() if t in used) / total if total else 0.0


def save_vocab(path: str | Path, used: list[int], counts: Counter) -> None:
    Path(path).write_text(
        json.dumps({"used_ids": used, "coverage": round(coverage(counts, used), 6), "distinct": len(counts)}) + "\n"
    )


def load_vocab(path: str | Path) -> list[int]:
    return list(json.loads(Path(path).read_text())["used_ids"])
