"""Benchmark methods, parsed from strings such as
``vanilla,spec,specexit,specexit[confidence=0.7,alpha=0.2],budget:256,probe[threshold=0.9],nothink``.

All methods run through the same engine and are timed the same way:
  vanilla   plain target decoding (the reference)
  spec      EAGLE-3 tree speculative decoding, no exit (lossless)
  specexit  spec + the learned exit signals; knobs: confidence, progress, remain (thresholds; a knob
            set to ``off`` drops that signal), alpha, smoothing, window, min (thinking tokens), lagged,
            readout (round | boundary)
  budget:N  spec + a hard cap of N thinking tokens, then the think-end token is forced
  boundary-budget:N  spec + a budget of N thinking tokens that ends at the last paragraph / sentence /
            word end that fits (thinking_budget.py; `generate --thinking-budget N`)
  probe     spec + DEER-style probing: at each boundary the target writes a trial answer; exit when its
            mean token probability exceeds ``threshold`` (default 0.95); knobs: threshold, tokens, min
  nothink   spec with thinking switched off in the chat template (enable_thinking=False)
  calibrated  specexit with the draft's calibrated rule (``exit_policy.json`` of ``specexit calibrate``),
            or ``calibrated:PATH`` for a policy file elsewhere; no knobs (a moved knob voids the guarantee)
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..cli_options import parse_pairs
from ..errors import ConfigError
from ..exit_policy import DEFAULT_THRESHOLDS, SIGNAL_NAMES, ExitConfig
from ..probe import ProbeConfig

KINDS = ("vanilla", "spec", "specexit", "budget", "boundary-budget", "probe", "nothink", "calibrated")


@dataclass(frozen=True)
class Method:
    label: str
    kind: str
    mode: str  # engine mode
    exit_config: ExitConfig = field(default_factory=ExitConfig)
    enable_thinking: bool = True
    probe: ProbeConfig | None = None


def split_methods(text: str) -> list[str]:
    """Split on commas outside brackets."""
    out, depth, cur = [], 0, ""
    for ch in text:
        if ch == "[":
            depth += 1
        elif ch == "]":
            depth -= 1
        if ch == "," and depth == 0:
            out.append(cur.strip())
            cur = ""
        else:
            cur += ch
    if depth != 0:
        raise ConfigError(f"unbalanced brackets in --methods {text!r}")
    out.append(cur.strip())
    return [m for m in out if m]


def _num(label: str, key: str, value: str, kind=float):
    try:
        return kind(value)
    except ValueError:
        raise ConfigError(f"method {label!r}: {key}={value!r} is not a number") from None


def parse_method(label: str, base: ExitConfig | None = None, draft: str | None = None) -> Method:
    """``draft``: the draft folder, whose ``exit_policy.json`` the ``calibrated`` method runs."""
    base = base or ExitConfig()
    name, _, rest = label.partition("[")
    if rest and not rest.endswith("]"):
        raise ConfigError(f"method {label!r}: knobs go in brackets, e.g. specexit[confidence=0.7]")
    knobs = parse_pairs(rest[:-1], f"method {label!r}: knob") if rest else {}
    name, _, arg = name.partition(":")
    if name not in KINDS:
        raise ConfigError(f"unknown method {name!r}; choose from {', '.join(KINDS)} (e.g. budget:256)")
    if name == "vanilla":
        return Method(label, name, "vanilla", base)
    if name == "calibrated":
        from ..policy_file import load_policy, read_policy

        if rest:
            raise ConfigError(f"method {label!r}: the calibrated rule takes no knobs (they would void its guarantee)")
        policy = read_policy(arg) if arg else load_policy(draft)
        if policy is None:
            raise ConfigError(
                f"method {label!r}: the draft {draft} has no exit_policy.json; run `specexit calibrate ... "
                "--install` or give calibrated:PATH"
            )
        return Method(label, name, "specexit", policy.exit_config(base.think_start, base.think_end))
    if name == "spec":
        return Method(label, name, "spec", base)
    if name == "nothink":
        return Method(label, name, "spec", base, enable_thinking=False)
    if name in ("budget", "boundary-budget"):
        if not arg:
            raise ConfigError(f"{name} needs a token count, e.g. {name}:256")
        n = _num(label, name, arg, int)
        if n < 1:
            raise ConfigError(f"method {label!r}: the budget must be >= 1 token")
        at = "boundary" if name == "boundary-budget" else "token"
        return Method(label, name, "spec", replace(base, thinking_budget=n, budget_at=at))
    if name == "probe":
        settings = ProbeConfig()
        cfg = base
        for k, v in knobs.items():
            if k == "threshold":
                settings = replace(settings, threshold=_num(label, k, v))
            elif k == "tokens":
                settings = replace(settings, max_tokens=_num(label, k, v, int))
            elif k == "min":
                cfg = replace(cfg, min_thinking_tokens=_num(label, k, v, int))
            else:
                raise ConfigError(f"method {label!r}: unknown knob {k!r} (threshold, tokens, min)")
        return Method(label, name, "spec", cfg, probe=settings)
    thresholds = dict(base.thresholds or DEFAULT_THRESHOLDS)
    cfg = base
    for k, v in knobs.items():
        if k in SIGNAL_NAMES:
            if v == "off":
                thresholds.pop(k, None)
            else:
                thresholds[k] = _num(label, k, v)
        elif k == "alpha":
            cfg = replace(cfg, alpha=_num(label, k, v))
        elif k == "window":
            cfg = replace(cfg, window=_num(label, k, v, int))
        elif k == "smoothing":
            cfg = replace(cfg, smoothing=v)
        elif k == "min":
            cfg = replace(cfg, min_thinking_tokens=_num(label, k, v, int))
        elif k == "lagged":
            cfg = replace(cfg, lagged=v.lower() in ("1", "true", "yes"))
        elif k == "readout":
            cfg = replace(cfg, readout=v)
        elif k == "agree":
            cfg = replace(cfg, agree=_num(label, k, v, int))
        elif k == "agree_tokens":
            cfg = replace(cfg, agree_tokens=_num(label, k, v, int))
        else:
            raise ConfigError(
                f"method {label!r}: unknown knob {k!r} (confidence, progress, remain, alpha, smoothing, window, "
                "min, lagged, readout, agree, agree_tokens)"
            )
    cfg = replace(cfg, thresholds=thresholds)
    cfg.validate()
    return Method(label, "specexit", "specexit", cfg)


def parse_methods(text: str, base: ExitConfig | None = None, draft: str | None = None) -> list[Method]:
    methods = [parse_method(m, base, draft) for m in split_methods(text)]
    labels = [m.label for m in methods]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--methods lists a method twice: {labels}")
    return methods
