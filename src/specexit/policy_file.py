"""A calibrated exit rule on disk: ``exit_policy.json`` beside a draft's weights.

``specexit calibrate`` writes it (the rule, the risk it was certified for, on what data); every entry
point that runs the draft (``generate``, ``bench``, ``serve``, ``demo``, ``--backend vllm``) uses the
rule by default when the file is present, and explicit exit flags replace it.  The exit record of each
result names the rule's source and guarantee (``ExitConfig.origin``), so an exit can be audited.

Pure Python (no torch): the vLLM plugin and the server read it too.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from .errors import ConfigError
from .exit_policy import ExitConfig

POLICY_FILE = "exit_policy.json"
FORMAT = "specexit-exit-policy/1"
# the ExitConfig fields a calibrated rule sets; the think markers stay the caller's
RULE_FIELDS = ("thresholds", "smoothing", "alpha", "window", "min_thinking_tokens", "readout",
               "paragraph_boundaries", "connectors", "lagged", "agree", "agree_tokens")  # fmt: skip


@dataclass(frozen=True)
class CalibratedPolicy:
    rule: dict[str, Any]  # RULE_FIELDS of an ExitConfig
    guarantee: dict[str, Any]  # eps, delta, loss, n, method, pvalue, ...
    expected: dict[str, Any]  # measured on the calibration data: cut, accuracy full / exit
    data: dict[str, Any]  # what it was calibrated on: sha256, traces, temperature, ...
    path: str | None = None  # where it was read from

    def exit_config(self, think_start: str = "<think>", think_end: str = "</think>") -> ExitConfig:
        """The rule as an ExitConfig, its origin naming this file and the guarantee."""
        rule = dict(self.rule)
        rule["connectors"] = tuple(rule.get("connectors", ()))
        cfg = ExitConfig(**rule, think_start=think_start, think_end=think_end)
        cfg.origin = self.origin()
        return cfg

    def origin(self) -> dict[str, Any]:
        g = self.guarantee
        return {"source": "calibrated", "policy": self.path, "eps": g.get("eps"), "delta": g.get("delta"),
                "loss": g.get("loss"), "n": g.get("n"), "expected_cut": self.expected.get("thinking_cut")}  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("path")
        return {"format": FORMAT, **d}


def rule_of(cfg: ExitConfig) -> dict[str, Any]:
    """The RULE_FIELDS of an ExitConfig, JSON-ready."""
    d = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name in RULE_FIELDS}
    d["connectors"] = list(d["connectors"])
    return d


def policy_path(draft_dir: str | Path) -> Path:
    return Path(draft_dir) / POLICY_FILE


def read_policy(path: str | Path) -> CalibratedPolicy:
    """Read and check one policy file; ConfigError naming the file on anything malformed."""
    path = Path(path)
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ConfigError(f"{path}: not a readable exit policy ({e})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT:
        raise ConfigError(f"{path}: not an exit policy of format {FORMAT!r}")
    rule = d.get("rule")
    if not isinstance(rule, dict) or set(rule) - set(RULE_FIELDS):
        raise ConfigError(f"{path}: 'rule' must be an object with keys among {', '.join(RULE_FIELDS)}")
    pol = CalibratedPolicy(rule, d.get("guarantee") or {}, d.get("expected") or {}, d.get("data") or {}, str(path))
    try:
        pol.exit_config().validate()
    except (ConfigError, TypeError) as e:
        raise ConfigError(f"{path}: invalid rule: {e}") from None
    return pol


def load_policy(draft_dir: str | Path | None) -> CalibratedPolicy | None:
    """The calibrated policy shipped with a draft folder, or None when it has none."""
    if draft_dir is None or not policy_path(draft_dir).is_file():
        return None
    return read_policy(policy_path(draft_dir))


def write_policy(policy: CalibratedPolicy, path: str | Path) -> Path:
    """Write atomically (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(policy.to_dict(), indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path
