"""The whole training pipeline, stage by stage, every stage resumable, in one output folder:

OUT/traces.jsonl      the target's own outputs            (stage: traces)
OUT/labels.jsonl      exit-signal labels and probes        (stage: labels)
OUT/vocab.json        draft vocabulary                     (stage: vocab)
OUT/hidden/           float16 target features (offline)    (stage: hidden, optional)
OUT/checkpoints/      trainer checkpoints                  (stage: draft)
OUT/metrics.jsonl     loss curve and validation metrics
OUT/draft/            the trained SpecExit draft           -> specexit generate --draft OUT/draft
OUT/pipeline.json     every stage's runs, appended (below); `train all` adds labels, vocab, train, config

Each stage appends one record per run to ``pipeline.json["stages"][STAGE]``, whichever command ran it
(`specexit train traces|labels|vocab|hidden|draft|all`): its start time (UTC), wall seconds, what it did
(new traces / labels / feature examples / training steps, or the vocabulary size) and
``resumed_noop: true`` when a resume found nothing left to do, so the time of the run that did the work
is never overwritten by that of a resumed no-op.  ``pipeline.json["timings"]`` (written by `train all`)
is the wall seconds of each stage summed over all its recorded runs.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import torch

from ..draft import Eagle3Draft, init_draft
from ..engine import SpecExitGenerator
from ..errors import ConfigError
from ..exit_policy import SIGNAL_NAMES
from ..jsonl import DataError
from ..prompts import load_prompts
from .data import OfflineFeatures, OnlineFeatures, build_examples, extract_hidden
from .labels import LabelConfig, load_labels, make_labels
from .shards import done_keys
from .traces import TraceConfig, generate_traces, load_traces, trace_key
from .trainer import TrainConfig, Trainer, split_examples
from .vocab import choose_vocab, count_tokens, load_vocab, save_vocab

# -- pipeline.json: one record per stage run, appended -------------------------------------------------
# what `train all` wrote before stage records existed: its timings become one earlier run per stage
_LEGACY_TIMINGS = {"traces_s": "traces", "labels_s": "labels", "vocab_hidden_s": "vocab", "train_s": "draft"}


def _read_report(out: Path) -> dict:
    try:
        report = json.loads((out / "pipeline.json").read_text())
    except (OSError, ValueError):
        return {}
    return report if isinstance(report, dict) else {}


def _write_report(out: Path, report: dict) -> None:
    tmp = out / f"pipeline.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(report, indent=2) + "\n")
    os.replace(tmp, out / "pipeline.json")


def _append_stage_run(out: Path, stage: str, record: dict) -> None:
    report = _read_report(out)
    stages = report.setdefault("stages", {})
    if not stages and isinstance(report.get("timings"), dict):  # a pipeline.json of an older version
        for key, name in _LEGACY_TIMINGS.items():
            if key in report["timings"]:
                stages[name] = [{"wall_s": report["timings"][key], "from": "timings of an earlier pipeline.json"}]
    stages.setdefault(stage, []).append(record)
    _write_report(out, report)


@contextmanager
def _stage_run(out, stage: str, count=None, unit: str | None = None):
    """Time one run of ``stage`` and append its record to OUT/pipeline.json (rank 0 of a torchrun only).
    ``count()``: how many ``unit`` are done (called before and after: the difference is what this run
    did); the stage may add fields to the yielded record.  A run that fails is recorded with ``error``."""
    out = Path(out)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    record: dict = {"started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    before = count() if count is not None and rank0 else None
    t0 = time.perf_counter()
    error = None
    try:
        yield record
    except BaseException as e:
        error = type(e).__name__
        raise
    finally:
        record["wall_s"] = round(time.perf_counter() - t0, 3)
        if before is not None:
            try:
                new = max(0, count() - before)
            except Exception:  # the stage failed half-way through writing: the count is unknown
                new = None
            record[f"new_{unit}"] = new
            if error is None:
                record["resumed_noop"] = new == 0
        if error is not None:
            record["error"] = error
        # a refused run (the folder was never made) leaves nothing behind
        if rank0 and (out.is_dir() or error is None):
            out.mkdir(parents=True, exist_ok=True)
            _append_stage_run(out, stage, record)


def _done_count(path: Path) -> int:
    return len(done_keys(path, trace_key))


def _hidden_count(out: Path) -> int:
    try:
        return len(json.loads((out / "hidden" / "index.json").read_text())["examples"])
    except (OSError, ValueError, KeyError):
        return 0


def _checkpoint_step(out: Path) -> int:
    steps = [int(p.name[5:]) for p in (out / "checkpoints").glob("step_*") if (p / "state.pt").is_file()]
    return max(steps, default=0)


def stage_timings(out: str | Path) -> dict[str, float]:
    """``timings`` of pipeline.json: wall seconds of each stage summed over its recorded runs."""
    stages = _read_report(Path(out)).get("stages", {})

    def total(*names: str) -> float:
        return round(sum(r.get("wall_s", 0.0) for n in names for r in stages.get(n, [])), 2)

    return {"traces_s": total("traces"), "labels_s": total("labels"), "vocab_hidden_s": total("vocab", "hidden"),
            "train_s": total("draft")}  # fmt: skip


# -- checks before a stage runs: what it reads from OUT, its option conflicts ------------------------------
STAGE_INPUTS = {"labels": ("traces.jsonl",), "vocab": ("traces.jsonl",), "hidden": ("traces.jsonl", "vocab.json"),
                "draft": ("traces.jsonl", "vocab.json")}  # fmt: skip
WRITTEN_BY = {"traces.jsonl": "traces", "vocab.json": "vocab", "hidden": "hidden"}


def check_stage_inputs(stage: str, out: str | Path, features: str = "online", init: str | Path | None = None) -> None:
    """DataError unless OUT holds what ``stage`` reads (checked before the stage loads or writes anything)."""
    out = Path(out)
    need = list(STAGE_INPUTS.get(stage, ()))
    if stage == "draft" and init is not None:  # the --init draft brings its own vocabulary
        need.remove("vocab.json")
    if stage == "draft" and features == "offline":
        need.append("hidden")
    missing = [n for n in need if not (out / n).exists()]
    if missing:
        run = ", ".join(f"`specexit train {WRITTEN_BY[n]}`" for n in missing)
        raise DataError(f"--out {out} has no {', '.join(missing)}: run {run} first (same --out)")


def check_draft_args(cfg: TrainConfig, init: str | Path | None) -> None:
    """The draft stage's option conflicts (checked again before a whole pipeline starts)."""
    if cfg.draft_intermediate is not None and init is not None:
        raise ConfigError("--draft-intermediate sizes a new draft; it cannot resize the --init draft")
    if cfg.freeze_token_head and init is None:
        raise ConfigError("--freeze-token-head trains only the signal rows: give a trained draft with --init")


# -- the stages ---------------------------------------------------------------------------------------
def stage_traces(gen: SpecExitGenerator, prompts_file, out: Path, cfg: TraceConfig, progress=True) -> Path:
    path = Path(out) / "traces.jsonl"
    with _stage_run(out, "traces", lambda: _done_count(path), "traces") as record:
        # how the traces were sampled: later stages (calibrate) need the temperature they stand for
        record["sampling"] = {
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "max_new_tokens": cfg.max_new_tokens,
            "enable_thinking": cfg.enable_thinking,
        }
        return generate_traces(gen, load_prompts(prompts_file), path, cfg, progress)


def stage_labels(gen: SpecExitGenerator, out: Path, cfg: LabelConfig, progress=True) -> dict:
    path = Path(out) / "labels.jsonl"
    with _stage_run(out, "labels", lambda: _done_count(path), "labels") as record:
        stats = make_labels(gen, Path(out) / "traces.jsonl", path, cfg, progress)
        record["stats"] = stats
        return stats


def stage_vocab(gen: SpecExitGenerator, out: Path, size: int) -> list[int]:
    with _stage_run(out, "vocab") as record:  # recomputed from the traces on every run (no resume)
        out = Path(out)
        traces = [tr for _, tr in load_traces(out / "traces.jsonl")]
        counts = count_tokens(traces)
        always = [*sorted(gen.stop_ids), *gen.exit_ids, gen.think_start_id]
        used = choose_vocab(counts, size, gen.target.vocab_size, always)
        save_vocab(out / "vocab.json", used, counts)
        record.update(traces=len(traces), draft_vocab=len(used))
        return used


def _examples(out: Path, max_len: int, confirm: int = 0):
    traces = load_traces(out / "traces.jsonl")
    labels = load_labels(out / "labels.jsonl") if (out / "labels.jsonl").exists() else {}
    return build_examples(traces, labels, max_len, confirm)


def stage_hidden(gen: SpecExitGenerator, out: Path, max_len: int, progress=True) -> Path:
    out = Path(out)
    with _stage_run(out, "hidden", lambda: _hidden_count(out), "examples"):
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
    check_draft_args(cfg, init)
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
    # timed from here: the checks and the draft set-up above are quick, and a failed check is no run
    with _stage_run(out, "draft", lambda: _checkpoint_step(Path(out)), "steps") as record:
        summary = trainer.train()
        record.update(steps=summary.get("steps"), resumed=summary.get("resumed"))
        return summary


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
    check_draft_args(train_cfg, init)
    load_prompts(prompts_file)  # a bad prompt file fails before OUT is made
    out.mkdir(parents=True, exist_ok=True)
    # each stage appends its own run to pipeline.json["stages"] (see the module docstring)
    stage_traces(gen, prompts_file, out, trace_cfg, progress)
    label_stats = stage_labels(gen, out, label_cfg, progress)
    used = stage_vocab(gen, out, draft_vocab)
    if features == "offline":
        stage_hidden(gen, out, train_cfg.max_len, progress)
    summary = stage_draft(gen, out, train_cfg, features=features, init=init, signals=signals, progress=progress)
    report = _read_report(out)  # keeps "stages" (every run of every stage so far)
    report.update(
        labels=label_stats,
        draft_vocab=len(used),
        timings=stage_timings(out),  # summed over the recorded runs: a resumed no-op adds, never replaces
        train=summary,
        config={"traces": asdict(trace_cfg), "labels": asdict(label_cfg), "train": asdict(train_cfg)},
    )
    _write_report(out, report)
    return report
