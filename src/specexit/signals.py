"""The exit signals a SpecExit draft predicts: their names, order, activations and direction.

One home for these rules, used by the draft model, the exit policy and the vLLM plugin alike.  No torch
import: activations are applied through tensor methods, so the pure-Python policy can import this too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

# the order of the signal rows after the fused feature in the draft's fc (AngelSlim's layout)
SIGNAL_NAMES: tuple[str, ...] = ("confidence", "progress", "remain")
# remain counts tokens still to come: small is good.  The other two are probabilities: large is good.
LOWER_IS_BETTER = frozenset({"remain"})
# confidence and progress are probabilities (sigmoid); remain is regressed in log-tokens (exp)
_ACTIVATION = {"confidence": "sigmoid", "progress": "sigmoid", "remain": "exp"}


def names_for_count(k: int) -> list[str]:
    """Signal names of a draft that only says how many signal rows it has (AngelSlim-style configs, or a
    checkpoint whose fc shape disagrees with its config): the first k in order, except that a single
    row is the confidence signal."""
    return list(SIGNAL_NAMES[:k]) if k != 1 else ["confidence"]


def activate(name: str, logits: Any) -> Any:
    """A signal's value from its raw fc output (a float tensor of any shape)."""
    return logits.sigmoid() if _ACTIVATION[name] == "sigmoid" else logits.exp()


def activate_rows(raw: Any, names: Sequence[str]) -> dict[str, Any]:
    """[T, k] raw signal outputs -> {name: [T] activated values, float32}."""
    raw = raw.float()
    return {name: activate(name, raw[:, i]) for i, name in enumerate(names)}


def passes(name: str, value: float, threshold: float) -> bool:
    """Whether one signal value clears its exit threshold."""
    return value < threshold if name in LOWER_IS_BETTER else value > threshold


def signal_names(config: Mapping[str, Any] | Any) -> list[str]:
    """Signal rows of a draft config (a plain dict or an attribute object such as a transformers config):
    ``specexit.signals``, else ``specexit.num_signals`` / ``num_exit_signals`` (a count only)."""
    from .errors import CheckpointError

    get = config.get if isinstance(config, Mapping) else lambda k, d=None: getattr(config, k, d)
    spec = get("specexit") or {}
    if not isinstance(spec, Mapping):
        return []
    names = spec.get("signals")
    if names is None:
        names = names_for_count(int(spec.get("num_signals", get("num_exit_signals", 0)) or 0))
    unknown = [n for n in names if n not in SIGNAL_NAMES]
    if unknown:
        raise CheckpointError(f"unknown signal(s) {unknown} in the draft config; known: {list(SIGNAL_NAMES)}")
    return list(names)
