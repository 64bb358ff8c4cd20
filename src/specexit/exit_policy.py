"""The SpecExit exit rule, as a pure state machine (no torch; unit-testable on plain lists).

Per decoding round the engine hands over the round's emitted tokens and the round's raw signals
(averaged over the newly verified positions).  The policy smooths the signals, tracks the thinking
span, finds the first semantic boundary among the round's tokens and decides whether to cut there.
On exit the engine keeps ``decision.keep`` tokens of the round and forces the think-end token next.
"""

from __future__ import annotations

import math
import numbers
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field

from .answer_trigger import MarkerScanner
from .boundaries import BoundaryDetector
from .errors import ConfigError
from .signals import SIGNAL_NAMES, passes
from .span import prompt_opens_thinking
from .thinking_budget import BoundaryBudget

DEFAULT_THRESHOLDS: dict[str, float] = {"confidence": 0.8, "progress": 0.3, "remain": 200.0}
SMOOTHING_METHODS: tuple[str, ...] = ("ewma", "momentum", "window", "none")
READOUTS: tuple[str, ...] = ("round", "boundary")
BUDGET_KINDS: tuple[str, ...] = ("token", "boundary")


@dataclass
class ExitConfig:
    """Settings of the exit rule.  Defaults follow the paper / reference implementation."""

    thresholds: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    smoothing: str = "ewma"
    alpha: float = 0.1  # EWMA weight of the newest value
    window: int = 10  # window of "momentum" and "window" smoothing
    min_thinking_tokens: int = 0
    paragraph_boundaries: bool = True
    connectors: tuple[str, ...] = ()
    # decide on the smoothed value *before* this round's read-out, as the reference code does (its
    # read-out only exists after the decision); default: use this round's value too (fresher)
    lagged: bool = False
    # hard cap on thinking tokens, then the think-end token is forced (the "thinking budget" baseline of
    # serving engines); applies in spec and specexit modes, independent of signals and boundaries
    thinking_budget: int | None = None
    # how the budget ends thinking: "token" cuts at exactly N (the hard cap of serving engines, the
    # `budget:N` baseline); "boundary" at the last paragraph / sentence / word end that fits (thinking_budget.py)
    budget_at: str = "token"
    # where signals are read: "round" (the reference: the mean over the round's tokens, smoothed round by
    # round, checked at the round's first boundary) or "boundary" (the value at each boundary token itself,
    # smoothed boundary by boundary; every boundary is checked).  A confidence label says "an answer forced
    # right after this boundary is correct", so the boundary read-out asks exactly that question; the
    # round mean also averages in tokens after the boundary, whose label belongs to the previous one.
    readout: str = "round"
    # confirm an exit by trial answers (0: off): where the signal rule passes, the engine writes a short
    # greedy answer after a forced think-end (``probe.AgreementJudge``) and exits once the same answer
    # has been written at this many such boundaries; the draft's signals decide where trial answers are
    # worth their cost, agreement decides whether the answer is settled (torch backend only)
    agree: int = 0
    agree_tokens: int = 24  # a trial answer's token cap: that of the labels calibrated on (--probe-tokens)
    think_start: str = "<think>"
    think_end: str = "</think>"
    # where the rule came from, for the exit record: {"source": "calibrated", "policy": PATH, "eps": ...,
    # "delta": ...} (``policy_file``), {"source": "flags"} or None (the defaults)
    origin: dict | None = None

    def validate(self, available_signals: Sequence[str] | None = None, enabled: bool = True) -> None:
        """Raise ConfigError for any invalid setting, and, when the rule is ``enabled``, for anything
        that would make it silently never fire (no threshold, a signal the draft does not predict)."""
        if enabled and not self.thresholds:
            raise ConfigError("exit policy needs at least one signal threshold (confidence, progress, remain)")
        for name, value in self.thresholds.items():
            if name not in SIGNAL_NAMES:
                raise ConfigError(f"unknown exit signal {name!r}; known signals: {', '.join(SIGNAL_NAMES)}")
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"threshold for {name!r} must be a finite number, got {value!r}")
        if enabled and available_signals is not None:
            missing = [n for n in self.thresholds if n not in available_signals]
            if missing:
                have = ", ".join(available_signals) or "none"
                raise ConfigError(
                    f"exit thresholds name signal(s) {missing} but the draft predicts only [{have}]; "
                    "drop those thresholds or use a draft trained with them"
                )
        if self.readout not in READOUTS:
            raise ConfigError(f"readout must be one of {READOUTS}, got {self.readout!r}")
        if self.smoothing not in SMOOTHING_METHODS:
            raise ConfigError(f"smoothing must be one of {SMOOTHING_METHODS}, got {self.smoothing!r}")
        if not isinstance(self.alpha, numbers.Real) or not 0.0 < self.alpha <= 1.0:
            raise ConfigError(f"alpha must be a number in (0, 1], got {self.alpha!r}")
        if not isinstance(self.window, numbers.Integral) or self.window < 1:
            raise ConfigError(f"window must be an integer >= 1, got {self.window!r}")
        if not isinstance(self.min_thinking_tokens, numbers.Real) or self.min_thinking_tokens < 0:
            raise ConfigError(f"min_thinking_tokens must be a number >= 0, got {self.min_thinking_tokens!r}")
        if self.thinking_budget is not None and (
            not isinstance(self.thinking_budget, numbers.Integral) or self.thinking_budget < 1
        ):
            raise ConfigError(f"thinking_budget must be a positive integer, got {self.thinking_budget!r}")
        if self.budget_at not in BUDGET_KINDS:
            raise ConfigError(f"budget_at must be one of {BUDGET_KINDS}, got {self.budget_at!r}")
        if not isinstance(self.agree, numbers.Integral) or isinstance(self.agree, bool) or self.agree < 0:
            raise ConfigError(f"agree must be an integer >= 0, got {self.agree!r}")
        if not isinstance(self.agree_tokens, numbers.Integral) or self.agree_tokens < 1:
            raise ConfigError(f"agree_tokens must be an integer >= 1, got {self.agree_tokens!r}")
        if not self.paragraph_boundaries and not self.connectors:
            raise ConfigError("no boundary kind enabled: enable paragraph boundaries or give connector words")


class SignalSmoother:
    """Smooths one scalar series (``value`` is None until the method has enough history).

    - ``ewma``: s_t = a*x_t + (1-a)*s_{t-1}, initialised with the first value.
    - ``window``: mean of the last ``window`` values.
    - ``momentum``: linear extrapolation, the last value plus the mean step over the last ``window``
      values; defined once ``window`` values were seen (as in the reference implementation).
    - ``none``: the raw value.
    """

    def __init__(self, method: str = "ewma", alpha: float = 0.1, window: int = 10) -> None:
        if method not in SMOOTHING_METHODS:
            raise ConfigError(f"smoothing must be one of {SMOOTHING_METHODS}, got {method!r}")
        self.method, self.alpha, self.window = method, alpha, window
        self._values: deque[float] = deque(maxlen=window)
        self.value: float | None = None

    def update(self, x: float) -> float | None:
        self._values.append(x)
        if self.method == "ewma":
            self.value = x if self.value is None else self.alpha * x + (1.0 - self.alpha) * self.value
        elif self.method == "none":
            self.value = x
        elif self.method == "window":
            self.value = sum(self._values) / len(self._values)
        elif len(self._values) < self.window:  # momentum, not enough history yet
            self.value = None
        else:
            vals = list(self._values)
            self.value = vals[-1] + (vals[-1] - vals[0]) / (len(vals) - 1) if len(vals) > 1 else vals[-1]
        return self.value


@dataclass
class ExitRecord:
    """Why and where the policy exited (telemetry)."""

    round: int
    thinking_tokens: int  # thinking tokens kept (a paragraph break is kept, a connector is not)
    new_tokens: int  # generated tokens kept before the forced think-end token
    boundary: str  # "paragraph" | "connector" | "budget" | "budget-paragraph" | "budget-sentence" | "budget-word"
    boundary_text: str
    raw: dict[str, float]
    smoothed: dict[str, float]
    thresholds: dict[str, float]
    origin: dict | None = None  # the rule's source and guarantee (ExitConfig.origin)
    # every signal the draft predicts, read where the exit was decided (e.g. the predicted remaining
    # thinking, to audit against the actual): filled in by the exit controller
    signals_at_exit: dict[str, float] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ExitDecision:
    keep: int | None = None  # tokens of this round to keep; None = no exit
    record: ExitRecord | None = None

    @property
    def exit(self) -> bool:
        return self.keep is not None


def history_records(history) -> list[dict]:
    """An exit policy's signal history, (thinking position, raw, smoothed) per read-out, as JSON records."""
    return [{"thinking_tokens": t, "raw": r, "smoothed": s} for t, r, s in history]


class ExitPolicy:
    """Tracks the thinking span and applies the exit rule round by round."""

    def __init__(
        self,
        config: ExitConfig,
        detector: BoundaryDetector,
        think_start_id: int | None,
        think_end_id: int,
        available_signals: Sequence[str] | None = None,
        enabled: bool = True,
        judge: Callable[[int], tuple[bool, float]] | None = None,
        answer_markers: Sequence[str] | None = None,
    ) -> None:
        """``judge`` (optional): called at an eligible boundary with the number of this round's tokens an
        exit there would keep, it answers (exit?, score).  It replaces the signal rule (the DEER-style
        probing baseline), or, when ``config.agree`` > 0, confirms it: it is asked only where the signal
        rule passes (``probe.AgreementJudge``).  The policy itself stays torch-free.
        ``answer_markers`` (models without think tokens, see ``answer_trigger``): the span is implicit,
        open from the start of generation until the text shows one of these markers."""
        config.validate(available_signals, enabled=enabled)
        if config.agree and enabled and judge is None:
            raise ConfigError(
                f"the exit rule confirms exits by trial answers (agree={config.agree}), which only the torch "
                "backend writes; use --backend torch, or a rule without agree"
            )
        self.config, self.detector, self.enabled, self.judge = config, detector, enabled, judge
        self.judge_calls = 0
        self.think_start_id, self.think_end_id = think_start_id, think_end_id
        self.smoothers = {n: SignalSmoother(config.smoothing, config.alpha, config.window) for n in config.thresholds}
        self.in_thinking = False
        self.finished = False  # thinking ended (naturally or by exit): no more checks
        self.thinking_tokens = 0
        self.new_tokens = 0
        self.rounds = 0
        self.record: ExitRecord | None = None
        self._carry: tuple[str, str] | None = None  # boundary read-out: a boundary awaiting its state
        # (thinking position, raw, smoothed) per round, for signal-trace plots
        self.history: list[tuple[int, dict[str, float], dict[str, float]]] = []
        self.markers = MarkerScanner(answer_markers) if answer_markers is not None else None
        boundary_budget = config.thinking_budget is not None and config.budget_at == "boundary"
        self.budget = BoundaryBudget(config.thinking_budget) if boundary_budget else None

    def start(self, prompt_ids: Sequence[int], prompt_text_tail: str = "", opened: bool | None = None) -> None:
        """Inspect the prompt: a template may open the thinking span itself (e.g. ends with <think>).
        ``opened`` overrides that (an implicit span is open unless the prompt already asks for the answer)."""
        self.detector.reset(prompt_text_tail)
        if opened is not None:
            self.in_thinking = opened
            return
        self.in_thinking = prompt_opens_thinking(prompt_ids, self.think_start_id, self.think_end_id)

    @property
    def can_exit(self) -> bool:
        """Whether this policy may ever end thinking (signal rule enabled, or a thinking budget)."""
        return self.enabled or self.judge is not None or self.config.thinking_budget is not None

    def smoothed(self) -> dict[str, float]:
        return {n: s.value for n, s in self.smoothers.items() if s.value is not None}

    def step(
        self,
        tokens: Sequence[int],
        signals: Mapping[str, float] | None,
        max_keep: int | None = None,
        token_signals: Sequence[Mapping[str, float] | None] | None = None,
    ) -> ExitDecision:
        """Process one round: ``tokens`` emitted this round, ``signals`` raw read-out (or None).
        ``max_keep``: the most tokens of this round an exit may keep (the forced think-end token must
        still fit in the caller's token budget); a boundary beyond it is not an exit point.
        ``token_signals`` (``readout="boundary"``): ``len(tokens) + 1`` read-outs, entry k being the
        state after the first k tokens of the round (entry 0: after the previous round); None where
        the caller has no state yet (the round's last token, verified only next round)."""
        self.rounds += 1
        was_thinking = self.in_thinking and not self.finished
        at_boundaries = self.config.readout == "boundary"
        raw: dict[str, float] = {}
        if at_boundaries:
            # each boundary is judged on the state right after it; a boundary at the previous round's
            # last token is judged now, on entry 0, keeping none of this round's tokens
            reads = list(token_signals) if token_signals is not None else [None] * (len(tokens) + 1)
            carry, self._carry = self._carry, None
            if carry is not None and self.enabled and was_thinking:
                got = self._read(reads[0] if reads else None)
                if got is not None and self._passes(got[1]) and (told := self._confirmed(0, got[0])) is not None:
                    return self._exit(0, -1, carry[0], carry[1], told, got[1])
        else:
            before = self.smoothed()
            if was_thinking and signals is not None:
                raw = {n: float(signals[n]) for n in self.smoothers if n in signals}
                for n, v in raw.items():
                    self.smoothers[n].update(v)
                self.history.append((self.thinking_tokens, raw, self.smoothed()))
        smooth = before if not at_boundaries and self.config.lagged else self.smoothed()
        ready = self.enabled and len(smooth) == len(self.smoothers)
        checked = False  # round read-out: only the first eligible boundary of a round is checked

        for i, tid in enumerate(tokens):
            if self.finished:
                self.new_tokens += 1
                continue
            if tid == self.think_end_id:
                self.finished = self.in_thinking or self.finished
                self.in_thinking = False
                self.new_tokens += 1
                continue
            if tid == self.think_start_id:
                self.in_thinking = True
                self.detector.reset("")
                self.new_tokens += 1
                continue
            hit = self.detector.push(tid)
            self.new_tokens += 1
            if not self.in_thinking:
                continue
            self.thinking_tokens += 1
            if self.markers is not None:
                back = self.markers.push(self.detector.text(tid))
                if back is not None:  # the model began its answer by itself: the span ends before it
                    self.thinking_tokens -= back
                    self.finished, self.in_thinking = True, False
                    continue
            budget = self.config.thinking_budget
            if self.budget is not None:
                at_paragraph = hit is not None and hit[0] == "paragraph"
                cut = self.budget.push(self.thinking_tokens, self.detector.text(tid), at_paragraph)
                if cut is not None and (max_keep is None or i + 1 - cut[0] <= max_keep):
                    now = self.smoothed() if at_boundaries else smooth
                    return self._exit(i + 1 - cut[0], i, cut[1], self.detector.text(tid), raw, now)
            elif budget is not None and self.thinking_tokens >= budget and (max_keep is None or i + 1 <= max_keep):
                now = self.smoothed() if at_boundaries else smooth
                return self._exit(i + 1, i, "budget", self.detector.text(tid), raw, now)
            if hit is None:
                continue
            kind, text = hit
            keep = i + 1 if kind == "paragraph" else i
            kept_thinking = self.thinking_tokens - (0 if kind == "paragraph" else 1)
            if kept_thinking < self.config.min_thinking_tokens or (max_keep is not None and keep > max_keep):
                continue
            if self.judge is not None and not self.config.agree:  # the judge replaces the signal rule
                self.judge_calls += 1
                ok, score = self.judge(keep)
                if ok:
                    return self._exit(keep, i, kind, text, {"probe": score}, {"probe": score})
                continue
            if at_boundaries:
                if not self.enabled:
                    continue
                readout = reads[keep] if keep < len(reads) else None
                if readout is None:
                    if keep == len(tokens):  # the state after the round's last token comes next round
                        self._carry = (kind, text)
                    continue
                got = self._read(readout)
                if got is not None and self._passes(got[1]) and (told := self._confirmed(keep, got[0])) is not None:
                    return self._exit(keep, i, kind, text, told, got[1])
                continue
            if checked or not ready or not was_thinking:
                continue
            checked = True
            if self._passes(smooth) and (told := self._confirmed(keep, raw)) is not None:
                return self._exit(keep, i, kind, text, told, smooth)
        return ExitDecision()

    def _read(self, readout: Mapping[str, float] | None) -> tuple[dict[str, float], dict[str, float]] | None:
        """Feed one boundary read-out to the smoothers; (raw, smoothed), or None without a read-out."""
        if readout is None:
            return None
        raw = {n: float(readout[n]) for n in self.smoothers if n in readout}
        for n, v in raw.items():
            self.smoothers[n].update(v)
        self.history.append((self.thinking_tokens, raw, self.smoothed()))
        return raw, self.smoothed()

    def _confirmed(self, keep: int, raw: dict[str, float]) -> dict[str, float] | None:
        """A boundary the signal rule passed: the raw read-out to record if it exits there, None if the
        judge does not confirm it (``agree`` > 0: the count of its trial answer joins the record)."""
        if not self.config.agree:
            return raw
        assert self.judge is not None, "__init__ refuses an enabled rule with agree and no judge"
        self.judge_calls += 1
        ok, count = self.judge(keep)
        return {**raw, "agree": float(count)} if ok else None

    def _passes(self, smooth: dict[str, float]) -> bool:
        return len(smooth) == len(self.smoothers) and all(
            passes(n, smooth[n], th) for n, th in self.config.thresholds.items()
        )

    def _exit(self, keep: int, index: int, kind: str, text: str, raw: dict, smooth: dict) -> ExitDecision:
        """Exit keeping ``keep`` tokens of this round (the token at ``index`` was the last one counted)."""
        dropped_thinking = index + 1 - keep  # a connector cut drops the connector itself
        self.new_tokens -= dropped_thinking
        self.thinking_tokens -= dropped_thinking
        self.finished, self.in_thinking = True, False
        self.record = ExitRecord(
            round=self.rounds,
            thinking_tokens=self.thinking_tokens,
            new_tokens=self.new_tokens,
            boundary=kind,
            boundary_text=text,
            raw=dict(raw),
            smoothed=dict(smooth),
            thresholds=dict(self.config.thresholds),
            origin=self.config.origin,
        )
        return ExitDecision(keep=keep, record=self.record)
