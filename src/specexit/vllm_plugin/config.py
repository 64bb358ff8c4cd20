"""Pure-Python parts of the vLLM integration (no vLLM import): the draft architecture name, the
``hf_overrides`` hook that lets vLLM load a SpecExit draft folder as-is, the export of a draft folder
for vLLM, and the per-request exit settings carried in ``SamplingParams.extra_args["specexit"]``."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, ConfigError
from ..exit_policy import ExitConfig
from ..signals import signal_names

# the draft architecture this plugin registers with vLLM's ModelRegistry; it must end in "Eagle3" so
# that vLLM's EAGLEConfig keeps the name instead of prefixing it with "Eagle3"
ARCHITECTURE = "SpecExitLlamaForCausalLMEagle3"
# what vLLM maps to its own Eagle3LlamaForCausalLM (and what specexit's draft.save_pretrained writes)
_STOCK_ARCHITECTURES = ("LlamaForCausalLMEagle3", "Eagle3LlamaForCausalLM")
EXTRA_ARGS_KEY = "specexit"
# JSON settings the worker applies to requests without extra_args["specexit"] (`specexit serve --backend vllm`)
DEFAULT_SETTINGS_ENV = "SPECEXIT_VLLM_DEFAULT_SETTINGS"

# ExitConfig fields a request may set, plus the request-only keys below
_EXIT_FIELDS = {f.name for f in dataclasses.fields(ExitConfig)}
_REQUEST_KEYS = {"enabled", "tag", "history"}


def vllm_aux_layer_ids(target_layer_ids: list[int]) -> list[int]:
    """specexit names the EAGLE-3 layers by decoder-layer *output* (0-based); vLLM collects the
    residual stream at the *input* of layer ``i`` (``i = 0`` is the embedding output), so it needs
    ``i + 1``.  vLLM appends one tensor per distinct layer in increasing order, so the ids must be
    distinct and ascending to give the same [T, 3H] concatenation."""
    ids = [int(i) + 1 for i in target_layer_ids]
    if len(set(ids)) != len(ids) or ids != sorted(ids):
        raise CheckpointError(
            f"target layer ids {list(target_layer_ids)} are not distinct and ascending; vLLM collects each "
            "auxiliary layer once in layer order, so this draft (built for a very shallow target) cannot be "
            "served by vLLM: use a target with at least 7 decoder layers"
        )
    return ids


def hf_overrides(config: Any) -> Any:
    """``LLM(..., hf_overrides=hf_overrides)``: vLLM applies a callable override to the target config
    and to the draft config.  For a specexit draft (config with a ``specexit`` section and the stock
    EAGLE-3 architecture name) it switches the architecture to this plugin's class, which loads the
    [H + k, 3H] fc as-is, and pins vLLM's auxiliary layers to the ones the draft was trained on.
    Anything else is returned unchanged.  Module-level, so it pickles into vLLM's engine process."""
    spec = getattr(config, "specexit", None)
    archs = list(getattr(config, "architectures", None) or [])
    if not isinstance(spec, dict) or not archs or archs[0] not in (*_STOCK_ARCHITECTURES, ARCHITECTURE):
        return config
    config.architectures = [ARCHITECTURE]
    layer_ids = spec.get("target_layer_ids")
    if layer_ids and not getattr(config, "eagle_aux_hidden_state_layer_ids", None):
        config.eagle_aux_hidden_state_layer_ids = vllm_aux_layer_ids(layer_ids)
    return config


def export_draft(src: str | Path, out: str | Path, keep_signals: bool = True) -> Path:
    """Write a vLLM-ready copy of a specexit draft folder.

    ``keep_signals=True``: same tensors, ``architectures = [SpecExitLlamaForCausalLMEagle3]`` and
    ``eagle_aux_hidden_state_layer_ids`` set, so it loads with this plugin installed and no
    ``hf_overrides`` (e.g. from ``vllm serve --speculative-config``).
    ``keep_signals=False``: a plain EAGLE-3 folder (fc cut to its first H rows) that stock vLLM loads
    without the plugin; the exit signals are lost (speculative decoding only)."""
    from safetensors.torch import load_file, save_file

    src, out = Path(src), Path(out)
    cfg = json.loads((src / "config.json").read_text())
    state = load_file(str(src / "model.safetensors"))
    hidden = int(cfg["hidden_size"])
    names = signal_names(cfg)
    rows = state["fc.weight"].shape[0]
    if rows != hidden + len(names):
        raise CheckpointError(
            f"{src}: fc.weight has {rows} rows but the config implies H + k = {hidden} + {len(names)}"
        )
    layer_ids = (cfg.get("specexit") or {}).get("target_layer_ids")
    if layer_ids:
        cfg["eagle_aux_hidden_state_layer_ids"] = vllm_aux_layer_ids(layer_ids)
    if int(cfg.get("draft_vocab_size") or cfg["vocab_size"]) == int(cfg["vocab_size"]):
        # stock vLLM has no d2t slot for a full-vocabulary draft and refuses the tensor
        state.pop("d2t", None)
        state.pop("t2d", None)
    if keep_signals:
        cfg["architectures"] = [ARCHITECTURE]
    else:
        state["fc.weight"] = state["fc.weight"][:hidden].contiguous()
        cfg["architectures"] = [_STOCK_ARCHITECTURES[0]]
        cfg.setdefault("specexit", {})
        cfg["specexit"] = {**cfg["specexit"], "signals": [], "num_signals": 0, "stripped_signals": names}
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in state.items()}, str(out / "model.safetensors"), metadata={"format": "pt"})
    for extra in src.iterdir():  # tokenizer files etc., if any
        if extra.name not in ("config.json", "model.safetensors") and extra.is_file():
            shutil.copy2(extra, out / extra.name)
    return out


# --- per-request settings ---------------------------------------------------------------------------
@dataclasses.dataclass
class RequestExitSettings:
    """What one request asked for through ``extra_args["specexit"]``."""

    config: ExitConfig
    enabled: bool = True  # False: no signal exit (a thinking budget, if given, still applies)
    tag: str | None = None  # echoed in telemetry (vLLM's internal request ids are not the caller's)
    history: bool = False  # include the per-round signal trace in telemetry


def parse_request_settings(raw: Any, available_signals: list[str] | None = None) -> RequestExitSettings:
    """``extra_args["specexit"]`` -> validated settings.  Accepts ``True`` / ``1`` (defaults), a dict whose
    keys are ExitConfig fields (thresholds, smoothing, alpha, window, min_thinking_tokens,
    paragraph_boundaries, connectors, lagged, thinking_budget, think_start, think_end) plus
    ``enabled``, ``tag`` and ``history``, or that dict as a JSON string (OpenAI server:
    ``"vllm_xargs": {"specexit": "{\\"thresholds\\": {\\"confidence\\": 0.8}}"}``).  Raises ConfigError
    naming the bad key."""
    if isinstance(raw, str):  # the OpenAI server's vllm_xargs carries no nested objects: a JSON string
        try:
            raw = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ConfigError(f"extra_args['{EXTRA_ARGS_KEY}'] is a string but not JSON: {e}") from e
    if raw is True or (type(raw) is int and raw == 1):
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"extra_args['{EXTRA_ARGS_KEY}'] must be a dict or true, got {type(raw).__name__}")
    unknown = sorted(set(raw) - _EXIT_FIELDS - _REQUEST_KEYS)
    if unknown:
        raise ConfigError(f"unknown specexit setting(s) {unknown}; known: {sorted(_EXIT_FIELDS | _REQUEST_KEYS)}")
    fields = {k: v for k, v in raw.items() if k in _EXIT_FIELDS}
    if "connectors" in fields:
        fields["connectors"] = tuple(fields["connectors"])
    if "thresholds" in fields:
        if not isinstance(fields["thresholds"], dict):
            raise ConfigError("thresholds must be a mapping signal -> number")
        fields["thresholds"] = dict(fields["thresholds"])
    try:
        cfg = ExitConfig(**fields)
    except TypeError as e:  # pragma: no cover - guarded by the key check above
        raise ConfigError(str(e)) from e
    enabled = bool(raw.get("enabled", True))
    cfg.validate(available_signals, enabled=enabled)
    return RequestExitSettings(cfg, enabled, raw.get("tag"), bool(raw.get("history", False)))


def extra_args(**settings: Any) -> dict[str, Any]:
    """Client-side helper: ``SamplingParams(extra_args=extra_args(thresholds={...}, tag="q1"))``.
    Validates here (without the draft's signal list) so a bad setting fails before it reaches the
    engine, where it could only be logged."""
    parse_request_settings(settings)
    return {EXTRA_ARGS_KEY: settings}
