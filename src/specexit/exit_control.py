"""The exit rule of one request, wired up: the one place where both backends turn a decoding round into
an exit decision.

``ExitController`` owns, per request: the exit policy (``exit_policy.ExitPolicy``) and its boundary
detector, built from the tokenizer; the prompt's effect on the thinking span; the read-out of the
draft's signals for either read-out (``round``: the mean over the round's verified positions;
``boundary``: the value at each token); the truncation of a round at stop tokens and the length cap
before the policy sees it; the room the forced think-end tokens need; and the telemetry (exit record,
signal history).  The PyTorch engine, the vLLM runner hooks and the vLLM backend's replay all use it.

A *judge* (the DEER-style probe) plugs in through the small ``Judge`` protocol: it replaces the signal
rule at each eligible boundary; the backend hands it an opaque per-round context.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from .boundaries import BoundaryDetector
from .exit_policy import ExitConfig, ExitDecision, ExitPolicy, ExitRecord, history_records
from .span import SpanMarkers

PROMPT_TAIL_TOKENS = 8  # prompt tokens decoded to give the boundary detector its left context


@dataclass(frozen=True)
class CacheRound:
    """Where one round's tokens sit in a KV cache (the context the engine gives a judge)."""

    cache: Any
    base: int  # cached positions before this round's accepted tokens
    accepted: int  # this round's tokens in the cache (the bonus token is not)
    bonus: int  # the round's bonus token


class Judge(Protocol):
    """Decides at a boundary instead of the signal rule (e.g. a trial answer's confidence)."""

    def begin_round(self, context: Any) -> None:
        """Where this round's tokens are (backend-specific, e.g. the KV cache and offsets)."""

    def __call__(self, keep: int) -> tuple[bool, float]:
        """Exit after ``keep`` of this round's tokens? (decision, score)."""


class JudgeFactory(Protocol):
    """A judge's settings (e.g. ``probe.ProbeConfig``): builds the judge of one request."""

    def make_judge(self, target: Any, tokenizer: Any, markers: SpanMarkers, stop_ids: Collection[int]) -> Judge: ...


@dataclass
class RoundDecision:
    visible: list[int]  # the round's tokens the caller keeps without an exit (cut at a stop token / the cap)
    keep: int | None  # on exit: how many of ``visible`` stay before the forced tokens; None: no exit

    @property
    def exit(self) -> bool:
        return self.keep is not None


class ExitController:
    """The exit rule of one request (see the module docstring)."""

    def __init__(
        self,
        config: ExitConfig,
        tokenizer,
        prompt_ids: Sequence[int],
        markers: SpanMarkers,
        signals: Sequence[str] = (),
        *,
        enabled: bool = True,
        stop_ids: Collection[int] = (),
        judge: Judge | None = None,
    ) -> None:
        """``signals``: the names the draft predicts; ``enabled``: the signal rule may end thinking (a
        thinking budget and a judge act either way); ``stop_ids``: where the caller stops the output."""
        self.markers, self.stop_ids, self.judge = markers, frozenset(stop_ids), judge
        self.policy = ExitPolicy(
            config,
            BoundaryDetector(lambda i: tokenizer.decode([i]), config.paragraph_boundaries, config.connectors),
            markers.think_start_id,
            markers.think_end_id if markers.think_end_id is not None else -1,
            available_signals=signals,
            enabled=enabled,
            judge=judge,
            answer_markers=markers.answer_markers,
        )
        tail = tokenizer.decode(list(prompt_ids[-PROMPT_TAIL_TOKENS:]), skip_special_tokens=False)
        # an implicit span is open unless the prompt already asks for the answer; a tagged one is open
        # when the prompt's last think marker is think-start
        opened = not markers.asks_answer(prompt_ids) if markers.implicit else None
        self.policy.start(prompt_ids, tail, opened=opened)
        self.opened = self.policy.in_thinking  # the prompt itself opened the span

    # -- state ------------------------------------------------------------------------------------
    @property
    def config(self) -> ExitConfig:
        return self.policy.config

    @property
    def can_exit(self) -> bool:
        """Whether anything may end thinking early (signal rule, judge or thinking budget)."""
        return self.policy.can_exit

    @property
    def wants_signals(self) -> bool:
        """Whether a read-out of the draft's signals can still matter (saves the caller computing one)."""
        return self.policy.enabled and not self.policy.finished

    @property
    def in_thinking(self) -> bool:
        return self.policy.in_thinking

    @property
    def thinking_tokens(self) -> int:
        return self.policy.thinking_tokens

    @property
    def new_tokens(self) -> int:
        return self.policy.new_tokens

    @property
    def record(self) -> ExitRecord | None:
        return self.policy.record

    @property
    def judge_calls(self) -> int:
        return self.policy.judge_calls

    @property
    def history(self) -> list[tuple[int, dict[str, float], dict[str, float]]]:
        """(thinking position, raw, smoothed) per read-out."""
        return list(self.policy.history)

    def exit_dict(self) -> dict | None:
        return self.policy.record.to_dict() if self.policy.record is not None else None

    def history_dicts(self) -> list[dict]:
        return history_records(self.policy.history)

    # -- rounds -----------------------------------------------------------------------------------
    def observe(self, tokens: Sequence[int]) -> ExitDecision:
        """Tokens that carry no signal read-out (plain decoding, the first token, a forced token)."""
        return self.policy.step(list(tokens), None)

    def visible(self, tokens: Sequence[int], room: int) -> list[int]:
        """The part of ``tokens`` the caller keeps: up to and including the first stop token, at most
        ``room`` tokens (what is left of the length cap)."""
        out: list[int] = []
        for t in list(tokens)[: max(room, 0)]:
            out.append(t)
            if t in self.stop_ids:
                break
        return out

    def round(
        self,
        tokens: Sequence[int],
        states: Mapping[str, Any] | None,
        room: int,
        judge_context: Any = None,
    ) -> RoundDecision:
        """One speculative round: ``tokens`` are the accepted drafts and the bonus token; ``states`` the
        draft's activated signals (1-D tensors, one value per position) over the positions this round
        verified, ending with [the previous round's last token, each accepted draft] (the bonus token's
        state only exists next round); ``room``: tokens left under the length cap."""
        if self.judge is not None:
            self.judge.begin_round(judge_context)
        visible = self.visible(tokens, room)
        signals = per_token = None
        if states and self.wants_signals:
            signals = {n: float(v.mean()) for n, v in states.items()}
            if self.config.readout == "boundary":
                # entry k: the state after the first k tokens of the round (entry 0: after the previous round)
                cols = {n: v[-len(tokens) :].tolist() for n, v in states.items()}
                per_token = [{n: c[k] for n, c in cols.items()} for k in range(len(tokens))] + [None]
                per_token = per_token[: len(visible) + 1]
        # an exit needs room for the forced tokens within the length cap
        decision = self.policy.step(
            visible, signals, max_keep=room - len(self.markers.exit_ids), token_signals=per_token
        )
        if decision.record is not None and states:
            # all signals where the exit was decided: at the boundary (boundary read-out) or the round mean
            read = per_token[decision.keep] if per_token and decision.keep < len(per_token) else None
            decision.record.signals_at_exit = dict(read) if read else dict(signals or {})
        return RoundDecision(visible, decision.keep)
