"""``specexit reasoner``: the recipe that turns a zoo model into a thinking model (docs/reasoner.md).

Stages so far: ``problems`` (the training mix and held-out problems).  The base model's own sampled
solutions are drawn with ``specexit train traces`` (docs/reasoner.md shows the command).
"""

from __future__ import annotations

import argparse

from ..errors import ConfigError


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}") from None
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {n}")
    return n


def register(subparsers) -> argparse.ArgumentParser:
    r = subparsers.add_parser("reasoner", help="distil a zoo model into a <think> model that overthinks")
    sub = r.add_subparsers(dest="reasoner_cmd", required=True)
    p = sub.add_parser("problems", help="write the training mix or the held-out problems (prompt-file JSONL)")
    p.add_argument("--out", required=True, help="JSONL file to write")
    p.add_argument("--split", choices=["train", "heldout"], default="train")
    p.add_argument("--n-testbed", type=_count, default=600, help="testbed word problems")
    p.add_argument("--n-per-task", type=_count, default=100, help="problems per reasoning-gym task")
    return r


def run(a) -> int:
    from .problems import make_mix, write_problems

    if a.reasoner_cmd == "problems":
        if a.n_testbed + a.n_per_task == 0:
            raise ConfigError("--n-testbed and --n-per-task are both 0: no problems to write")
        problems = make_mix(a.n_testbed, a.n_per_task, a.split)
        write_problems(a.out, problems)
        print(f"wrote {len(problems)} {a.split} problems to {a.out}")
        return 0
    raise ConfigError(f"unknown reasoner command {a.reasoner_cmd!r}")  # pragma: no cover - argparse guards it
