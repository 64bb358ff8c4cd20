"""``specexit train traces | labels | vocab | hidden | draft | all`` (each stage resumable)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from ..answer_trigger import add_answer_trigger_args, answer_trigger_kwargs
from ..cli_options import (
    OptionError,
    add_think_args,
    check_at_least,
    check_dtypes,
    check_out_dir,
    flag_of,
    sampling_from_args,
    split_list,
)
from ..signals import SIGNAL_NAMES


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--target", required=True, help="HF folder of the target model")
    p.add_argument("--out", required=True, help="pipeline folder (every stage reads and writes here)")
    add_think_args(p)
    add_answer_trigger_args(p)
    p.add_argument("--dtype", default="float32", help="target precision")
    p.add_argument("--no-progress", action="store_true")


def _trace_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--prompts", required=True, help="JSONL: one {'question': ..., 'answer': ...} per line")
    p.add_argument("--max-new-tokens", type=int, default=1024, help="trace length cap")
    p.add_argument("--temperature", type=float, default=0.6)
    p.add_argument("--top-p", type=float, default=0.95)
    p.add_argument("--samples", type=int, default=1, help="traces per prompt")
    p.add_argument("--backend", choices=["hf", "engine", "vllm"], default="hf",
                   help="hf: batched generate; engine: ours; vllm: vLLM batching (docs/vllm.md)")  # fmt: skip
    p.add_argument("--batch-size", type=int, default=8, help="traces generated together (hf and vllm backends)")
    p.add_argument("--system", default=None, help="system prompt")
    p.add_argument("--no-thinking", action="store_true",
                   help="enable_thinking=False in the chat template (a nothink baseline's outputs)")  # fmt: skip
    p.add_argument("--seed", type=int, default=0)


def _label_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--probe-tokens", type=int, default=24, help="cap on each confidence probe's answer")
    p.add_argument("--connectors", default="", help="connector words that also mark boundaries, e.g. Wait,So")
    p.add_argument("--label-reference", choices=["gold", "trace"], default="gold",
                   help="a probe is right if it equals the gold answer (where known) or the trace's own")  # fmt: skip


def _train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-steps", type=int, default=1000, help="training step cap")
    p.add_argument("--batch", type=int, default=4, help="sequences per step")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup-frac", type=float, default=0.1)
    p.add_argument("--ttt-steps", type=int, default=7, help="training-time-test unroll")
    p.add_argument("--max-len", type=int, default=2048, help="sequence length cap")
    p.add_argument("--ckpt-every", type=int, default=100)
    p.add_argument("--eval-every", type=int, default=200)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--confidence-fill", choices=["hold", "boundary"], default="hold")
    p.add_argument("--confidence-confirm", type=int, default=0,
                   help="a right probe is a positive label only if the thinking so far states its answer more "
                   "than N times (re-derived, e.g. by a re-check); 0: right is enough")  # fmt: skip
    p.add_argument("--loss-weighting", choices=["uncertainty", "fixed"], default="uncertainty")
    p.add_argument("--signals", default=",".join(SIGNAL_NAMES), help="exit signals the draft predicts")
    p.add_argument("--features", choices=["online", "offline"], default="online", help="target features source")
    p.add_argument("--init", default=None, help="start from this SpecExit draft (e.g. `specexit convert` output)")
    p.add_argument("--freeze-token-head", action="store_true", help="train only the signal rows (needs --init)")
    p.add_argument("--draft-vocab", type=int, default=32000, help="draft vocabulary size (capped at the target's)")
    p.add_argument("--draft-intermediate", type=int, default=None,
                   help="MLP width of a new draft (default: the target's; narrower: small enough to ship)")  # fmt: skip
    p.add_argument("--save-dtype", choices=["float32", "bfloat16", "float16"], default="float32",
                   help="precision of the final OUT/draft weights (checkpoints stay float32)")  # fmt: skip
    p.add_argument("--train-seed", type=int, default=0)


def register(sub) -> None:
    t = sub.add_parser("train", help="train a SpecExit draft: traces -> labels -> vocab -> (hidden) -> draft")
    tsub = t.add_subparsers(dest="train_cmd", required=True)
    p = tsub.add_parser("traces", help="generate the target's own outputs for a prompt file")
    _common(p)
    _trace_args(p)
    p = tsub.add_parser("labels", help="progress/remain/confidence labels (confidence by forced-answer probes)")
    _common(p)
    _label_args(p)
    p = tsub.add_parser("vocab", help="draft vocabulary from the traces' token frequencies")
    _common(p)
    p.add_argument("--draft-vocab", type=int, default=32000)
    p = tsub.add_parser("hidden", help="extract float16 target features for offline training")
    _common(p)
    p.add_argument("--max-len", type=int, default=2048)
    p = tsub.add_parser("draft", help="train the draft (token TTT loss + signal losses)")
    _common(p)
    _train_args(p)
    p = tsub.add_parser("all", help="the whole pipeline from a prompt file to OUT/draft")
    _common(p)
    _trace_args(p)
    _label_args(p)
    _train_args(p)


def _configs(a):
    from .labels import LabelConfig
    from .traces import TraceConfig
    from .trainer import TrainConfig

    trace = label = train = None
    if hasattr(a, "prompts"):
        trace = TraceConfig(
            max_new_tokens=a.max_new_tokens,
            temperature=a.temperature,
            top_p=a.top_p,
            samples=a.samples,
            seed=a.seed,
            backend=a.backend,
            batch_size=a.batch_size,
            system=a.system,
            enable_thinking=not a.no_thinking,
        )
    if hasattr(a, "probe_tokens"):
        label = LabelConfig(
            probe_tokens=a.probe_tokens,
            connectors=split_list(a.connectors),
            reference=a.label_reference,
        )
    if hasattr(a, "max_steps"):
        train = TrainConfig(
            ttt_steps=a.ttt_steps,
            lr=a.lr,
            warmup_frac=a.warmup_frac,
            max_steps=a.max_steps,
            batch_size=a.batch,
            max_len=a.max_len,
            ckpt_every=a.ckpt_every,
            eval_every=a.eval_every,
            val_fraction=a.val_fraction,
            seed=a.train_seed,
            confidence_fill=a.confidence_fill,
            confidence_confirm=a.confidence_confirm,
            freeze_token_head=a.freeze_token_head,
            loss_weighting=a.loss_weighting,
            draft_intermediate=a.draft_intermediate,
            save_dtype=a.save_dtype,
        )
    return trace, label, train


# options that must be >= 1 (those a stage has), >= 0, and in a range
_POSITIVE = ("max_new_tokens", "samples", "batch_size", "probe_tokens", "draft_vocab", "max_len", "max_steps",
             "batch", "ttt_steps", "ckpt_every", "eval_every", "draft_intermediate")  # fmt: skip
_RANGES = (("lr", lambda v: 0 < v < 1, "in (0, 1)"), ("warmup_frac", lambda v: 0 <= v < 1, "in [0, 1)"),
           ("val_fraction", lambda v: 0 <= v < 1, "in [0, 1)"))  # fmt: skip


def check_args(a, trace_cfg, label_cfg, train_cfg, signals: list[str]) -> None:
    """Every argument of a stage, the files it names and what the stage reads from --out, before anything
    loads or is written: a refused run leaves no --out folder behind."""
    from ..draft import check_draft_dir
    from ..prompts import load_prompts
    from ..target import check_target_dir
    from . import pipeline

    check_out_dir(a.out)
    check_dtypes(a)
    check_at_least(a, 1, *_POSITIVE)
    check_at_least(a, 0, "confidence_confirm")
    for dest, ok, what in _RANGES:
        value = getattr(a, dest, None)
        if value is not None and not ok(value):
            raise OptionError(f"{flag_of(dest)} must be {what}, got {value}")
    if hasattr(a, "temperature"):
        sampling_from_args(a)
    if getattr(a, "no_thinking", False) and a.train_cmd == "all":
        raise OptionError("--no-thinking: `train all` learns exit signals from thinking spans; use it with "
                          "`train traces` (a nothink baseline's outputs)")  # fmt: skip
    bad = [s for s in signals if s not in SIGNAL_NAMES]
    if bad:
        raise OptionError(f"--signals: unknown signal(s) {bad}; choose from {','.join(SIGNAL_NAMES)}")
    for cfg in (trace_cfg, label_cfg, train_cfg):  # the rest of each stage's settings
        if cfg is not None:
            cfg.validate()
    if train_cfg is not None:
        pipeline.check_draft_args(train_cfg, a.init)
        if a.init is not None:
            check_draft_dir(a.init)
    if getattr(a, "backend", None) == "vllm":
        from ..vllm_plugin.backend import require_vllm

        require_vllm()
    if hasattr(a, "prompts"):
        load_prompts(a.prompts)
    check_target_dir(a.target)
    if a.train_cmd not in ("traces", "all"):  # a later stage reads what earlier ones wrote to --out
        pipeline.check_stage_inputs(a.train_cmd, a.out, getattr(a, "features", "online"), getattr(a, "init", None))


def run(a) -> int:
    from ..engine import SpecExitGenerator
    from . import pipeline

    trace_cfg, label_cfg, train_cfg = _configs(a)
    signals = list(split_list(getattr(a, "signals", "")))
    check_args(a, trace_cfg, label_cfg, train_cfg, signals)
    gen = SpecExitGenerator.from_pretrained(
        a.target, None, dtype=a.dtype, think_start=a.think_start, think_end=a.think_end, **answer_trigger_kwargs(a)
    )
    out = Path(a.out)
    if a.train_cmd in ("traces", "all"):  # the first stage makes --out; the others found it (check_args)
        out.mkdir(parents=True, exist_ok=True)
    progress = not a.no_progress
    cmd = a.train_cmd
    if cmd == "traces":
        print(pipeline.stage_traces(gen, a.prompts, out, trace_cfg, progress))
    elif cmd == "labels":
        print(json.dumps(pipeline.stage_labels(gen, out, label_cfg, progress)))
    elif cmd == "vocab":
        used = pipeline.stage_vocab(gen, out, a.draft_vocab)
        print(f"draft vocabulary: {len(used)} tokens -> {out / 'vocab.json'}")
    elif cmd == "hidden":
        print(pipeline.stage_hidden(gen, out, a.max_len, progress))
    elif cmd == "draft":
        summary = pipeline.stage_draft(gen, out, train_cfg, a.features, a.init, signals, progress)
        print(json.dumps(summary, indent=2))
    else:
        report = pipeline.run_all(
            gen, a.prompts, out, trace_cfg, label_cfg, train_cfg, a.draft_vocab, a.features, progress, signals, a.init
        )
        print(json.dumps(report["train"], indent=2))
    return 0
