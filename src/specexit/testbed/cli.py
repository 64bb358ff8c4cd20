"""``specexit testbed data | train | eval``: build and measure the testbed "overthinker" model.

Wire into the main CLI with ``register(subparsers)``; the parser it adds dispatches through
``args.testbed_handler`` (or call ``run(args)``).  ``python -m specexit.testbed.cli testbed ...`` is the same as
``specexit testbed ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def default_dir() -> Path:
    """``<cache>/testbed``: where ``train`` writes and ``eval`` reads by default."""
    from ..zoo import cache_dir

    return cache_dir() / "testbed"


def _positive(text: str) -> int:
    v = int(text)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return v


def register(subparsers) -> argparse.ArgumentParser:
    """Add the ``testbed`` command (with ``data``, ``train``, ``eval``) to an argparse subparsers object."""
    tb = subparsers.add_parser("testbed", help="the synthetic 'overthinker' reasoning model: data, training, eval")
    sub = tb.add_subparsers(dest="testbed_cmd", required=True)

    d = sub.add_parser("data", help="write problems (prompt-file JSONL) or full training traces")
    d.add_argument("--out", required=True, help="JSONL file to write")
    d.add_argument("--n", type=_positive, default=500)
    d.add_argument("--split", choices=["train", "test"], default="test")
    d.add_argument("--seed", type=int, default=0, help="data seed (0..99): selects a disjoint block of problems")
    d.add_argument("--traces", action="store_true", help="write training traces (train split) instead of prompts")

    t = sub.add_parser("train", help="train the testbed model (resumes an interrupted run in --out)")
    t.add_argument("--out", default=None, help="output folder (default: <cache>/testbed)")
    t.add_argument("--preset", choices=["smoke", "dev", "full"], default="full")
    t.add_argument("--fresh", action="store_true", help="ignore an existing checkpoint and start over")
    t.add_argument("--threads", type=_positive, default=1, help="torch threads (default 1)")
    t.add_argument("--stop-after", type=_positive, default=None, help="stop (with a checkpoint) after this step")
    t.add_argument("--no-progress", action="store_true")
    for name, typ in (
        ("n-examples", int),
        ("epochs", float),
        ("batch-size", int),
        ("lr", float),
        ("warmup-steps", int),
        ("hidden", int),
        ("layers", int),
        ("heads", int),
        ("kv-heads", int),
        ("intermediate", int),
        ("seed", int),
        ("data-seed", int),
        ("p-no-thinking", float),
        ("p-drill", float),
        ("p-slip", float),
        ("p-forced-exit", float),
        ("checkpoint-every", int),
    ):
        t.add_argument(f"--{name}", type=typ, default=None, help="override the preset")
    t.add_argument(
        "--forced-exit-cuts",
        choices=["pass", "boundary"],
        default=None,
        help="where forced-exit examples cut the thinking: pass ends only (v2, the shipped testbed) or any "
        "paragraph break, answering with the last completed pass (override the preset)",
    )
    t.add_argument("--no-bf16", action="store_true", help="train in float32 (default: bfloat16 autocast)")

    e = sub.add_parser("eval", help="accuracy with/without thinking, re-checks, forced-exit probes")
    e.add_argument("--model", default=None, help="model folder (default: <cache>/testbed)")
    e.add_argument("--n", type=_positive, default=200, help="held-out test problems")
    e.add_argument("--seed", type=int, default=0, help="data seed of the test problems")
    e.add_argument("--temperature", type=float, default=0.6)
    e.add_argument("--max-new-tokens", type=_positive, default=768)
    e.add_argument("--batch-size", type=_positive, default=32)
    e.add_argument("--samples", type=_positive, default=2, help="samples per problem at temperature > 0")
    e.add_argument("--no-probe", action="store_true", help="skip the forced-exit probes")
    e.add_argument("--threads", type=_positive, default=1)
    e.add_argument("--json", action="store_true", help="print the full report as JSON")
    e.add_argument("--report", default=None, help="also write the JSON report to this file")
    tb.set_defaults(testbed_handler=run)
    return tb


def _cmd_data(a) -> int:
    from .problems import make_problems, training_traces, write_jsonl

    if a.traces:
        out = Path(a.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        with out.open("w", encoding="utf-8") as f:
            for tr in training_traces(a.n, a.seed):
                f.write(json.dumps(tr.to_dict(), ensure_ascii=False) + "\n")
    else:
        make_problems(1, a.seed, a.split)  # validate the arguments before creating a file
        out = write_jsonl(a.out, a.n, a.seed, a.split)
    print(f"wrote {a.n} {'traces' if a.traces else a.split + ' problems'} to {out}")
    return 0


def _cmd_train(a) -> int:
    from .train import make_config, train

    overrides = {
        k: getattr(a, k)
        for k in (
            "n_examples",
            "epochs",
            "batch_size",
            "lr",
            "warmup_steps",
            "hidden",
            "layers",
            "heads",
            "kv_heads",
            "intermediate",
            "seed",
            "data_seed",
            "p_no_thinking",
            "p_drill",
            "p_slip",
            "p_forced_exit",
            "forced_exit_cuts",
            "checkpoint_every",
        )
    }
    if a.no_bf16:
        overrides["bf16"] = False
    cfg = make_config(a.preset, **overrides)
    out = Path(a.out) if a.out else default_dir()
    r = train(cfg, out, resume=not a.fresh, progress=not a.no_progress, stop_after=a.stop_after, threads=a.threads)
    state = "finished" if r.finished else f"stopped at step {r.step}/{cfg.steps} (run again to resume)"
    print(f"{state}: {r.tokens_per_s:.0f} tokens/s over {r.wall_s:.0f} s of training")
    print(out)
    return 0


def _cmd_eval(a) -> int:
    import torch

    from .evaluate import EvalConfig, evaluate, format_report

    torch.set_num_threads(a.threads)
    cfg = EvalConfig(
        n=a.n,
        seed=a.seed,
        temperature=a.temperature,
        max_new_tokens=a.max_new_tokens,
        batch_size=a.batch_size,
        samples=a.samples,
        probe=not a.no_probe,
    )
    report = evaluate(a.model or default_dir(), cfg, progress=not a.json)
    if a.report:
        Path(a.report).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report) if a.json else format_report(report))
    return 0


def run(a) -> int:
    """Dispatch a parsed ``testbed`` command; SpecExitError propagates (the main CLI prints it)."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    return {"data": _cmd_data, "train": _cmd_train, "eval": _cmd_eval}[a.testbed_cmd](a)


if __name__ == "__main__":  # the main CLI: same parser, same error handling
    from ..cli import main

    sys.exit(main())
