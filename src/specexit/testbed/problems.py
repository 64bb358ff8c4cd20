"""Seeded multi-step arithmetic word problems and "overthinking" training traces.

No real ``<think>`` reasoning model can be installed here, so the testbed model is trained on traces
that imitate how reasoning models overthink: a step-by-step first pass (one computation per paragraph),
then a random number of redundant re-checks ("Wait, let me double-check."), then ``</think>`` and a short
boxed answer.  Some first passes contain an arithmetic slip that a later re-check usually catches
("Hmm, 23 + 24 is 47, not 46."), so exiting right after the first pass costs accuracy: the exit decision
has something to get right.

Everything is a pure function of integer seeds (``random.Random`` seeded with a string is stable across
runs and platforms), so a data set is named by ``(split, seed, n)`` and never needs to be stored.
Train and test come from disjoint seed ranges, and a problem's split is also pinned by a hash of its
computation skeleton (operations and numbers, not names), so no test computation chain occurs in training.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import random
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..errors import SpecExitError

GENERATOR_VERSION = 2
SPLITS = ("train", "test")
_SEED_BASE = {"train": 0, "test": 1_000_000_000}
_BLOCK = 10_000_000  # problems per data seed: problem i of (split, seed) has seed base + seed * _BLOCK + i
MAX_DATA_SEED = 99
_TEST_FRACTION_DEN = 8  # 1 skeleton in 8 belongs to the test split

MAX_VALUE = 300  # every result
MAX_OPERAND = 50  # every number in a question
RECHECK = "Wait, let me double-check."
PARAGRAPH = "\n\n"
FORCED_EXIT_CUTS = ("pass", "boundary")
THINK_END = "</think>"


class ProblemError(SpecExitError):
    """A bad request to the problem generator (unknown split, seed out of range)."""


# --------------------------------------------------------------------------------------------------
# problems


@dataclass(frozen=True)
class Step:
    """One computation.  ``left``/``right`` are a constant (``("c", value)``) or an earlier step's result
    (``("r", index)``), so a slipped value propagates to the steps that use it.  ``text`` is the first-pass
    sentence with ``{l}``, ``{r}``, ``{res}`` placeholders; ``unit`` ends the terse re-check line."""

    op: str
    left: tuple[str, int]
    right: tuple[str, int]
    text: str
    unit: str


@dataclass(frozen=True)
class Problem:
    seed: int
    split: str
    question: str
    answer: int
    steps: tuple[Step, ...] = field(repr=False)

    def to_prompt(self) -> dict[str, str]:
        """The prompt-file record of the training pipeline."""
        return {"question": self.question, "answer": str(self.answer)}


_NAMES = (
    ("Mia", "she"),
    ("Leo", "he"),
    ("Ana", "she"),
    ("Sam", "he"),
    ("Zoe", "she"),
    ("Ben", "he"),
    ("Emma", "she"),
    ("Noah", "he"),
    ("Lily", "she"),
    ("Omar", "he"),
    ("Nina", "she"),
    ("Jack", "he"),
    ("Rosa", "she"),
    ("Tom", "he"),
    ("Ivy", "she"),
    ("Max", "he"),
)
_ITEMS = ("apples", "pencils", "stickers", "cookies", "marbles", "cards", "eggs", "shells", "coins", "books")
_CONTAINERS = (("box", "boxes"), ("bag", "bags"), ("pack", "packs"), ("jar", "jars"), ("basket", "baskets"))
_FRIENDS = ("a friend", "a neighbor", "the teacher", "a classmate")
_GAINS = (  # question sentence, first-pass sentence; {x} is the amount
    ("{P} finds {x} more {item}.", "After finding {r} more, {p} has {l} + {r} = {res} {item}."),
    ("{P} gets {x} more {item} from {friend}.", "After getting {r} more, {p} has {l} + {r} = {res} {item}."),
    ("Then {p} buys {x} more {item}.", "After buying {r} more, {p} has {l} + {r} = {res} {item}."),
)
_LOSSES = (
    ("{P} gives {x} {item} to {friend}.", "After giving away {r}, {p} has {l} - {r} = {res} {item}."),
    ("{P} sells {x} {item}.", "After selling {r}, {p} has {l} - {r} = {res} {item}."),
    ("Then {p} loses {x} {item}.", "After losing {r}, {p} has {l} - {r} = {res} {item}."),
)


def _op(op: str, a: int, b: int) -> int:
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    return a // b


def _skeleton_split(steps: list[Step]) -> str:
    """Split of a computation skeleton: names and items are ignored, so a test problem's chain of
    operations and numbers never appears in training under another name."""
    key = ";".join(f"{s.op},{s.left},{s.right}" for s in steps)
    h = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    return "test" if h % _TEST_FRACTION_DEN == 0 else "train"


def _sample(rng: random.Random) -> tuple[str, list[Step]] | None:
    """One candidate problem (question, steps), or None when the drawn numbers do not fit."""
    name, p = rng.choice(_NAMES)
    item = rng.choice(_ITEMS)
    cont, conts = rng.choice(_CONTAINERS)
    friend = rng.choice(_FRIENDS)
    n_steps = rng.choice((2, 3, 4))
    fill = {"name": name, "p": p, "P": p.capitalize(), "item": item, "friend": friend, "cont": cont, "conts": conts}
    sentences: list[str] = []
    steps: list[Step] = []

    def add(op: str, left: tuple[str, int], right: tuple[str, int], text: str, unit: str = item) -> int:
        steps.append(Step(op, left, right, text.format(**{**fill, "l": "{l}", "r": "{r}", "res": "{res}"}), unit))
        return len(steps) - 1

    if rng.random() < 0.6:
        a, b = rng.randint(2, 9), rng.randint(2, 30)
        sentences.append(f"{name} buys {a} {conts} of {item}. Each {cont} has {b} {item}.")
        ref = add("*", ("c", a), ("c", b), "{l} {conts} with {r} {item} each is {l} * {r} = {res} {item}.")
        value = a * b
    else:
        value = rng.randint(5, MAX_OPERAND)
        sentences.append(f"{name} has {value} {item}.")
        ref = -1
    final_q = f"How many {item} does {name} have now?"
    while len(steps) < n_steps:
        left = ("r", ref) if ref >= 0 else ("c", value)
        remaining = n_steps - len(steps)
        kinds = ["gain", "gain", "loss", "loss", "double"] + (["boxes"] if remaining >= 2 else [])
        divisors = [d for d in range(2, 10) if value % d == 0 and value // d >= 2]
        if remaining == 1 and divisors and rng.random() < 0.35:
            kinds = ["share"]
        kind = rng.choice(kinds)
        if kind == "gain":
            x = rng.randint(2, MAX_OPERAND)
            q, t = rng.choice(_GAINS)
            sentences.append(q.format(**fill, x=x))
            ref, value = add("+", left, ("c", x), t), value + x
        elif kind == "loss":
            if value < 4:
                return None
            x = rng.randint(2, min(MAX_OPERAND, value - 1))
            q, t = rng.choice(_LOSSES)
            sentences.append(q.format(**fill, x=x))
            ref, value = add("-", left, ("c", x), t), value - x
        elif kind == "double":
            k = rng.choice((2, 3))
            word = {2: "doubles", 3: "triples"}[k]
            sentences.append(f"Then the number of {item} {p} has {word}.")
            text = {2: "Doubling", 3: "Tripling"}[k] + " gives {l} * {r} = {res} {item}."
            ref, value = add("*", left, ("c", k), text), value * k
        elif kind == "boxes":
            k, m = rng.randint(2, 9), rng.randint(2, 30)
            sentences.append(f"Then {p} buys {k} more {conts} with {m} {item} in each.")
            more = add("*", ("c", k), ("c", m), "{l} more {conts} with {r} {item} each is {l} * {r} = {res} {item}.")
            ref, value = add("+", left, ("r", more), "Adding them, {p} has {l} + {r} = {res} {item}."), value + k * m
        else:  # share: always the last step
            d = rng.choice(divisors)
            if rng.random() < 0.5:
                sentences.append(f"{fill['P']} shares the {item} equally among {d} friends.")
                final_q = f"How many {item} does each friend get?"
                text, unit = "Sharing {l} {item} equally among {r} friends gives {l} / {r} = {res} {item} each.", item
            else:
                sentences.append(f"{fill['P']} puts the {item} into {conts} of {d}.")
                final_q = f"How many {conts} does {p} fill?"
                text, unit = "Putting {l} {item} into {conts} of {r} fills {l} / {r} = {res} {conts}.", conts
            ref, value = add("/", left, ("c", d), text, unit), value // d
        if not 1 <= value <= MAX_VALUE:
            return None
    return " ".join([*sentences, final_q]), steps


def split_seed_range(split: str) -> range:
    """The problem seeds of a split (disjoint ranges)."""
    if split not in _SEED_BASE:
        raise ProblemError(f"unknown split {split!r}; choose from {', '.join(SPLITS)}")
    return range(_SEED_BASE[split], _SEED_BASE[split] + (MAX_DATA_SEED + 1) * _BLOCK)


def make_problem(seed: int) -> Problem:
    """The problem of a problem seed; its split is the seed range's, and drawing repeats until the
    skeleton hashes to that split."""
    split = next((s for s in SPLITS if seed in split_seed_range(s)), None)
    if split is None:
        raise ProblemError(f"problem seed {seed} is outside every split's range")
    rng = random.Random(f"specexit-testbed-v{GENERATOR_VERSION}-problem-{seed}")
    while True:
        got = _sample(rng)
        if got is not None and _skeleton_split(got[1]) == split:
            question, steps = got
            return Problem(seed, split, question, derive(tuple(steps))[-1][2], tuple(steps))


def problem_seeds(n: int, seed: int = 0, split: str = "train") -> range:
    """Seeds of the ``n`` problems named by (split, data seed)."""
    if not 0 <= seed <= MAX_DATA_SEED:
        raise ProblemError(f"data seed must be in 0..{MAX_DATA_SEED}, got {seed}")
    if not 0 <= n <= _BLOCK:
        raise ProblemError(f"n must be in 0..{_BLOCK}, got {n}")
    start = split_seed_range(split).start + seed * _BLOCK
    return range(start, start + n)


def make_problems(n: int, seed: int = 0, split: str = "train") -> list[Problem]:
    return [make_problem(s) for s in problem_seeds(n, seed, split)]


def write_jsonl(path: str | Path, n: int, seed: int = 0, split: str = "test") -> Path:
    """Write ``n`` problems as prompt-file lines ``{"question": ..., "answer": ...}``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for prob in make_problems(n, seed, split):
            f.write(json.dumps(prob.to_prompt(), ensure_ascii=False) + "\n")
    return path


# --------------------------------------------------------------------------------------------------
# traces


def derive(steps: tuple[Step, ...], slip: tuple[int, int] | None = None) -> list[tuple[int, int, int]]:
    """(left, right, result) of every step; ``slip = (step, delta)`` adds ``delta`` to that step's result
    and the error propagates to every later step that uses it."""
    out: list[tuple[int, int, int]] = []
    for i, s in enumerate(steps):
        a = s.left[1] if s.left[0] == "c" else out[s.left[1]][2]
        b = s.right[1] if s.right[0] == "c" else out[s.right[1]][2]
        res = _op(s.op, a, b) + (slip[1] if slip is not None and slip[0] == i else 0)
        out.append((a, b, res))
    return out


def _valid_chain(steps: tuple[Step, ...], values: list[tuple[int, int, int]]) -> bool:
    """A slipped chain must still look like arithmetic a first pass could write: positive values in range,
    exact divisions."""
    ok = (0 < res <= MAX_VALUE and (s.op != "/" or a % b == 0) for s, (a, b, res) in zip(steps, values, strict=True))
    return all(ok)


@dataclass(frozen=True)
class TraceConfig:
    """How traces overthink.

    Re-checks: 0 with probability ``p_no_recheck``, then each further one with probability
    ``p_more_recheck`` (geometric), at most ``max_rechecks``.

    Slips: a fraction ``p_slip`` of first passes has one careless step.  It is a forgotten carry or
    borrow (``45 + 17 = 52``, ``52 - 17 = 45``) at a step that has one, else a small ``slip_deltas``
    error.  Concentrating slips where people make them gives the model a real chance of slipping at
    those steps (a quarter of carry steps), so sampled first passes are sometimes wrong while greedy
    ones stay right.  Re-checks never slip, and the first re-check catches the slip ("Hmm, ... not ..."), so an uncaught
    slip is exactly a slipped trace without re-checks.

    Forced exits: a fraction ``p_forced_exit`` of traces with re-checks is cut at the paragraph break
    that ends a pass, followed by ``</think>`` and the answer that pass reached, with the loss on the
    answer only.  The model so learns to answer from where it is when its thinking is cut (as real
    reasoning models do, and as an early exit needs) but never learns to stop there by itself.

    ``forced_exit_cuts`` says where those cuts land: ``"pass"`` (generator v2, the shipped testbed) only
    at pass ends; ``"boundary"`` at any paragraph break of the thinking, answering with the last
    completed pass (inside the first pass: the last result written).  A round read-out exits one
    boundary late, mid-re-check; a v2 model cut there has never seen ``</think>`` in that place, keeps
    re-checking and answers with whatever number it wrote last, which also makes the confidence labels
    of those boundaries noise.
    """

    p_slip: float = 0.35
    carry_slips: bool = True
    slip_deltas: tuple[int, ...] = (-2, -1, 1, 2)
    p_no_recheck: float = 0.05
    p_more_recheck: float = 0.75
    max_rechecks: int = 8
    p_forced_exit: float = 0.1
    forced_exit_cuts: str = "pass"

    def __post_init__(self) -> None:
        for name in ("p_slip", "p_no_recheck", "p_more_recheck", "p_forced_exit"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {getattr(self, name)}")
        if self.forced_exit_cuts not in FORCED_EXIT_CUTS:
            raise ValueError(f"forced_exit_cuts must be one of {FORCED_EXIT_CUTS}, got {self.forced_exit_cuts!r}")


@dataclass(frozen=True)
class Trace:
    """A training example.  The assistant turn is ``prefix + completion`` after the chat template's
    generation prompt (which already ends with ``<think>\\n``, or with the empty span when ``thinking``
    is false); the loss covers ``completion``.  ``prefix`` is empty except for forced-exit examples,
    where it holds the cut thinking and ``</think>``."""

    problem: Problem
    thinking: bool
    completion: str
    final: int  # the boxed answer (the last derivation's result)
    n_rechecks: int = 0
    slip: tuple[int, int] | None = None  # (step, delta) in the first pass
    caught: bool = False
    first_pass: int | None = None  # the first pass's final result
    pass_ends: tuple[tuple[int, int], ...] = ()  # (offset in completion after the break, result) per cut
    boundaries: tuple[tuple[int, int], ...] = ()  # the same for every break of the thinking
    prefix: str = ""

    def to_dict(self) -> dict:
        d = asdict(self)
        d["problem"] = self.problem.to_prompt()
        return d


def _line(step: Step, values: tuple[int, int, int]) -> str:
    a, b, res = values
    return f"{a} {step.op} {b} = {res} {step.unit}."


def _answer(n: int) -> str:
    return f"The answer is \\boxed{{{n}}}."


def _carries(op: str, a: int, b: int) -> bool:
    return (op == "+" and a % 10 + b % 10 >= 10) or (op == "-" and a % 10 < b % 10)


def _pick_slip(steps: tuple[Step, ...], cfg: TraceConfig, rng: random.Random) -> tuple[int, int] | None:
    values = derive(steps)
    options = []
    if cfg.carry_slips:
        options = [
            (i, -10 if s.op == "+" else 10)
            for i, (s, (a, b, _)) in enumerate(zip(steps, values, strict=True))
            if _carries(s.op, a, b)
        ]
    if not options:
        options = [(i, d) for i in range(len(steps)) for d in cfg.slip_deltas]
    rng.shuffle(options)
    return next((o for o in options if _valid_chain(steps, derive(steps, o))), None)


def make_trace(problem: Problem, thinking: bool = True, cfg: TraceConfig | None = None, variant: int = 0) -> Trace:
    """The training trace of ``problem`` (a pure function of the problem seed, ``variant`` and ``cfg``)."""
    cfg = cfg or TraceConfig()
    if not thinking:
        return Trace(problem, False, _answer(problem.answer), problem.answer)
    rng = random.Random(f"specexit-testbed-v{GENERATOR_VERSION}-trace-{problem.seed}-{variant}")
    steps = problem.steps
    slip = _pick_slip(steps, cfg, rng) if rng.random() < cfg.p_slip else None
    n_rechecks = 0
    if rng.random() >= cfg.p_no_recheck:
        n_rechecks = 1
        while n_rechecks < cfg.max_rechecks and rng.random() < cfg.p_more_recheck:
            n_rechecks += 1
    passes = [derive(steps, slip)] + [derive(steps)] * n_rechecks
    paragraphs = [s.text.format(l=a, r=b, res=res) for s, (a, b, res) in zip(steps, passes[0], strict=True)]
    # the answer a cut after each paragraph gives: the last result written inside the first pass, then
    # the result of the last completed pass
    answers = [res for _, _, res in passes[0]]
    rechecks = []  # index of each "Wait, let me double-check." paragraph
    for prev, cur in itertools.pairwise(passes):
        rechecks.append(len(paragraphs))
        paragraphs.append(RECHECK)
        answers.append(prev[-1][2])
        for i, s in enumerate(steps):
            paragraphs.append(_line(s, cur[i]))
            done = i == len(steps) - 1  # the pass is complete once its last line is written
            answers.append(cur[-1][2] if done else prev[-1][2])
            (pa, pb, pres), (a, b, res) = prev[i], cur[i]
            if (pa, pb) == (a, b) and pres != res:
                paragraphs.append(f"Hmm, {a} {s.op} {b} is {res}, not {pres}.")
                answers.append(cur[-1][2] if done else prev[-1][2])
    offsets = list(itertools.accumulate(len(p) + len(PARAGRAPH) for p in paragraphs))
    boundaries = tuple(zip(offsets[:-1], answers[:-1], strict=True))  # the last paragraph ends the thinking
    pass_ends = tuple(boundaries[j - 1] for j in rechecks)  # the breaks a re-check follows
    final = passes[-1][-1][2]
    completion = PARAGRAPH.join(paragraphs) + f"\n{THINK_END}\n\n" + _answer(final)
    return Trace(
        problem,
        True,
        completion,
        final,
        n_rechecks=n_rechecks,
        slip=slip,
        caught=slip is not None and n_rechecks > 0,
        first_pass=passes[0][-1][2],
        pass_ends=pass_ends,
        boundaries=boundaries,
    )


def break_place(before: str, after: str) -> str:
    """Where a paragraph break of a thinking text is, from the text ``before`` and ``after`` it:
    ``"pass_end"`` (a re-check follows), ``"mid_recheck"`` or ``"first_pass"``."""
    if after.startswith(RECHECK):
        return "pass_end"
    return "mid_recheck" if RECHECK in before else "first_pass"


def forced_exit(trace: Trace, cut: tuple[int, int]) -> Trace:
    """``trace`` cut at ``cut`` (one of its ``pass_ends`` or ``boundaries``): the thinking so far and
    ``</think>`` become the untrained prefix, the answer reached there the completion."""
    offset, result = cut
    prefix = trace.completion[:offset]
    return replace(
        trace,
        prefix=prefix + THINK_END,
        completion=PARAGRAPH + _answer(result),
        final=result,
        n_rechecks=prefix.count(RECHECK),
        caught=trace.slip is not None and RECHECK in prefix and result != trace.first_pass,
        pass_ends=(),
        boundaries=(),
    )


def training_traces(n: int, seed: int = 0, p_no_thinking: float = 0.15, cfg: TraceConfig | None = None) -> list[Trace]:
    """The ``n`` training traces of a data seed (``training_mix`` without arithmetic practice)."""
    return training_mix(n, seed, 0.0, p_no_thinking, cfg)  # type: ignore[return-value]


# --------------------------------------------------------------------------------------------------
# arithmetic practice ("pre-training")


def _drill_line(rng: random.Random) -> str:
    """One computation from the ranges the problems use (op mix close to theirs)."""
    r = rng.random()
    if r < 0.35:
        b = rng.randint(2, MAX_OPERAND)
        a = rng.randint(1, MAX_VALUE - b)
        return f"{a} + {b} = {a + b}"
    if r < 0.65:
        a = rng.randint(4, MAX_VALUE)
        b = rng.randint(2, min(MAX_OPERAND, a - 1))
        return f"{a} - {b} = {a - b}"
    if r < 0.85:
        if rng.random() < 0.6:
            a, b = rng.randint(2, 9), rng.randint(2, 30)
        else:
            b = rng.choice((2, 3))
            a = rng.randint(1, MAX_VALUE // b)
        return f"{a} * {b} = {a * b}"
    d = rng.randint(2, 9)
    q = rng.randint(2, MAX_VALUE // d)
    return f"{q * d} / {d} = {q}"


def make_drill(seed: int, lines: tuple[int, int] = (12, 20)) -> str:
    """An arithmetic practice document (one ``a op b = c`` per line, all correct).  A tiny model trained
    only on word problems meets each arithmetic fact too rarely to learn it in a CPU budget; these
    documents stand in for the arithmetic a real model learns in pre-training."""
    rng = random.Random(f"specexit-testbed-v{GENERATOR_VERSION}-drill-{seed}")
    return "\n".join(_drill_line(rng) for _ in range(rng.randint(*lines)))


def training_mix(
    n: int, seed: int = 0, p_drill: float = 0.0, p_no_thinking: float = 0.15, cfg: TraceConfig | None = None
) -> list[Trace | str]:
    """``n`` training examples: each index is, by a seeded draw, an arithmetic practice document (a str)
    with probability ``p_drill``, else the trace of that index's problem (thinking or not)."""
    trace_cfg = cfg or TraceConfig()
    out: list[Trace | str] = []
    for s in problem_seeds(n, seed, "train"):
        if p_drill and random.Random(f"specexit-testbed-v{GENERATOR_VERSION}-kind-{s}").random() < p_drill:
            out.append(make_drill(s))
            continue
        rng = random.Random(f"specexit-testbed-v{GENERATOR_VERSION}-mode-{s}")
        trace = make_trace(make_problem(s), thinking=rng.random() >= p_no_thinking, cfg=cfg)
        cuts = trace.pass_ends if trace_cfg.forced_exit_cuts == "pass" else trace.boundaries
        if cuts and rng.random() < trace_cfg.p_forced_exit:
            trace = forced_exit(trace, cuts[rng.randrange(len(cuts))])
        out.append(trace)
    return out
