"""Trial answers from a prefix of the running sequence, without disturbing the KV cache.

Used by the DEER-style ``probe`` baseline: at a boundary, force the think-end token (plus an answer
prefix) after the boundary, let the target write a short greedy answer, and read its confidence; and by
exit rules with ``agree`` > 0 (``AgreementJudge``): where the draft's signals pass, the same forced answer
as ``train labels`` writes, and an exit once one answer has come up ``agree`` times.  The
probe's tokens attend only to the cache entries before the boundary and to themselves (an explicit
mask), so tokens accepted after the boundary in the same round do not leak in; afterwards the cache
is cropped back, so generation continues exactly as if no probe had run.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import torch

from .exit_control import CacheRound
from .scoring import extract_answer, normalize_answer
from .span import SpanMarkers
from .target import TargetModel, crop_cache


@torch.inference_mode()
def trial_answer(
    target: TargetModel,
    cache,
    visible_len: int,
    feed: Sequence[int],
    stop_ids: set[int],
    max_tokens: int,
    done: Callable[[list[int]], bool] = lambda _ids: False,
    guess: Sequence[int] = (),
) -> tuple[list[int], list[float]]:
    """Greedy answer after ``cache[:visible_len] + feed``: (tokens, their probabilities).

    ``guess``: the tokens this answer is expected to start with (a judge passes its previous trial
    answer: at the next boundary the model mostly writes the same sentence).  They are fed with ``feed``
    and verified in the same forward, as speculative decoding verifies a chain: the answer keeps the
    longest prefix of the guess that greedy decoding would write, plus the next greedy token, so the
    answer is the one without a guess, in fewer target forwards."""
    start = cache.get_seq_length()
    neg = torch.finfo(target.dtype).min
    tokens: list[int] = []
    probs: list[float] = []
    step_ids = list(feed)
    lookahead = list(guess[: max_tokens - 1])
    written = 0  # probe tokens already in the cache
    try:
        while len(tokens) < max_tokens:
            ids = step_ids + lookahead
            n = len(ids)
            past = cache.get_seq_length()
            mask = torch.full((n, past + n), neg, dtype=target.dtype)
            mask[:, :visible_len] = 0.0
            own = torch.zeros(n, written + n, dtype=torch.bool)
            own[:, :written] = True
            own[:, written:] = torch.ones(n, n, dtype=torch.bool).tril()
            mask[:, start:].masked_fill_(own, 0.0)
            pos = torch.arange(visible_len + written, visible_len + written + n)[None]
            logits, _ = target.forward(torch.tensor([ids]), cache, pos, mask[None, None], last_only=not lookahead)
            # rows [1 + len(lookahead), V]: the next token after the feed, then after each guessed token
            p = torch.softmax(logits[len(logits) - 1 - len(lookahead) :], dim=-1)
            best = p.argmax(dim=-1)
            chosen = p.gather(1, best[:, None])[:, 0]
            taken, finished = 0, False
            for j, (tok, prob) in enumerate(zip(best.tolist(), chosen.tolist(), strict=True)):
                tokens.append(tok)
                probs.append(prob)
                if tok in stop_ids or done(tokens) or len(tokens) >= max_tokens:
                    finished = True
                    break
                if j == len(lookahead) or tok != lookahead[j]:
                    break  # the guess ends or is wrong here: ``tok`` is the next step's input
                taken += 1
            written += len(step_ids) + taken
            if lookahead:
                crop_cache(cache, start + written)  # drop the guessed tokens greedy decoding did not write
            if finished:
                break
            step_ids, lookahead = [tokens[-1]], []
    finally:
        crop_cache(cache, start)
    return tokens, probs


def answer_confidence(tokenizer, ids: Sequence[int], probs: Sequence[float]) -> float:
    """A trial answer's score: the mean probability of the tokens that write its boxed value (those that
    overlap the text from just after ``\\boxed{`` through the closing brace), or of all its tokens when
    it has no box.  The judge's trial answers start inside the box (its prefix opens it), so both the
    judge and the forced answers of ``train labels`` are scored by this one rule."""
    if not ids:
        return 0.0
    spans, text = [], ""
    for t in ids:
        piece = tokenizer.decode([t])
        spans.append((len(text), len(text) + len(piece)))
        text += piece
    opened = text.find("\\boxed{")
    if opened < 0:
        return sum(probs) / len(probs)
    lo = opened + len("\\boxed{")
    close = text.find("}", lo)
    hi = (close if close >= 0 else len(text) - 1) + 1
    picked = [p for (a, b), p in zip(spans, probs, strict=True) if a < hi and b > lo]
    return sum(picked) / len(picked) if picked else 0.0


def answer_after(
    target: TargetModel,
    where: CacheRound | None,
    keep: int,
    forced: Sequence[int],
    stop_ids: set[int],
    max_tokens: int,
    done: Callable[[list[int]], bool],
    guess: Sequence[int] = (),
) -> tuple[list[int], list[float]]:
    """A judge's trial answer at a boundary of this round: after the round's first ``keep`` tokens (the
    bonus token, not yet cached, is fed when kept), the ``forced`` tokens, then greedy (``trial_answer``,
    which verifies ``guess`` on the way)."""
    assert where is not None, "begin_round() gives the judge the round's place in the cache first"
    visible = where.base + min(keep, where.accepted)
    feed = ([where.bonus] if keep > where.accepted else []) + list(forced)
    return trial_answer(target, where.cache, visible, feed, stop_ids, max_tokens, done, guess)


def forced_answer(tokenizer, ids: Sequence[int], lead: str = "") -> str | None:
    """The answer a forced answer's tokens state (``lead``: the text of a trigger that opened the answer,
    for models without think tokens).  The labels' probes and the agreement judge read answers this way."""
    return extract_answer(lead + tokenizer.decode(list(ids), skip_special_tokens=True))


def answer_key(answer: str | None) -> str | None:
    """What equal answers share ("30.0" and "30"), None for no answer: the unit agreement counts."""
    return normalize_answer(answer) if answer else None


def _boxed_closed(text: str) -> bool:
    opened = text.find("\\boxed{")
    return opened >= 0 and "}" in text[opened + len("\\boxed{") :]


@dataclass(frozen=True)
class ProbeConfig:
    """DEER-style exit: at a boundary, exit if the trial answer's mean token probability > threshold."""

    threshold: float = 0.95
    max_tokens: int = 12
    answer_prefix: str = "\n\nThe answer is \\boxed{"

    def make_judge(self, target: TargetModel, tokenizer, markers: SpanMarkers, stop_ids: Collection[int]) -> ProbeJudge:
        """The judge of one request (``exit_control.JudgeFactory``)."""
        return ProbeJudge(target, tokenizer, self, markers.exit_ids, set(stop_ids), markers.implicit)


class ProbeJudge:
    """The ``judge`` of an exit controller for the probing baseline.  The engine tells it, each round,
    where this round's tokens sit in the KV cache (``exit_control.CacheRound``); the policy asks it about
    one boundary at a time."""

    def __init__(
        self,
        target: TargetModel,
        tokenizer,
        cfg: ProbeConfig,
        exit_ids: Sequence[int],
        stop_ids: set[int],
        trigger: bool = False,
    ):
        """``exit_ids``: what ends the thinking span (the think-end token, or an answer trigger, which
        already asks for the answer: ``trigger=True`` adds no answer prefix)."""
        self.target, self.tok, self.cfg = target, tokenizer, cfg
        prefix = [] if trigger else tokenizer.encode(cfg.answer_prefix, add_special_tokens=False)
        self.prefix_ids = [*exit_ids, *prefix]
        self.stop_ids = stop_ids
        self.where: CacheRound | None = None
        self.last: list[int] = []  # the previous trial answer: the next one's guess

    def begin_round(self, context: CacheRound) -> None:
        self.where = context

    def _closed(self, ids: list[int]) -> bool:
        return "}" in self.tok.decode(ids)

    def __call__(self, keep: int) -> tuple[bool, float]:
        ids, probs = answer_after(self.target, self.where, keep, self.prefix_ids, self.stop_ids, self.cfg.max_tokens,
                                  self._closed, self.last)  # fmt: skip
        self.last = ids
        score = answer_confidence(self.tok, ids, probs)
        return score > self.cfg.threshold, score


@dataclass(frozen=True)
class AgreementConfig:
    """Settings of the trial answers that confirm an exit (``ExitConfig.agree``): greedy, at most
    ``max_tokens`` after the forced think-end, as ``train labels --probe-tokens`` writes them (the
    calibration replays those), stopped early once a ``\\boxed{}`` value is closed."""

    agree: int
    max_tokens: int = 24

    def make_judge(self, target: TargetModel, tokenizer, markers: SpanMarkers, stop_ids: Collection[int]):
        return AgreementJudge(target, tokenizer, self, markers.exit_ids, set(stop_ids), markers.implicit)


class AgreementJudge:
    """Counts the answers of trial answers written at the boundaries it is asked about (one request):
    (exit?, count) where exit means this answer has now come up ``agree`` times."""

    def __init__(self, target: TargetModel, tokenizer, cfg: AgreementConfig, exit_ids: Sequence[int],
                 stop_ids: set[int], trigger: bool = False) -> None:  # fmt: skip
        self.target, self.tok, self.cfg = target, tokenizer, cfg
        self.exit_ids, self.stop_ids = list(exit_ids), stop_ids
        self.lead = tokenizer.decode(self.exit_ids, skip_special_tokens=True) if trigger else ""
        self.counts: dict[str, int] = {}
        self.answers: list[str | None] = []  # every trial answer's key, in order (telemetry)
        self.where: CacheRound | None = None
        self.last: list[int] = []  # the previous trial answer: the next one's guess

    def begin_round(self, context: CacheRound) -> None:
        self.where = context

    def _closed(self, ids: list[int]) -> bool:
        return _boxed_closed(self.lead + self.tok.decode(ids))

    def __call__(self, keep: int) -> tuple[bool, float]:
        ids, _ = answer_after(self.target, self.where, keep, self.exit_ids, self.stop_ids, self.cfg.max_tokens,
                              self._closed, self.last)  # fmt: skip
        self.last = ids
        key = answer_key(forced_answer(self.tok, ids, self.lead))
        self.answers.append(key)
        if key is None:
            return False, 0.0
        self.counts[key] = self.counts.get(key, 0) + 1
        return self.counts[key] >= self.cfg.agree, float(self.counts[key])
