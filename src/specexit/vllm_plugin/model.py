"""The SpecExit EAGLE-3 draft as a vLLM model class (imported by vLLM only, through the registry).

It is vLLM's own ``Eagle3LlamaForCausalLM`` with one change: ``fc`` has ``H + k`` output rows (the
specexit / AngelSlim layout), so the checkpoint loads as-is.  Drafting uses the first H rows, exactly
as the stock class; the last k rows are the exit-signal read-out, applied by the runner hooks to the
target's auxiliary hidden states of each step.  With k = 0 it behaves exactly like the stock class.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

import torch
from vllm.config import VllmConfig
from vllm.logger import init_logger
from vllm.model_executor.layers.linear import ReplicatedLinear
from vllm.model_executor.models.llama_eagle3 import Eagle3LlamaForCausalLM
from vllm.model_executor.models.utils import maybe_prefix

from ..signals import signal_names
from .config import DEFAULT_SETTINGS_ENV

# under "vllm.": vLLM configures the handlers (and format) of its own logger tree only
logger = init_logger(f"vllm.{__name__}")
V2_ENV = "VLLM_USE_V2_MODEL_RUNNER"


class SpecExitEagle3LlamaForCausalLM(Eagle3LlamaForCausalLM):
    def __init__(self, *, vllm_config: VllmConfig, prefix: str = "") -> None:
        super().__init__(vllm_config=vllm_config, prefix=prefix)
        self.signals: list[str] = signal_names(self.config)
        self.num_signals = len(self.signals)
        self.draft_hidden_size = int(self.config.hidden_size)
        inner = self.model
        if self.num_signals:
            if not inner.use_aux_hidden_state:
                raise ValueError("a SpecExit draft needs the EAGLE-3 auxiliary hidden states (use_aux_hidden_state)")
            if inner.norm_before_fc or inner.fc_norm is not None:
                raise ValueError("SpecExit signal rows assume fc on the raw hidden states (no norm_before_fc/fc_norm)")
            if inner.quant_config is not None:
                raise ValueError("a quantised SpecExit draft is not supported yet")
            inner.fc = ReplicatedLinear(
                input_size=inner.fc_input_size,
                output_size=self.draft_hidden_size + self.num_signals,
                bias=False,
                params_dtype=vllm_config.model_config.dtype,
                quant_config=None,
                prefix=maybe_prefix(maybe_prefix(prefix, "model"), "fc"),
                return_bias=False,
            )
            # a copy of the signal rows: vLLM's CPU backend repacks fc for oneDNN after loading and
            # replaces fc.weight by an empty tensor, so the rows cannot be read from fc later
            self.register_buffer(
                "specexit_signal_weight",
                torch.zeros(self.num_signals, inner.fc_input_size, dtype=vllm_config.model_config.dtype),
                persistent=False,
            )
        from .runner_hooks import install

        install()
        if self.num_signals and _uses_v2_runner(vllm_config):
            why = (
                f"SpecExit: vLLM chose Model Runner V2 ({V2_ENV}={os.environ.get(V2_ENV)!r}), which the exit hooks "
                "do not cover yet: speculative decoding works, early exit does not (requests that ask for it run "
                f"without it and write no exit telemetry). Set {V2_ENV}=0 to use the V1 runner."
            )
            if os.environ.get(DEFAULT_SETTINGS_ENV):  # a server whose every request should exit: refuse to start
                raise ValueError(f"{why} ({DEFAULT_SETTINGS_ENV} asks for early exit on every request)")
            logger.warning(why)
        logger.info(
            "SpecExit draft: exit signals %s (fc rows %d + %d)", self.signals, self.draft_hidden_size, self.num_signals
        )

    @property
    def signal_weight(self) -> torch.Tensor | None:
        """[k, 3 * H_target] rows of fc that read the exit signals (None for a plain draft)."""
        return self.specexit_signal_weight if self.num_signals else None

    def combine_hidden_states(self, hidden_states: torch.Tensor) -> torch.Tensor:
        out = super().combine_hidden_states(hidden_states)
        if self.num_signals:
            out = out[..., : self.draft_hidden_size].contiguous()
        return out

    def load_weights(self, weights: Iterable[tuple[str, torch.Tensor]]):
        def capture():
            for name, w in weights:
                if self.num_signals and name.removeprefix("model.") == "fc.weight":
                    self._check_fc(w)
                    self.specexit_signal_weight.copy_(w[self.draft_hidden_size :])
                if name.removeprefix("model.") == "d2t" and self.draft_id_to_target_id is None:
                    continue  # full-vocabulary draft: specexit still writes d2t (zeros), vLLM has no slot for it
                yield name, w

        return super().load_weights(capture())

    def _check_fc(self, w: torch.Tensor) -> None:
        want = (self.draft_hidden_size + self.num_signals, self.model.fc_input_size)
        if tuple(w.shape) != want:
            raise ValueError(
                f"SpecExit draft fc.weight has shape {list(w.shape)}; the config (hidden {self.draft_hidden_size}, "
                f"signals {self.signals}) implies {list(want)}"
            )


def _uses_v2_runner(vllm_config: VllmConfig) -> bool:
    """Whether vLLM runs Model Runner V2 (not covered by the exit hooks).  Where this vLLM cannot say (no
    ``use_v2_model_runner``: another version), the ``VLLM_USE_V2_MODEL_RUNNER`` setting decides, with a
    warning: the guess is never silent."""
    try:
        return bool(vllm_config.use_v2_model_runner)
    except Exception as e:
        value = os.environ.get(V2_ENV)
        v2 = value is not None and value.strip().lower() in ("1", "true", "yes")
        logger.warning(
            "SpecExit: cannot tell which model runner this vLLM uses (%s: %s); assuming %s from %s=%r. The exit "
            "hooks cover the V1 runner only: set %s=0, or early exit may silently not happen.",
            type(e).__name__, e, "V2" if v2 else "V1", V2_ENV, value, V2_ENV,
        )  # fmt: skip
        return v2
