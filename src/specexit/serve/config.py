"""Server-wide settings (``specexit serve`` builds them from its flags)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..exit_policy import ExitConfig
from ..proposer import TreeConfig


@dataclass
class ServeConfig:
    """Server-wide settings; requests may override generation settings within these bounds."""

    model_name: str = "specexit"
    max_queue: int = 16  # requests allowed to wait behind the running one
    max_tokens_cap: int = 8192  # largest max_tokens a request may ask for
    default_max_tokens: int = 1024
    default_mode: str | None = None  # None: specexit if the draft predicts signals, spec with a draft, else vanilla
    tree: TreeConfig = field(default_factory=TreeConfig)
    exit_config: ExitConfig | None = None  # default exit rule (None: the paper's thresholds the draft supports)
