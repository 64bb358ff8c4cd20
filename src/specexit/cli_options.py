"""Command-line options shared by the sub-commands, and the parsers of their values.

One home for each option's spelling, default, help and parsing, so that e.g. ``--tree chain:4`` means
the same to ``generate``, ``bench`` and ``serve``.  Import-light (no torch): ``specexit.cli`` imports
it to build its parser, and building the parser must stay cheap.

Values that can be wrong in ways argparse cannot see (``--tree``) are parsed by the command's handler,
so that a bad one is an :class:`OptionError`, printed by the CLI as one line with exit status 2.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CheckpointError, ConfigError
from .exit_policy import DEFAULT_THRESHOLDS, READOUTS, SMOOTHING_METHODS, ExitConfig
from .results import MODES
from .signals import SIGNAL_NAMES

if TYPE_CHECKING:
    from .policy_file import CalibratedPolicy
    from .proposer import TreeConfig

DEFAULT_TREE = "auto"
AUTO_BOUNDS = (64, 8, 8)  # the largest tree ``--tree auto`` may pick: total tokens, depth, branching
TREE_FORMS = "auto[:total,depth,branching] (adaptive), total,depth,branching or chain:DEPTH"


class OptionError(ConfigError, ValueError):
    """A command-line value that does not parse.  A ConfigError, so the CLI prints it (exit status 2),
    and a ValueError, so scripts that parse option text themselves can catch what parsers raise."""


# --- value parsers ---------------------------------------------------------------------------------


def split_list(text: str) -> tuple[str, ...]:
    """``'Wait, But,,So'`` -> ``('Wait', 'But', 'So')``: a comma-separated list, blanks dropped."""
    return tuple(s.strip() for s in (text or "").split(",") if s.strip())


def parse_pairs(text: str, what: str) -> dict[str, str]:
    """``'a=1, b=2'`` -> ``{'a': '1', 'b': '2'}``; ``what`` names one pair in the error message."""
    out = {}
    for part in text.split(","):
        if not part.strip():
            continue
        name, sep, value = part.partition("=")
        if not sep:
            raise OptionError(f"{what} {part!r} must look like name=value")
        out[name.strip()] = value.strip()
    return out


def parse_thresholds(text: str) -> dict[str, float]:
    """argparse type of ``--thresholds``: ``'confidence=0.8,progress=0.3'`` -> dict of floats.  Signal
    names are checked later, by ExitConfig.validate, against the draft's own signals."""
    try:
        pairs = parse_pairs(text, "threshold")
    except OptionError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    out = {}
    for name, value in pairs.items():
        try:
            out[name] = float(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"threshold value {value!r} is not a number") from None
    return out


def parse_signals(text: str) -> list[str]:
    """argparse type of ``--signals``: a comma-separated subset of the exit signals ('' for none)."""
    names = list(split_list(text))
    bad = [n for n in names if n not in SIGNAL_NAMES]
    if bad:
        raise argparse.ArgumentTypeError(f"unknown signal(s) {bad}; choose from {','.join(SIGNAL_NAMES)}")
    return names


def parse_tree(text: str) -> TreeConfig:
    """``--tree``: ``auto`` (each round the size that the measured costs and the draft's confidence say
    pays most, possibly none; ``auto:64,8,8`` sets its bounds), ``60,6,10`` (a fixed dynamic tree: total
    tokens, depth, branching) or ``chain:4`` (a chain of 4 drafts).  Anything else is an OptionError."""
    from .proposer import TreeConfig  # proposer imports torch: only when a tree is built

    kind, sep, arg = text.strip().partition(":")
    try:
        if kind == "auto":
            total, depth, branching = (int(x) for x in arg.split(",")) if sep else AUTO_BOUNDS
            return TreeConfig(total_tokens=total, depth=depth, branching=branching, auto=True)
        if sep and kind == "chain":
            depth = int(arg)
            return TreeConfig(total_tokens=depth, depth=depth, branching=1, chain=True)
        total, depth, branching = (int(x) for x in text.split(","))
        return TreeConfig(total_tokens=total, depth=depth, branching=branching)
    except ValueError:
        example = "(e.g. auto, 60,6,10 or chain:4)"
        raise OptionError(f"--tree {text!r} is not a tree: use --tree {TREE_FORMS} {example}") from None
    except ConfigError as e:  # parsed, but not a valid tree (e.g. depth 0)
        raise OptionError(f"--tree {text!r}: {e}") from None


# --- checks of parsed values (each error names its flag) --------------------------------------------


def flag_of(dest: str) -> str:
    """``'max_new_tokens'`` -> ``'--max-new-tokens'``."""
    return "--" + dest.replace("_", "-")


def check_at_least(a: argparse.Namespace, minimum: float, *dests: str) -> None:
    """OptionError unless every option ``dests`` (those the command has and that are set) is >= minimum."""
    for dest in dests:
        value = getattr(a, dest, None)
        if value is not None and value < minimum:
            raise OptionError(f"{flag_of(dest)} must be >= {minimum}, got {value}")


def check_out_dir(path: str | Path, flag: str = "--out") -> None:
    """An output folder that ``mkdir(parents=True)`` can make (or that exists): neither it nor a parent
    is a file.  Checked before a command writes anything."""
    path = Path(path)
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                what = "is an existing file, not a folder" if p == path else f"cannot be made: {p} is a file"
                raise OptionError(f"{flag} {path} {what}")
            return


def check_out_file(path: str | Path, flag: str) -> None:
    """An output file that can be written: not a folder, in an existing folder."""
    path = Path(path)
    if path.is_dir():
        raise OptionError(f"{flag} {path} is a folder; give a file name")
    if not path.parent.is_dir():
        raise OptionError(f"{flag} {path}: folder {path.parent} does not exist")


def check_dtypes(a: argparse.Namespace) -> None:
    """``--dtype`` and ``--draft-dtype`` (those the command has) name a known precision.  ``--dtype auto``
    is measured when the target loads (``target.choose_auto_dtype``); for vLLM it is decided here, by the
    CPU's flags (kept in ``a.dtype_choice`` for the command's JSON output)."""
    from .target import resolve_dtype  # torch: only when a command checks its options

    if getattr(a, "dtype", None) == "auto" and getattr(a, "backend", "torch") == "vllm":
        from .machine import bf16_native

        # vLLM's own "auto" is the checkpoint's dtype, emulated (slow) on a CPU without native bf16
        a.dtype = "bfloat16" if bf16_native() else "float32"
        a.dtype_choice = {"dtype": a.dtype, "why": "vLLM: bfloat16 where the CPU has native bf16, else float32"}
    for dest in ("dtype", "draft_dtype"):
        value = getattr(a, dest, None)
        if value is not None and not (dest == "dtype" and value == "auto"):
            try:
                resolve_dtype(value)
            except CheckpointError as e:
                raise OptionError(f"{flag_of(dest)}: {e}") from None


def sampling_from_args(a: argparse.Namespace):
    """The SamplingParams of ``--temperature``, ``--top-p`` (``--top-k``, ``--seed`` where the command
    has them); an invalid one is an OptionError naming the flag."""
    from .sampling import SamplingParams  # torch: only when a command checks its options

    try:
        return SamplingParams(temperature=a.temperature, top_p=a.top_p, top_k=getattr(a, "top_k", 0),
                              seed=getattr(a, "seed", None))  # fmt: skip
    except ConfigError as e:  # "top_p must be in (0, 1], got 0" -> "--top-p must be in (0, 1], got 0"
        name, _, rest = str(e).partition(" ")
        raise OptionError(f"{flag_of(name)} {rest}" if name in ("temperature", "top_p", "top_k") else str(e)) from None


# --- option groups ---------------------------------------------------------------------------------


def add_mode_arg(p: argparse.ArgumentParser, help_text: str) -> None:
    """``--mode`` (default None: the command picks one from the draft it has)."""
    p.add_argument("--mode", choices=MODES, default=None, help=help_text)


def add_tree_arg(p: argparse.ArgumentParser, default: str = DEFAULT_TREE) -> None:
    """``--tree`` as text; the handler parses it with :func:`parse_tree`."""
    p.add_argument("--tree", default=default, help=f"draft tree: {TREE_FORMS} (default {default})")


def add_dtype_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dtype", default="auto", help="target precision: auto (bfloat16 where this CPU computes it "
                   "natively and it measures faster, else float32) | float32 | bfloat16 | float16")  # fmt: skip
    p.add_argument("--draft-dtype", default=None, help="draft precision (default: the target's)")


def add_think_args(p: argparse.ArgumentParser) -> None:
    """The tokens that open and close the thinking span."""
    p.add_argument("--think-start", default="<think>")
    p.add_argument("--think-end", default="</think>")


EXIT_FLAGS = ("smoothing", "readout", "alpha", "window", "min_thinking_tokens", "connectors")


def add_exit_args(p: argparse.ArgumentParser, thresholds_default: str) -> None:
    """The exit-rule knobs (read back by :func:`exit_config_from_args`); ``thresholds_default`` says in
    the help which thresholds apply without ``--thresholds``.  None of them given: the draft's calibrated
    rule (``exit_policy.json``, see ``specexit calibrate``) where it has one."""
    example = "confidence=0.8,progress=0.3,remain=200"
    p.add_argument("--thresholds", type=parse_thresholds, default=None,
                   help=f"exit thresholds, e.g. {example} (default: the draft's calibrated rule, else "
                   f"{thresholds_default})")  # fmt: skip
    p.add_argument("--smoothing", default=None, choices=SMOOTHING_METHODS, help="default: ewma")
    p.add_argument("--readout", default=None, choices=READOUTS,
                   help="signals: round mean (default) or at each boundary")  # fmt: skip
    p.add_argument("--alpha", type=float, default=None, help="EWMA weight of the newest value (default 0.1)")
    p.add_argument("--window", type=int, default=None, help="window of momentum / window smoothing (default 10)")
    p.add_argument("--min-thinking-tokens", type=int, default=None)
    p.add_argument("--connectors", default=None,
                   help="comma-separated connector words that start a boundary, e.g. Wait,But,So")  # fmt: skip
    p.add_argument("--thinking-budget", type=int, default=None, metavar="N",
                   help="end thinking within N tokens, at the last paragraph / sentence / word end that fits "
                   "(with the exit rule: whichever comes first)")  # fmt: skip
    p.add_argument("--no-calibrated", action="store_true",
                   help="ignore the draft's exit_policy.json (use the flags' / the paper's rule)")  # fmt: skip


def exit_flags_given(a: argparse.Namespace) -> bool:
    return a.thresholds is not None or any(getattr(a, k, None) is not None for k in EXIT_FLAGS)


def exit_config_from_args(
    a: argparse.Namespace, default_thresholds: Mapping[str, float] | None = None, policy: CalibratedPolicy | None = None
) -> ExitConfig:
    """The ExitConfig of :func:`add_exit_args` and :func:`add_think_args` options (not validated here:
    the caller knows which signals its draft predicts).  ``policy`` (a ``policy_file.CalibratedPolicy``):
    used when no exit flag is given; any exit flag replaces it as a whole (a guarantee holds for the
    calibrated rule only, not for a rule with one knob moved)."""
    flags = exit_flags_given(a)
    if policy is not None and not flags and not getattr(a, "no_calibrated", False):
        return _with_budget(policy.exit_config(a.think_start, a.think_end), a)
    base = ExitConfig()
    if a.thresholds is not None:
        thresholds = dict(a.thresholds)
    else:
        thresholds = dict(DEFAULT_THRESHOLDS if default_thresholds is None else default_thresholds)

    def pick(name: str):
        value = getattr(a, name, None)
        return getattr(base, name) if value is None else value

    cfg = ExitConfig(
        thresholds=thresholds,
        smoothing=pick("smoothing"),
        readout=pick("readout"),
        alpha=pick("alpha"),
        window=pick("window"),
        min_thinking_tokens=pick("min_thinking_tokens"),
        connectors=split_list(a.connectors) if a.connectors else (),
        think_start=a.think_start,
        think_end=a.think_end,
        origin={"source": "flags" if flags else "defaults"},
    )
    return _with_budget(cfg, a)


def _with_budget(cfg: ExitConfig, a: argparse.Namespace) -> ExitConfig:
    """``--thinking-budget`` composes with any rule, calibrated or not: whichever ends thinking first (the
    record says which; a calibrated rule's guarantee is about the rule alone, not the budget's cuts)."""
    budget = getattr(a, "thinking_budget", None)
    if budget is not None:
        if budget < 1:
            raise ConfigError(f"--thinking-budget must be >= 1, got {budget}")
        cfg.thinking_budget, cfg.budget_at = budget, "boundary"
    return cfg


def add_backend_args(
    p: argparse.ArgumentParser,
    backend_help: str = "torch: this package's engine; vllm: vLLM + the SpecExit plugin (docs/vllm.md)",
    max_model_len: bool = True,
) -> None:
    """``--backend`` and the vLLM engine settings; ``max_model_len=False`` where the vLLM server takes
    its own context length (``serve --vllm-arg``)."""
    p.add_argument("--backend", choices=["torch", "vllm"], default="torch", help=backend_help)
    p.add_argument("--num-speculative-tokens", type=int, default=5,
                   help="vLLM backend: draft chain length k per step (vLLM's EAGLE-3 drafts a chain)")  # fmt: skip
    if max_model_len:
        p.add_argument("--max-model-len", type=int, default=None,
                       help="vLLM backend: context length (default: model's)")  # fmt: skip
