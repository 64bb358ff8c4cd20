"""Stage 2: exit-signal labels for every thinking position of every trace.

Definitions (documented in docs/training.md).  A trace's thinking span has L tokens; the thinking
token at index i (0-based) is the state after t = i + 1 thinking tokens:
  progress = t / L        remain = L - t        (the last thinking token: progress 1, remain 0)
Confidence comes from *probes*: at every semantic boundary (where the engine may exit) the think-end
marker is forced after the boundary and the target writes a short greedy answer.  The label is 1 if
that answer is correct (gold known) or equals the full trace's own final answer (no gold), else 0.
Positions between boundaries take the value of the last boundary ("hold"); before the first boundary
the label is 0 (no exit is possible there, and nothing has been derived yet).  The alternative
``boundary`` fill supervises confidence only at the boundary positions themselves.
With ``confirm = n`` (training option) a right probe counts only once the trace has *re-derived* its
answer: the thinking text up to the boundary must state it more than n times (``probe_mentions``).
The label then means "settled and checked", which a re-check can show and an unchecked pass cannot.

Probes are cheap: one forward over the trace fills the KV cache; then all probes of the trace decode
*together*, one forward per answer token, each probe row attending to its own prefix of the shared
cache and to its own earlier answer tokens (a tree-attention mask), instead of one decode per probe.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..boundaries import BoundaryDetector
from ..engine import SpecExitGenerator
from ..errors import ConfigError
from ..jsonl import DataError, iter_jsonl
from ..probe import answer_confidence, forced_answer
from ..scoring import answers_equal
from ..target import TargetModel
from . import shards
from .traces import load_traces, trace_key

FILL_MODES = ("hold", "boundary")
REFERENCES = ("gold", "trace")


@dataclass
class LabelConfig:
    probe_tokens: int = 24  # cap on each probe's answer
    connectors: tuple[str, ...] = ()
    paragraph_boundaries: bool = True
    fill: str = "hold"
    # what a probe's answer must equal: "gold" (the prompt's answer where known, else the trace's own) or
    # "trace" (the full trace's own final answer: "the answer is already settled here", the label for a
    # model too weak for its training prompts to be right often enough to learn from)
    reference: str = "gold"

    def validate(self) -> None:
        if self.fill not in FILL_MODES:
            raise ConfigError(f"confidence fill must be one of {FILL_MODES}, got {self.fill!r}")
        if self.reference not in REFERENCES:
            raise ConfigError(f"label reference must be one of {REFERENCES}, got {self.reference!r}")
        if self.probe_tokens <= 0:
            raise ConfigError(f"probe_tokens must be positive, got {self.probe_tokens}")


def boundary_cuts(detector: BoundaryDetector, thinking_ids: Sequence[int], context: str = "") -> list[int]:
    """Exit points inside a thinking span, as the number of thinking tokens an exit there keeps
    (a paragraph break is kept, a connector is not).  Sorted, unique, each in [1, L]."""
    detector.reset(context)
    cuts = sorted({b.keep for b in detector.scan(thinking_ids) if b.keep >= 1})
    return cuts


def confirmed(correct: Sequence[bool], mentions: Sequence[int], confirm: int) -> list[bool]:
    """Probe results that also need the answer re-derived: a cut stays positive only if the thinking
    text up to it states the (right) answer more than ``confirm`` times.  ``confirm = 0`` returns
    ``correct`` unchanged."""
    if confirm < 0:
        raise ConfigError(f"confidence confirm must be >= 0, got {confirm}")
    if confirm == 0:
        return list(correct)
    if len(correct) != len(mentions):
        raise ValueError("one mention count per probe result")
    return [bool(ok) and m > confirm for ok, m in zip(correct, mentions, strict=True)]


def cut_positives(lab: dict, confirm: int = 0) -> list[bool]:
    """The confidence label at each cut of one labels.jsonl record (see ``confirmed``)."""
    if confirm and "probe_mentions" not in lab:
        raise DataError(
            f"labels of trace {trace_key(lab)} have no probe_mentions (written by an older version); "
            "rerun the labels stage for --confidence-confirm"
        )
    return confirmed(lab["probe_correct"], lab.get("probe_mentions", []), confirm)


def count_mentions(text: str, answer: str | None) -> int:
    """How often ``answer`` is stated in ``text``: as a whole number (not inside a longer one) where
    it is numeric, else as a substring."""
    if not answer:
        return 0
    if re.fullmatch(r"-?\d+(\.\d+)?", answer):
        return len(re.findall(rf"(?<![\d.]){re.escape(answer)}(?![\d]|\.\d)", text))
    return text.count(answer)


def position_labels(
    span_len: int, cuts: Sequence[int], correct: Sequence[bool], fill: str = "hold"
) -> tuple[list[float], list[float], list[float], list[bool]]:
    """Per thinking position: progress, remain, confidence and whether confidence is supervised."""
    if len(cuts) != len(correct):
        raise ValueError("one probe result per cut")
    progress = [(i + 1) / span_len for i in range(span_len)]
    remain = [float(span_len - i - 1) for i in range(span_len)]
    conf = [0.0] * span_len
    mask = [fill == "hold"] * span_len
    at = dict(zip((c - 1 for c in cuts), correct, strict=True))
    value = 0.0
    for i in range(span_len):
        if i in at:
            value = 1.0 if at[i] else 0.0
            if fill == "boundary":
                conf[i], mask[i] = value, True
        if fill == "hold":
            conf[i] = value
    return progress, remain, conf, mask


@torch.inference_mode()
def probe_answers(
    target: TargetModel,
    prefix_ids: Sequence[int],
    cut_lengths: Sequence[int],
    exit_ids: Sequence[int],
    stop_ids: set[int],
    max_tokens: int,
    probs_out: list[list[float]] | None = None,
) -> list[list[int]]:
    """Greedy answers after forcing the exit tokens at each cut: probe k continues
    ``prefix_ids[:cut_lengths[k]] + exit_ids`` (the think-end token, or an answer trigger of several
    tokens, fed one per step).  All probes decode in one batch over the shared KV cache of
    ``prefix_ids`` (which must cover the longest cut).  ``probs_out``: filled with each answer token's
    probability (the probe's confidence is read from them)."""
    n = len(cut_lengths)
    if probs_out is not None:
        probs_out[:] = [[] for _ in range(n)]
    if n == 0:
        return []
    if not exit_ids:
        raise ValueError("no exit tokens to force")
    if max(cut_lengths) > len(prefix_ids):
        raise ValueError("a cut lies beyond the prefix")
    # every probe writes one position per step: room for all of them up front
    cache = target.new_cache(len(prefix_ids) + n * (max_tokens + len(exit_ids)))
    target.forward(torch.tensor([list(prefix_ids)]), cache, last_only=True)
    base = len(prefix_ids)
    tokens = [exit_ids[0]] * n
    answers: list[list[int]] = [[] for _ in range(n)]
    finished = [False] * n
    neg = torch.finfo(target.dtype).min
    cuts = torch.tensor(cut_lengths)
    forced = len(exit_ids) - 1  # steps that feed the rest of the exit tokens instead of an answer
    for step in range(max_tokens + forced):
        past = cache.get_seq_length()
        allowed = torch.zeros(n, past + n, dtype=torch.bool)
        allowed[:, :base] = torch.arange(base)[None, :] < cuts[:, None]  # own prefix of the trace
        for k in range(step):  # own earlier probe tokens (step k wrote rows base + k*n ...)
            allowed[torch.arange(n), base + k * n + torch.arange(n)] = True
        allowed[torch.arange(n), past + torch.arange(n)] = True  # itself
        mask = torch.zeros(n, past + n, dtype=target.dtype).masked_fill_(~allowed, neg)[None, None]
        pos = (cuts + step)[None]
        logits, _ = target.forward(torch.tensor([tokens]), cache, pos, mask)
        if step < forced:
            tokens = [exit_ids[step + 1]] * n
            continue
        top = torch.softmax(logits.float(), dim=-1).max(dim=-1) if probs_out is not None else None
        tokens = logits.argmax(-1).tolist()
        for i, t in enumerate(tokens):
            if not finished[i]:
                answers[i].append(t)
                if top is not None:
                    probs_out[i].append(float(top.values[i]))
                finished[i] = t in stop_ids
        if all(finished):
            break
    return answers


def label_trace(gen: SpecExitGenerator, trace: dict, cfg: LabelConfig) -> dict:
    s, e = trace["think_start"], trace["think_end"]
    prompt_ids, output_ids = trace["prompt_ids"], trace["output_ids"]
    tok = gen.tokenizer
    detector = BoundaryDetector(lambda i: tok.decode([i]), cfg.paragraph_boundaries, cfg.connectors)
    context = tok.decode(list(prompt_ids[-8:]) + list(output_ids[:s]), skip_special_tokens=False)
    cuts = boundary_cuts(detector, output_ids[s:e], context)
    prefix = list(prompt_ids) + list(output_ids[:e])
    cut_lengths = [len(prompt_ids) + s + c for c in cuts]
    probs: list[list[float]] = []
    answers = probe_answers(gen.target, prefix, cut_lengths, gen.exit_ids, gen.stop_ids, cfg.probe_tokens, probs)
    gold = trace.get("gold") if cfg.reference == "gold" else None
    reference, kind = (gold, "gold") if gold is not None else (trace.get("final_answer"), "trace")
    # a trigger that opens the answer (e.g. "... \\boxed{") belongs to the text the answer is read from
    lead = tok.decode(gen.exit_ids, skip_special_tokens=True) if gen.implicit else ""
    preds = [forced_answer(tok, a, lead) for a in answers]
    correct = [reference is not None and answers_equal(p, reference) for p in preds]
    # how often the thinking so far states each probe's answer (the "re-derived" labels of confirm > 0)
    thinking = [tok.decode(list(output_ids[s : s + c]), skip_special_tokens=True) for c in cuts]
    mentions = [count_mentions(t, p) for t, p in zip(thinking, preds, strict=True)]
    return {
        "prompt_id": trace["prompt_id"],
        "sample": trace.get("sample", 0),
        "span": [s, e],
        "cuts": cuts,
        "probe_answers": preds,
        "probe_correct": correct,
        "probe_mentions": mentions,
        # the DEER-style probe's score of each forced answer (probe.answer_confidence)
        "probe_confidence": [round(answer_confidence(tok, a, q), 4) for a, q in zip(answers, probs, strict=True)],
        "reference": reference,
        "reference_kind": kind,
    }


def make_labels(
    gen: SpecExitGenerator, traces_path: str | Path, out_path: str | Path, cfg: LabelConfig, progress: bool = True
) -> dict:
    """Label every trace with a complete thinking span; resumable like the traces stage.  Traces
    without one are skipped and counted: cut off by the token cap, or finished without closing the
    span.  If no trace has a span the setup is wrong (a non-reasoning model, the wrong marker): that
    is an error naming the file and the first such line."""
    cfg.validate()
    if not gen.exit_ids:
        raise ConfigError(
            f"the tokenizer has no {gen.think_end!r} token; pass the model's marker (--think-end), or an "
            "answer trigger (--answer-trigger) for a model that does not think in tags"
        )
    traces = load_traces(traces_path)
    out_path = Path(out_path)
    rank, world = shards.launch_context()
    done = shards.done_keys(out_path, trace_key)
    todo, truncated, no_span, first_bad = [], 0, 0, None
    for n, tr in traces:
        if tr["think_end"] is None:
            if tr.get("finish_reason") == "length":
                truncated += 1
            else:
                no_span += 1
            first_bad = first_bad or n
            continue
        if trace_key(tr) not in done and shards.shard_of(trace_key(tr), world) == rank:
            todo.append(tr)
    usable = len(traces) - truncated - no_span
    if usable == 0:
        why = (
            f"all cut off before {gen.think_end!r}; raise --max-new-tokens"
            if no_span == 0
            else f"none has a thinking span (no {gen.think_end!r}); is this a reasoning model, and is the "
            "think-end marker right (--think-end)?"
        )
        raise DataError(f"{traces_path}:{first_bad}: no usable trace among {len(traces)}: {why}")
    with shards.part_path(out_path, rank).open("a", encoding="utf-8") as f:
        for tr in tqdm(todo, desc=f"labels[{rank}]" if world > 1 else "labels", unit="trace", disable=not progress):
            f.write(json.dumps(label_trace(gen, tr, cfg)) + "\n")
            f.flush()
    shards.finish(out_path, trace_key, world, rank)
    return {"traces": len(traces), "labelled": usable, "skipped_truncated": truncated, "skipped_no_span": no_span}


def load_labels(path: str | Path) -> dict[tuple[int, int], dict]:
    return {trace_key(obj): obj for _, obj in iter_jsonl(path)}
