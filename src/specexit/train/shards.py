"""Fan a resumable JSONL stage (traces, labels) out over several worker processes.

Launch with torchrun (``torchrun --nproc_per_node N -m specexit.cli train traces ...``) or run one
process.  Every record has a key; worker ``rank`` of ``world`` takes the keys whose stable hash falls
in its share, and appends to its own part file ``NAME.part-RANK.jsonl`` (no two processes ever write
the same file).  What is done is the union of the merged file and every part file, whoever wrote it,
so a run resumes after any worker was killed, with any number of workers, and never does a key
twice.  When all workers are through (a barrier), rank 0 merges the parts into ``NAME.jsonl``,
dropping duplicates, and removes them.
"""

from __future__ import annotations

import json
import os
import zlib
from collections.abc import Callable, Hashable
from pathlib import Path

import torch

from ..jsonl import drop_torn_tail, iter_jsonl


def launch_context() -> tuple[int, int]:
    """(rank, world size) from torchrun's environment; a gloo group is set up for the final barrier."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="gloo")
    return rank, world


def shard_of(key: Hashable, world: int) -> int:
    return zlib.crc32(json.dumps(key).encode()) % world


def part_path(path: Path, rank: int) -> Path:
    return path.with_name(f"{path.stem}.part-{rank}{path.suffix}")


def _files(path: Path) -> list[Path]:
    return [p for p in [path, *sorted(path.parent.glob(f"{path.stem}.part-*{path.suffix}"))] if p.exists()]


def done_keys(path: Path, key: Callable[[dict], Hashable]) -> set:
    keys: set = set()
    for f in _files(path):
        drop_torn_tail(f)
        if f.stat().st_size:
            keys.update(key(obj) for _, obj in iter_jsonl(f))
    return keys


def merge_parts(path: Path, key: Callable[[dict], Hashable]) -> int:
    """Fold every part file into ``path`` (first record of a key wins, sorted by key); returns the count."""
    records: dict = {}
    for f in _files(path):
        if f.stat().st_size:
            for _, obj in iter_jsonl(f):
                records.setdefault(key(obj), obj)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as out:
        for k in sorted(records):
            out.write(json.dumps(records[k], ensure_ascii=False) + "\n")
    tmp.replace(path)
    for f in _files(path):
        if f != path:
            f.unlink()
    return len(records)


def finish(path: Path, key: Callable[[dict], Hashable], world: int, rank: int) -> None:
    """Wait for every worker, then rank 0 merges the parts."""
    if world > 1:
        torch.distributed.barrier()
    if rank == 0:
        merge_parts(path, key)
    if world > 1:
        torch.distributed.barrier()
