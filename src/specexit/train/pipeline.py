"""The whole training pipeline, stage by stage, every stage resumable, in one output folder:

OUT/traces.jsonl      the target's own outputs            (stage: traces)
OUT/labels.jsonl      exit-signal labels and probes        (stage: labels)
OUT/vocab.json        draft vocabulary                     (stage: vocab)
OUT/hidden/           float16 target features (offline)    (stage: hidden, optional)
OUT/checkpoints/      trainer checkpoints                  (stage: draft)
OUT/metrics.jsonl     loss curve and validation metrics
OUT/draft/            the trained SpecExit draft           -> specexit generate --draft OUT/draft
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from ..draft import Eagle3Draft, init_draft
from ..engine import SpecExitGenerator
from ..errors import ConfigError
from ..exit_policy import SIGNAL_NAMES
from ..prompts import load_prompts
from .data import OfflineFeatures, OnlineFeatures, build_examples, extract_hidden
from .labels import LabelConfig, load_labels, make_labels
from .traces import TraceConfig, generate_traces, load_traces
from .trainer import TrainConfig, Trainer, split_examples
from .vocab import choose_vocab, count_tokens, load_vocab, save_vocab


def stage_traces(gen: SpecExitGenerator, prompts_file, out: Path, cfg: TraceConfig, progress=True) -> Path:
    return generate_traces(gen, load_prompts(prompts_file), out / "traces.jsonl", cfg, progress)


def stage_labels(gen: SpecExitGenerator, out: Path, cfg: LabelConfig, progress=True) -> dict:
    return make_labels(gen, out / "traces.jsonl", out / "labels.jsonl", cfg, progress)


def stage_vocab(gen: SpecExitGenerator, out: Path, size: int) -> list[int]:
    traces = [tr for _, tr in load_traces(out / "traces.jsonl")]
    counts = count_tokens(traces)
    always = [*sorted(gen.stop_ids), *gen.exit_ids, gen.think_start_id]
    used = choose_vocab(counts, size, gen.target.vocab_size, always)
    save_vocab(out / "vocab.json", used, counts)
    return used


def _examples(out: Path, max_len: int, confirm: int = 0):
    traces = load_traces(out / "traces.jsonl")
    labels = load_labels(out / "labels.jsonl") if (out / "labels.jsonl").exists() else {}
    return build_examples(traces, labels, max_len, confirm)


def stage_hidden(gen: SpecExitGenerator, out: Path, max_len: int, progress=True) -> Path:
    used = torch.tensor(load_vocab(out / "vocab.json"))
    return extract_hidden(gen.target, _examples(out, max_len), out / "hidden", used, progress=progress)


def stage_draft(
    gen: SpecExitGenerator,
    out: Path,
    cfg: TrainConfig,
    features: str = "online",
    init: str | Path | None = None,
    signals: list[str] | None = None,
    progress=True,
) -> dict:
    """Train (or resume training) the draft.  ``init``: an existing SpecExit draft folder to start
    from (e.g. ``specexit convert`` output of a public EAGLE-3 head); default: a draft initialised
    from the target (logit lens) over the vocabulary of stage ``vocab``."""
    target = gen.target
    signals = list(SIGNAL_NAMES if signals is None else signals)
    if cfg.draft_intermediate is not None and init is not None:
        raise ConfigError("--draft-intermediate sizes a new draft; it cannot resize the --init draft")
    if cfg.freeze_token_head and init is None:
        raise ConfigError("--freeze-token-head trains only the signal rows: give a trained draft with --init")
    if init is not None:
        draft = Eagle3Draft.from_pretrained(init, target=target, signals=signals)
    else:
        draft = init_draft(
            target,
            signals=signals,
            used_ids=load_vocab(out / "vocab.json"),
            seed=cfg.seed,
            intermediate_size=cfg.draft_intermediate,
        )
    draft = draft.float()
    examples = _examples(out, cfg.max_len, cfg.confidence_confirm)
    train_ex, val_ex = split_examples(examples, cfg.val_fraction)
    if features == "online":
        feats = OnlineFeatures(target, draft.draft_to_target)
    elif features == "offline":
        feats = OfflineFeatures(out / "hidden")
        if feats.head.shape[0] != draft.cfg.draft_vocab_size:
            raise ConfigError(f"{out / 'hidden'} was extracted for another draft vocabulary; rerun the hidden stage")
    else:
        raise ConfigError(f"features must be 'online' or 'offline', got {features!r}")
    trainer = Trainer(draft, train_ex, val_ex, feats, cfg, out, target=target, progress=progress)
    return trainer.train()


def run_all(
    gen: SpecExitGenerator,
    prompts_file,
    out: str | Path,
    trace_cfg: TraceConfig,
    label_cfg: LabelConfig,
    train_cfg: TrainConfig,
    draft_vocab: int = 32000,
    features: str = "online",
    progress=True,
    signals: list[str] | None = None,
    init: str | Path | None = None,
) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    timings = {}
    t = time.perf_counter()
    stage_traces(gen, prompts_file, out, trace_cfg, progress)
    timings["traces_s"] = time.perf_counter() - t
    t = time.perf_counter()
    label_stats = stage_labels(gen, out, label_cfg, progress)
    timings["labels_s"] = time.perf_counter() - t
    t = time.perf_counter()
    used = stage_vocab(gen, out, draft_vocab)
    if features == "offline":
        stage_hidden(gen, out, train_cfg.max_len, progress)
    timings["vocab_hidden_s"] = time.perf_counter() - t
    t = time.perf_counter()
    summary = stage_draft(gen, out, train_cfg, features=features, init=init, signals=signals, progress=progress)
    timings["train_s"] = time.perf_counter() - t
    report = {
        "labels": label_stats,
        "draft_vocab": len(used),
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "train": summary,
        "config": {"traces": asdict(trace_cfg), "labels": asdict(label_cfg), "train": asdict(train_cfg)},
    }
    (out / "pipeline.json").write_text(json.dumps(report, indent=2) + "\n")
    return report
