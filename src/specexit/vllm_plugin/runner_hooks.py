"""Per-request SpecExit inside vLLM's V1 model runner (the worker process).

Installed by ``SpecExitEagle3LlamaForCausalLM.__init__`` (so only when a SpecExit draft is loaded);
it wraps two methods of ``vllm.v1.worker.gpu_model_runner.GPUModelRunner`` (the CPU runner inherits
them):

- ``sample_tokens``: before vLLM unpacks its per-step state, keep a reference to the scheduler output
  and the target's auxiliary hidden states of this step (the three EAGLE-3 layers, [T, H] each).
- ``_sample``: after rejection sampling, for every request that carries ``extra_args["specexit"]``:
  compute its exit signals from the hidden states of the tokens it just committed (the previous
  step's last token and the accepted drafts: the positions the draft reads next), feed the exit
  controller (specexit.exit_control, the same one the PyTorch engine uses) with the tokens this step
  emitted and, on exit, rewrite the request's row of ``sampled_token_ids``: keep the tokens up to the
  boundary and put the think-end token right after it.  To vLLM this looks exactly like a draft
  rejected at that position with the think-end token as the recovered token, so the scheduler rolls
  back its KV bookkeeping, the drafter continues from the think-end token and nothing else changes.
  When the boundary is the step's last token (the bonus / recovered token) there is no slot left in
  the row: the think-end token then replaces the first token of the request's next step.

Requests without ``extra_args["specexit"]`` are untouched (their rows are never read), unless the
environment variable ``SPECEXIT_VLLM_DEFAULT_SETTINGS`` (JSON) gives settings for them.

A request whose settings are refused is never failed here (that would take the engine down): it runs
without early exit, gets an ``"error"`` telemetry event (the offline backend raises it to its caller)
and a warning in vLLM's log naming the request id, its tag and the error (what a ``vllm serve`` user
sees; docs/serving.md).
"""

from __future__ import annotations

import functools
import json
import os
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import torch

from ..errors import SpecExitError
from ..exit_control import ExitController
from ..signals import activate_rows
from ..span import SpanMarkers
from .config import DEFAULT_SETTINGS_ENV, EXTRA_ARGS_KEY, RequestExitSettings, parse_request_settings

_PLACEHOLDER = -1  # vLLM's PLACEHOLDER_TOKEN_ID for rejected positions
_lock = threading.Lock()
_installed = False


def _logger():
    """vLLM's logger (its handlers and format; a name under "vllm." so that vLLM's config applies)."""
    try:
        from vllm.logger import init_logger
    except ImportError:  # not inside vLLM (a unit test): the standard logger
        import logging

        return logging.getLogger(f"vllm.{__name__}")
    return init_logger(f"vllm.{__name__}")


def _raw_tag(raw: Any) -> str | None:
    """The ``tag`` of request settings that failed validation (a dict, or one as a JSON string)."""
    if isinstance(raw, str):
        try:
            raw = json.loads(raw)
        except ValueError:
            return None
    tag = raw.get("tag") if isinstance(raw, dict) else None
    return tag if isinstance(tag, str) else None


def install() -> None:
    """Wrap GPUModelRunner.sample_tokens / _sample once per process."""
    global _installed
    with _lock:
        if _installed:
            return
        from vllm.v1.worker.gpu_model_runner import GPUModelRunner

        orig_sample_tokens = GPUModelRunner.sample_tokens
        orig_sample = GPUModelRunner._sample

        @functools.wraps(orig_sample_tokens)
        def sample_tokens(self, grammar_output):
            state = _runner_state(self)
            if state is not None and self.execute_model_state is not None:
                state.begin_step(self.execute_model_state)
            try:
                return orig_sample_tokens(self, grammar_output)
            finally:
                if state is not None:
                    state.end_step()

        @functools.wraps(orig_sample)
        def _sample(self, logits, spec_decode_metadata):
            out = orig_sample(self, logits, spec_decode_metadata)
            state = _runner_state(self)
            if state is not None and state.step is not None:
                state.after_sample(self, out)
            return out

        GPUModelRunner.sample_tokens = sample_tokens
        GPUModelRunner._sample = _sample
        _installed = True


def _runner_state(runner) -> RunnerState | None:
    state = runner.__dict__.get("_specexit_state", False)
    if state is False:
        from .model import SpecExitEagle3LlamaForCausalLM

        model = getattr(getattr(runner, "drafter", None), "model", None)
        state = RunnerState(runner, model) if isinstance(model, SpecExitEagle3LlamaForCausalLM) else None
        if getattr(runner, "drafter", None) is not None and getattr(runner.drafter, "model", None) is not None:
            runner.__dict__["_specexit_state"] = state  # cache once the drafter is loaded
    return state


@dataclass
class _Step:
    scheduler_output: Any
    aux_hidden_states: list[torch.Tensor] | None


@dataclass
class _Request:
    settings: RequestExitSettings | None
    control: ExitController | None
    error: str | None = None
    pending_force: bool = False  # put the think-end token first in the next step
    forced: str | None = None  # "in_step" | "next_step"
    generated: int = 0
    rounds: int = 0
    signal_rounds: int = 0
    trace: list[dict] = field(default_factory=list)
    closed: bool = False  # stopped: no more exit checks, telemetry already written
    tag: str | None = None  # the request's tag where its settings were refused (settings is None then)


class RunnerState:
    """SpecExit state of one model runner: the exit controller of each active request, and telemetry."""

    def __init__(self, runner, model) -> None:
        self.model = model
        self.signals: list[str] = list(model.signals)
        self.requests: dict[str, _Request] = {}
        self.step: _Step | None = None
        self.telemetry_path = os.environ.get("SPECEXIT_VLLM_TELEMETRY")
        # settings for requests that carry no extra_args["specexit"] (e.g. every request of a `vllm serve`
        # started by `specexit serve --backend vllm`); a request opts out with {"enabled": false}
        self.default_settings = json.loads(os.environ.get(DEFAULT_SETTINGS_ENV) or "null")
        self.records: list[dict] = []  # also kept in memory (in-process executors, tests)
        self._tokenizer = None
        self._runner_cfg = runner.model_config
        self.timing = {"steps": 0, "seconds": 0.0}

    # -- plumbing --------------------------------------------------------------------------------
    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            cfg = self._runner_cfg
            self._tokenizer = AutoTokenizer.from_pretrained(
                cfg.tokenizer, trust_remote_code=bool(getattr(cfg, "trust_remote_code", False))
            )
        return self._tokenizer

    def begin_step(self, execute_model_state) -> None:
        so = execute_model_state.scheduler_output
        for rid in getattr(so, "finished_req_ids", ()) or ():
            req = self.requests.pop(rid, None)
            if req is not None and not req.closed:
                self._emit(rid, req, "finished")
        self.step = _Step(so, execute_model_state.aux_hidden_states)

    def end_step(self) -> None:
        self.step = None

    def _new_request(self, rid: str, cached) -> _Request:
        raw = (cached.sampling_params.extra_args or {}).get(EXTRA_ARGS_KEY, self.default_settings)
        try:
            settings = parse_request_settings(raw, self.signals)
            cfg = settings.config
            markers = SpanMarkers.from_tokenizer(self.tokenizer, cfg.think_start, cfg.think_end)
            if markers.think_end_id is None:
                raise SpecExitError(f"the tokenizer has no {cfg.think_end!r} token: cannot end the thinking span")
            sp = cached.sampling_params
            control = ExitController(
                cfg,
                self.tokenizer,
                list(cached.prompt_token_ids or []),
                markers,
                self.signals,
                enabled=settings.enabled,
                stop_ids=set(getattr(sp, "all_stop_token_ids", ()) or ()),
            )
            return _Request(settings, control)
        except (SpecExitError, ValueError, TypeError) as e:  # never take the engine down for a bad request
            tag = _raw_tag(raw)
            req = _Request(None, None, error=f"{type(e).__name__}: {e}", tag=tag)
            # the caller of `vllm serve` sees only the server log (no telemetry file is read there)
            _logger().warning(
                "SpecExit: request %s (tag %s): specexit settings refused, the request runs without early exit: %s",
                rid, tag, req.error,
            )  # fmt: skip
            self._emit(rid, req, "error")
            return req

    # -- the per-step work ------------------------------------------------------------------------
    def after_sample(self, runner, sampler_output) -> None:
        t0 = time.perf_counter()
        batch = runner.input_batch
        req_ids = list(batch.req_ids)
        active: list[tuple[int, str, _Request, Any]] = []
        for i, rid in enumerate(req_ids):
            cached = runner.requests.get(rid)
            if cached is None or cached.sampling_params is None:
                continue
            req = self.requests.get(rid)
            if req is None:
                if not (cached.sampling_params.extra_args or {}).get(EXTRA_ARGS_KEY) and self.default_settings is None:
                    continue
                req = self.requests[rid] = self._new_request(rid, cached)
            if req.control is not None and not req.closed:
                active.append((i, rid, req, cached))
        if not active:
            return

        sampled = sampler_output.sampled_token_ids
        rows = sampled.tolist()  # one device->host copy per step, only when a SpecExit request is present
        width = sampled.shape[1]
        discard = runner.discard_request_mask.np[: len(req_ids)]
        so = self.step.scheduler_output
        starts, pos = {}, 0
        for rid in req_ids:
            starts[rid] = pos
            pos += int(so.num_scheduled_tokens.get(rid, 0))

        # exit-signal logits of every scheduled position, in one small matmul: [T, 3H] @ [3H, k]
        sig_all = None
        w = self.model.signal_weight
        aux = self.step.aux_hidden_states
        if w is not None and aux:
            with torch.no_grad():
                hid = torch.cat([h[:pos] for h in aux], dim=-1)
                sig_all = (hid.float() @ w.float().T).cpu()

        rewrites: dict[int, list[int]] = {}
        for i, rid, req, cached in active:
            if discard[i]:
                continue  # a partial prefill chunk: nothing was sampled
            toks = [t for t in rows[i] if t != _PLACEHOLDER]
            if not toks:
                continue
            control = req.control
            req.rounds += 1
            end_id = control.markers.think_end_id
            if req.pending_force:
                req.pending_force = False
                rewrites[i] = [end_id] + [_PLACEHOLDER] * (width - 1)
                control.observe([end_id])
                req.generated += 1
                continue
            # a decode step: the request's scheduled positions are [last token, drafts...]; the first
            # len(toks) of them are now committed, and their target hidden states are the ones the
            # draft reads next.  A prefill (or a recompute after preemption) carries no signal.
            n_out = len(cached.output_token_ids)
            decoding = n_out > 0 and cached.num_computed_tokens + 1 >= cached.num_prompt_tokens + n_out
            states = None
            if decoding and sig_all is not None and control.wants_signals and control.in_thinking:
                # the states after [the previous step's last token, each accepted draft]
                states = activate_rows(sig_all[starts[rid] : starts[rid] + len(toks)], self.signals)
                req.signal_rounds += 1
                if req.settings.history:  # output index of the first position read, how many, their mean
                    raw = {name: float(v.mean()) for name, v in states.items()}
                    req.trace.append({"start": req.generated - 1, "n": len(toks), "raw": raw})
            sp = cached.sampling_params
            room = (sp.max_tokens - req.generated) if sp.max_tokens is not None else len(toks)
            decision = control.round(toks, states, room)
            visible = decision.visible
            if decision.exit:
                keep = decision.keep
                if keep <= len(toks) - 1:  # the boundary is an accepted draft: cut inside this step
                    rewrites[i] = [*toks[:keep], end_id] + [_PLACEHOLDER] * (width - keep - 1)
                    req.forced = "in_step"
                    req.generated += keep + 1
                else:  # the boundary is the step's last token: think-end opens the next step
                    req.pending_force = True
                    req.forced = "next_step"
                    req.generated += len(toks)
                self._emit(rid, req, "exit")
            else:
                req.generated += len(toks)
            capped = sp.max_tokens is not None and req.generated >= sp.max_tokens
            if (visible and visible[-1] in control.stop_ids) or capped:
                # vLLM stops the request after this step; keep a closed entry (not a fresh policy) in
                # case it still runs (e.g. min_tokens), until finished_req_ids drops it
                req.closed = True
                self._emit(rid, req, "finished")
        if rewrites:  # in place: vLLM's bookkeeping, scheduler and drafter all read this tensor next
            sampled.copy_(sampled.new_tensor([rewrites.get(i, r) for i, r in enumerate(rows)]))
        self.timing["steps"] += 1
        self.timing["seconds"] += time.perf_counter() - t0

    # -- telemetry --------------------------------------------------------------------------------
    def _emit(self, rid: str, req: _Request, event: str) -> None:
        control = req.control
        rec: dict[str, Any] = {
            "event": event,
            "request_id": rid,
            "tag": req.settings.tag if req.settings else req.tag,  # the backend matches the error by it
            "error": req.error,
            "exited": bool(control and control.record),
            "forced": req.forced,
            "exit": control.exit_dict() if control else None,
            "rounds": req.rounds,
            "signal_rounds": req.signal_rounds,
            "thinking_tokens": control.thinking_tokens if control else None,
            "new_tokens": control.new_tokens if control else None,
            "hook_seconds_total": round(self.timing["seconds"], 6),
            "pid": os.getpid(),
        }
        if req.settings and req.settings.history and control:
            rec["signal_history"] = control.history_dicts()
            rec["trace"] = req.trace
        self.records.append(rec)
        if self.telemetry_path:
            with open(self.telemetry_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")
