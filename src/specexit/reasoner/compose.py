"""Compose overthinking traces from a model's own sampled solutions (stage 3 of docs/reasoner.md).

A trace is what a DeepSeek-R1 distill writes: a first solution, then a varying number of
re-verifications in natural language ("Wait, let me double-check…" followed by a re-derivation, here
taken from *another* of the model's own samples of the same problem), then ``</think>`` and a short
answer with ``\\boxed{}``.  A wrong first pass is kept at the rate the model itself makes it and is
corrected by a later pass; every kept trace ends on the right answer (rejection sampling).  When a
re-derivation reaches another answer than the pass before, one sentence says so, as such traces do.

Pure Python: the inputs are the records of ``specexit train traces`` (``text``, ``final_answer``,
``gold``, ``finish_reason``), the output is one JSON object per SFT example (``question``,
``thinking``, ``answer``, and what was composed).
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

from ..errors import ConfigError
from ..scoring import answers_equal, extract_answer

RECHECK_OPENERS: tuple[str, ...] = (
    "Wait, let me double-check this by working through it again.",
    "Let me verify that answer step by step.",
    "Hmm, let me re-check each step to be sure.",
    "Actually, let me make sure I didn't make a mistake.",
    "Let me go through the problem once more.",
)
# any re-check a thinking model writes at a line start: compose's openers and its own variants
RECHECK_LINE = re.compile(r"(?im)^(wait|hmm|actually|let me (verify|double-check|re-check|go through|make sure))")
_CODE = re.compile(r"```")
_SPECIAL = re.compile(r"<\|[a-z_]+\|>")


@dataclass(frozen=True)
class ComposeConfig:
    p_no_recheck: float = 0.1  # a trace with no re-verification at all
    p_more: float = 0.6  # after the first re-verification, another one follows with this probability
    # ... and after the n-th with p_more * more_decay ** (n - 1): a falling hazard, so that the most likely
    # next step is to close the span after a few re-checks (with a constant p_more > 0.5, greedy decoding
    # of the round-1 model re-checked without end)
    more_decay: float = 0.7
    max_rechecks: int = 4
    traces_per_problem: int = 2
    max_pass_tokens: int = 400  # solutions cut off or longer than this (model tokens) are not used
    seed: int = 0

    def validate(self) -> None:
        if not (0 <= self.p_no_recheck <= 1 and 0 <= self.p_more < 1 and 0 < self.more_decay <= 1):
            raise ConfigError("p_no_recheck must be in [0, 1], p_more in [0, 1) and more_decay in (0, 1]")
        if self.max_rechecks < 0 or self.traces_per_problem < 1 or self.max_pass_tokens < 1:
            raise ConfigError("max_rechecks must be >= 0, traces_per_problem and max_pass_tokens >= 1")


@dataclass(frozen=True)
class Solution:
    text: str  # the derivation, special tokens removed
    answer: str
    right: bool


@dataclass(frozen=True)
class ComposedTrace:
    prompt_id: int
    index: int  # which trace of this problem
    question: str
    gold: str
    thinking: str  # paragraphs separated by blank lines, without <think> / </think>
    answer: str  # the text after </think>
    pass_answers: tuple[str, ...]  # the answer each pass reached, first pass first
    first_pass_right: bool
    n_rechecks: int

    def to_dict(self) -> dict:
        return asdict(self)


def usable_solutions(records: Iterable[dict], max_pass_tokens: int) -> dict[int, list[Solution]]:
    """Per prompt id, the samples a trace may use: finished by themselves, an answer that can be read,
    no code (the Coder models like to write Python and imagine its output), not too long."""
    out: dict[int, list[Solution]] = {}
    for r in records:
        text = _SPECIAL.sub("", r.get("text", "")).strip()
        ans = r.get("final_answer") or extract_answer(text)
        if r.get("finish_reason") != "stop" or ans is None or _CODE.search(text):
            continue
        if len(r.get("output_ids", ())) > max_pass_tokens:
            continue
        out.setdefault(int(r["prompt_id"]), []).append(Solution(text, ans, answers_equal(ans, r.get("gold"))))
    return out


def _text_key(s: Solution) -> str:
    return " ".join(s.text.split())


def distinct_solutions(sols: Sequence[Solution]) -> list[Solution]:
    """The samples whose derivations differ (whitespace aside), first occurrence kept."""
    seen: set[str] = set()
    out = []
    for s in sols:
        key = _text_key(s)
        if key not in seen:
            seen.add(key)
            out.append(s)
    return out


def n_rechecks(rng: random.Random, cfg: ComposeConfig) -> int:
    if rng.random() < cfg.p_no_recheck:
        return 0
    n = 1
    while n < cfg.max_rechecks and rng.random() < cfg.p_more * cfg.more_decay ** (n - 1):
        n += 1
    return n


def compose_problem(
    prompt_id: int, question: str, gold: str, sols: Sequence[Solution], cfg: ComposeConfig, rng: random.Random
) -> list[ComposedTrace]:
    """Up to ``traces_per_problem`` traces for one problem; none when no sample is right."""
    if not any(s.right for s in sols):
        return []
    out = []
    for k in range(cfg.traces_per_problem):
        first = rng.choice(list(sols))  # wrong first passes at the model's own rate
        # re-derivations: other samples, each text at most once in a trace (a trace that repeats a
        # derivation word for word teaches copying: greedy decoding of the model tuned on round 2's
        # traces, 42% of which did, re-copied its first solution until the length cap).  A middle pass
        # is wrong at the model's own error rate: drawing among distinct texts made 34% of them wrong
        # instead of 22% (the model writes one right derivation many times, each wrong one once), and
        # round 3, tuned on those, lost accuracy
        used = {_text_key(first)}
        right_left = [s for s in sols if s.right and _text_key(s) not in used]
        n = n_rechecks(rng, cfg)
        if not first.right:
            if not right_left:
                continue  # nothing left to correct this first pass with
            n = max(n, 1)  # a wrong first pass needs a re-check that corrects it
        n = min(n, len(distinct_solutions([first, *sols])) - 1) if right_left else 0
        passes = [first]
        if n:
            last = rng.choice(right_left)  # the trace must end right
            used.add(_text_key(last))
            wrong_rate = sum(not s.right for s in sols) / len(sols)
            for _ in range(n - 1):
                left = [s for s in sols if _text_key(s) not in used]
                kind = [s for s in left if s.right == (rng.random() >= wrong_rate)]
                if not kind:  # no unused text of the drawn kind left: no more re-checks
                    break
                passes.append(rng.choice(kind))
                used.add(_text_key(passes[-1]))
            passes.append(last)
        paragraphs = [first.text]
        for prev, cur in itertools.pairwise(passes):
            paragraphs.append(rng.choice(RECHECK_OPENERS))
            paragraphs.append(cur.text)
            if not answers_equal(prev.answer, cur.answer):
                paragraphs.append(f"So the answer is {cur.answer}, not {prev.answer}.")
        final = passes[-1]
        out.append(
            ComposedTrace(
                prompt_id=prompt_id,
                index=k,
                question=question,
                gold=gold,
                thinking="\n\n".join(paragraphs),
                answer=f"The answer is \\boxed{{{final.answer}}}.",
                pass_answers=tuple(p.answer for p in passes),
                first_pass_right=first.right,
                n_rechecks=len(passes) - 1,
            )
        )
    return out


def compose(records: Sequence[dict], cfg: ComposeConfig) -> list[ComposedTrace]:
    """All traces, problem by problem in prompt order; deterministic for a seed."""
    cfg.validate()
    sols = usable_solutions(records, cfg.max_pass_tokens)
    meta = {int(r["prompt_id"]): (r["question"], r.get("gold")) for r in records}
    out = []
    for pid in sorted(sols):
        question, gold = meta[pid]
        if gold is None:
            continue
        rng = random.Random(cfg.seed * 1_000_003 + pid)  # per problem: adding problems moves nothing
        out += compose_problem(pid, question, gold, sols[pid], cfg, rng)
    return out
