"""The SpecExit EAGLE-3 draft as a vLLM model class (imported by vLLM only, through the registry).

It is vLLM's own ``Eagle3LlamaForCausalLM`` with one change: ``fc`` has ``H + k`` output rows (the
specexit / AngelSlim layout), so the checkpoint loads as-is.  Drafting uses the first H rows, exactly
as the stock class; the last k rows are the exit-signal read-out, applied by the runner hooks to the
target's auxiliary hidden states of each step.  With k = 0 it behaves exactly like the stock class.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from vllm.config import VllmConfig
from vllm.logger import init_logger
from vllm.model_executor.layers.linear import ReplicatedLinear
from vllm.model_executor.models.llama_eagle3 import Eagle3LlamaForCausalLM
from vllm.model_executor.models.utils import maybe_prefix

from ..signals import signal_names

logger = init_logger(__name__)


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
            logger.warning(
                "SpecExit: vLLM chose Model Runner V2, which the exit hooks do not cover yet: speculative decoding "
                "works, early exit does not. Set VLLM_USE_V2_MODEL_RUNNER=0 to use the V1 runner."
            )
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
    try:
        return bool(vllm_config.use_v2_model_runner)
    except Exception:  # property missing in another vLLM version: assume the V1 runner
        return False
