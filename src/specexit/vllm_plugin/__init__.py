"""SpecExit inside vLLM (V1 engine) as a plugin: no fork, no vendored vLLM code.  See docs/vllm.md.

- ``register()`` is the ``vllm.general_plugins`` entry point: it registers the draft architecture
  ``SpecExitLlamaForCausalLMEagle3`` (an ``Eagle3LlamaForCausalLM`` whose fc keeps the k signal rows)
  with vLLM's ModelRegistry, lazily by name, so nothing of vLLM is imported here.
- When that draft is built inside a vLLM worker it wraps two methods of vLLM's model runner
  (``sample_tokens`` to see the target's auxiliary hidden states of the step, ``_sample`` to read the
  exit signals per request and cut the thinking span right after the accepted boundary token).
- ``hf_overrides`` loads a specexit draft folder as-is; ``export_draft`` writes one that needs no
  override (for ``vllm serve``) or a plain EAGLE-3 folder for stock vLLM.
- Per-request settings travel in ``SamplingParams(extra_args={"specexit": {...}})``; ``extra_args()``
  builds and validates them.

Importing this package never imports vLLM (specexit works without it).
"""

from __future__ import annotations

import os

from .config import (
    ARCHITECTURE,
    EXTRA_ARGS_KEY,
    export_draft,
    extra_args,
    hf_overrides,
    parse_request_settings,
)

__all__ = [
    "ARCHITECTURE",
    "EXTRA_ARGS_KEY",
    "export_draft",
    "extra_args",
    "hf_overrides",
    "parse_request_settings",
    "register",
]

_MODEL_CLASS = "specexit.vllm_plugin.model:SpecExitEagle3LlamaForCausalLM"


def register() -> None:
    """Entry point of the ``vllm.general_plugins`` group (vLLM calls it in every process it starts).
    Idempotent; ``SPECEXIT_VLLM_DISABLE=1`` turns the plugin off."""
    if os.environ.get("SPECEXIT_VLLM_DISABLE", "0") not in ("", "0"):
        return
    from vllm import ModelRegistry

    if ARCHITECTURE not in ModelRegistry.get_supported_archs():
        ModelRegistry.register_model(ARCHITECTURE, _MODEL_CLASS)
