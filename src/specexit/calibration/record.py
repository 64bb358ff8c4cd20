"""Record the draft's exit signals at every boundary of labelled traces (``signals.jsonl``).

One causal pass of the target over a trace gives the hidden states the engine would see at each
token; ``Eagle3Draft.fuse`` turns the state at a boundary token into the signals the boundary
read-out reads there.  The boundaries and their forced-answer verdicts come from ``labels.jsonl``
(``train labels --label-reference gold``), so the cuts line up with the probes.  Resumable: traces
already in the output are skipped.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from tqdm import tqdm

from ..engine import SpecExitGenerator
from ..errors import ConfigError
from ..jsonl import iter_jsonl
from ..probe import answer_key
from ..scoring import answers_equal
from ..train.labels import load_labels
from ..train.traces import load_traces, trace_key
from .replay import TraceSignals


@torch.inference_mode()
def trace_signals(gen: SpecExitGenerator, trace: dict, label: dict) -> TraceSignals:
    """The signals at each labelled boundary of one trace (a trace with a closed thinking span)."""
    assert gen.draft is not None
    s, e = label["span"]
    prompt_ids, output_ids = list(trace["prompt_ids"]), list(trace["output_ids"])
    cuts = [int(c) for c in label["cuts"]]
    signals: dict[str, tuple[float, ...]] = {n: () for n in gen.draft.signals}
    if cuts:
        fused, _ = gen.target.features(prompt_ids + output_ids[:e])  # [P + e, 3Ht]
        # the state after the boundary token: the hidden state at that token's own position
        rows = torch.tensor([len(prompt_ids) + s + c - 1 for c in cuts])
        _, sig = gen.draft.fuse(fused[rows])  # name -> [len(cuts)]
        signals = {n: tuple(float(x) for x in v.tolist()) for n, v in sig.items()}
    right = answers_equal(trace.get("final_answer"), label.get("reference"))
    answers = tuple(answer_key(a) for a in label.get("probe_answers", []))
    return TraceSignals(int(trace["prompt_id"]), int(trace.get("sample", 0)), e - s, bool(right), tuple(cuts),
                        tuple(bool(c) for c in label["probe_correct"]), signals, answers)  # fmt: skip


def record_signals(gen: SpecExitGenerator, folder: str | Path, out_path: str | Path, progress: bool = True) -> dict:
    """signals.jsonl for every labelled trace of a pipeline folder (traces.jsonl + labels.jsonl)."""
    folder, out_path = Path(folder), Path(out_path)
    for name in ("traces.jsonl", "labels.jsonl"):
        if not (folder / name).is_file():
            raise ConfigError(f"--data {folder}: no {name} (a folder of `train traces` + `train labels`)")
    labels = load_labels(folder / "labels.jsonl")
    if any(lab.get("reference_kind") != "gold" for lab in labels.values()):
        raise ConfigError(f"--data {folder}: labels must be scored against gold answers (--label-reference gold)")
    done = {trace_key(obj) for _, obj in iter_jsonl(out_path)} if out_path.is_file() else set()
    traces = [tr for _, tr in load_traces(folder / "traces.jsonl")]
    todo = [tr for tr in traces if trace_key(tr) in labels and trace_key(tr) not in done]
    with out_path.open("a", encoding="utf-8") as f:
        for tr in tqdm(todo, desc="signals", unit="trace", disable=not progress):
            f.write(json.dumps(trace_signals(gen, tr, labels[trace_key(tr)]).to_dict()) + "\n")
            f.flush()
    return {"traces": len(done) + len(todo), "recorded_now": len(todo)}


def load_signals(path: str | Path) -> list[TraceSignals]:
    return [TraceSignals.from_dict(obj) for _, obj in iter_jsonl(path)]
