"""Trial answers from a prefix of the running sequence, without disturbing the KV cache.

Used by the DEER-style ``probe`` baseline: at a boundary, force the think-end token (plus an answer
prefix) after the boundary, let the target write a short greedy answer, and read its confidence.  The
probe's tokens attend only to the cache entries before the boundary and to themselves (an explicit
mask), so tokens accepted after the boundary in the same round do not leak in; afterwards the cache
is cropped back, so generation continues exactly as if no probe had run.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import torch

from .exit_control import CacheRound
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
) -> tuple[list[int], list[float]]:
    """Greedy answer after ``cache[:visible_len] + feed``: (tokens, their probabilities)."""
    start = cache.get_seq_length()
    neg = torch.finfo(target.dtype).min
    tokens: list[int] = []
    probs: list[float] = []
    step_ids = list(feed)
    written = 0  # probe tokens already in the cache
    try:
        while len(tokens) < max_tokens:
            n = len(step_ids)
            past = cache.get_seq_length()
            mask = torch.full((n, past + n), neg, dtype=target.dtype)
            mask[:, :visible_len] = 0.0
            own = torch.zeros(n, written + n, dtype=torch.bool)
            own[:, :written] = True
            own[:, written:] = torch.ones(n, n, dtype=torch.bool).tril()
            mask[:, start:].masked_fill_(own, 0.0)
            pos = torch.arange(visible_len + written, visible_len + written + n)[None]
            logits, _ = target.forward(torch.tensor([step_ids]), cache, pos, mask[None, None], last_only=True)
            written += n
            p = torch.softmax(logits[-1], dim=-1)
            tok = int(p.argmax())
            tokens.append(tok)
            probs.append(float(p[tok]))
            if tok in stop_ids or done(tokens):
                break
            step_ids = [tok]
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

    def begin_round(self, context: CacheRound) -> None:
        self.where = context

    def _closed(self, ids: list[int]) -> bool:
        return "}" in self.tok.decode(ids)

    def __call__(self, keep: int) -> tuple[bool, float]:
        w = self.where
        assert w is not None, "begin_round() gives the judge the round's place in the cache first"
        visible = w.base + min(keep, w.accepted)
        feed = ([w.bonus] if keep > w.accepted else []) + self.prefix_ids
        ids, probs = trial_answer(self.target, w.cache, visible, feed, self.stop_ids, self.cfg.max_tokens, self._closed)
        score = answer_confidence(self.tok, ids, probs)
        return score > self.cfg.threshold, score
