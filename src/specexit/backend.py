"""What a generation backend offers (the PyTorch engine, the vLLM backend), so that ``bench``,
``train traces`` and the CLI drive either one without knowing which it is."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from .exit_control import JudgeFactory
from .exit_policy import ExitConfig
from .results import GenerationResult
from .sampling import SamplingParams


@dataclass
class GenerationRequest:
    """One generation of a batch."""

    input_ids: list[int]
    mode: str = "specexit"
    max_new_tokens: int = 512
    sampling: SamplingParams = field(default_factory=SamplingParams)
    exit_config: ExitConfig | None = None  # specexit settings, or a thinking budget for mode "spec"
    probe: JudgeFactory | None = None  # a judge that replaces the signal rule (torch backend only)
    tree: Any = None  # the draft tree (proposer.TreeConfig; torch backend only, vLLM drafts a chain)


class Backend(Protocol):
    name: str  # "torch" | "vllm"
    batched: bool  # generate_batch runs its requests together (else one after another)

    def encode_prompt(
        self, prompt: str, chat: bool = True, enable_thinking: bool = True, system: str | None = None
    ) -> list[int]: ...

    def prepare(self, mode: str, tree: Any = None) -> None:
        """Start whatever ``mode`` runs on, with the draft tree the requests will use (``tree``, as in
        GenerationRequest), so that start-up is not a generation's time."""

    def generate_batch(self, requests: Sequence[GenerationRequest]) -> list[GenerationResult]:
        """Results in request order; ``wall_s`` of each is its own latency (queued to last token)."""

    def describe(self) -> dict:
        """What a results record needs to say about the backend (models, versions, settings)."""
