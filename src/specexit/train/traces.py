"""Stage 1: the target's own outputs for a prompt set (the data the draft and its signals learn from).

Output: JSONL, one trace per (prompt, sample), appended and flushed as each finishes, so an
interrupted run resumes where it stopped: finished traces are kept, a half-written last line (a kill
mid-write) is dropped and redone, and no trace is ever written twice.

Backends: ``engine`` (the project's own ``vanilla`` decoding, one sequence at a time, per-trace seeds),
``hf`` (batched ``model.generate`` with left padding; much faster on CPU for small models) and
``vllm`` (vLLM's continuous batching with per-trace seeds; needs vLLM, see docs/vllm.md).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from ..answer_trigger import reasoning_length
from ..engine import SpecExitGenerator
from ..errors import ConfigError
from ..jsonl import DataError, iter_jsonl
from ..prompts import Prompt
from ..sampling import SamplingParams
from ..scoring import extract_answer
from ..span import thinking_span
from . import shards

BACKENDS = ("engine", "hf", "vllm")


@dataclass
class TraceConfig:
    max_new_tokens: int = 1024
    temperature: float = 0.6
    top_p: float = 0.95
    samples: int = 1  # traces per prompt
    seed: int = 0
    backend: str = "hf"
    batch_size: int = 8  # hf backend
    system: str | None = None
    enable_thinking: bool = True  # False: the chat template's empty span (`nothink` baselines, no thinking to learn)

    def validate(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(f"trace backend must be one of {BACKENDS}, got {self.backend!r}")
        if self.max_new_tokens <= 0 or self.samples <= 0 or self.batch_size <= 0:
            raise ConfigError("max_new_tokens, samples and batch_size must be positive")


def trace_key(obj: dict) -> tuple[int, int]:
    return int(obj["prompt_id"]), int(obj.get("sample", 0))


def _record(gen: SpecExitGenerator, prompt: Prompt, sample: int, seed: int, prompt_ids, output_ids, finish) -> dict:
    tok = gen.tokenizer
    body = output_ids[:-1] if output_ids and output_ids[-1] in gen.stop_ids else output_ids
    if gen.implicit:  # no think tokens: the span runs up to where the text shows the answer begins
        end = reasoning_length([tok.decode([t]) for t in body], gen.answer_markers)
        span = (0, end) if end else None
        answer_ids = body[end:] if end else body
    else:
        span = thinking_span(prompt_ids, body, gen.think_start_id, gen.think_end_id)
        answer_ids = body[span[1] + 1 :] if span else body
    answer_text = tok.decode(answer_ids, skip_special_tokens=True)
    return {
        "prompt_id": prompt.id,
        "sample": sample,
        "seed": seed,
        "question": prompt.question,
        "gold": prompt.answer,
        "prompt_ids": list(prompt_ids),
        "output_ids": list(output_ids),
        "think_start": span[0] if span else None,
        "think_end": span[1] if span else None,
        "final_answer": extract_answer(answer_text),
        "finish_reason": finish,
        "text": tok.decode(output_ids, skip_special_tokens=False),
    }


def _seed(cfg: TraceConfig, prompt_id: int, sample: int) -> int:
    return (cfg.seed * 1_000_003 + prompt_id * 1009 + sample) % (2**31 - 1)


def _generate_engine(gen: SpecExitGenerator, jobs, cfg: TraceConfig):
    for prompt, sample, ids in jobs:
        seed = _seed(cfg, prompt.id, sample)
        sp = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, seed=seed)
        r = gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=cfg.max_new_tokens, sampling=sp)
        yield [(prompt, sample, seed, ids, r.token_ids, r.finish_reason)]


@torch.inference_mode()
def _generate_hf(gen: SpecExitGenerator, jobs, cfg: TraceConfig):
    model, tok = gen.target.model, gen.tokenizer
    pad = tok.pad_token_id if tok.pad_token_id is not None else min(gen.stop_ids)
    stop = sorted(gen.stop_ids)
    for start in range(0, len(jobs), cfg.batch_size):
        batch = jobs[start : start + cfg.batch_size]
        width = max(len(ids) for _, _, ids in batch)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attn = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (_, _, ids) in enumerate(batch):  # left padding
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attn[row, width - len(ids) :] = 1
        seed = _seed(cfg, batch[0][0].id, batch[0][1])
        torch.manual_seed(seed)
        out = model.generate(
            input_ids=input_ids,
            attention_mask=attn,
            max_new_tokens=cfg.max_new_tokens,
            do_sample=cfg.temperature > 0,
            temperature=cfg.temperature if cfg.temperature > 0 else None,
            top_p=cfg.top_p if cfg.temperature > 0 else None,
            top_k=None,
            eos_token_id=stop,
            pad_token_id=pad,
        )
        results = []
        for row, (prompt, sample, ids) in enumerate(batch):
            new = out[row, width:].tolist()
            cut = next((i for i, t in enumerate(new) if t in gen.stop_ids), None)
            finish = "stop" if cut is not None else "length"
            new = new[: cut + 1] if cut is not None else new
            results.append((prompt, sample, seed, ids, new, finish))
        yield results


def _generate_vllm(gen: SpecExitGenerator, jobs, cfg: TraceConfig):
    from ..backend import GenerationRequest
    from ..vllm_plugin.backend import VLLMBackend

    backend = VLLMBackend(
        gen.target.model.name_or_path,
        dtype=str(gen.target.dtype).removeprefix("torch."),
        max_num_seqs=cfg.batch_size,
        think_start=gen.think_start,
        think_end=gen.think_end,
    )
    chunk = 4 * cfg.batch_size  # several batches per call keep vLLM's batch full; results flush per call
    try:
        for start in range(0, len(jobs), chunk):
            part = jobs[start : start + chunk]
            seeds = [_seed(cfg, prompt.id, sample) for prompt, sample, _ in part]
            reqs = [
                GenerationRequest(ids, "vanilla", cfg.max_new_tokens, SamplingParams(cfg.temperature, cfg.top_p, 0, s))
                for (_, _, ids), s in zip(part, seeds, strict=True)
            ]
            results = backend.generate_batch(reqs)
            yield [
                (prompt, sample, seed, ids, r.token_ids, r.finish_reason)
                for (prompt, sample, ids), seed, r in zip(part, seeds, results, strict=True)
            ]
    finally:
        backend.close()


_RUNNERS = {"engine": _generate_engine, "hf": _generate_hf, "vllm": _generate_vllm}


def generate_traces(
    gen: SpecExitGenerator, prompts: list[Prompt], out_path: str | Path, cfg: TraceConfig, progress: bool = True
) -> Path:
    """Write traces for every (prompt, sample) not yet in ``out_path``; returns the path."""
    cfg.validate()
    if not gen.exit_ids:
        raise ConfigError(
            f"the tokenizer has no {gen.think_end!r} token: traces would have no thinking span to learn "
            "exit signals from; pass the model's think-end marker (--think-end), or an answer trigger "
            "(--answer-trigger) for a model that does not think in tags"
        )
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    rank, world = shards.launch_context()
    done = shards.done_keys(out_path, trace_key)
    jobs = []
    for p in prompts:
        ids = None
        for s in range(cfg.samples):
            if (p.id, s) not in done and shards.shard_of((p.id, s), world) == rank:
                ids = ids or gen.encode_prompt(p.question, system=cfg.system, enable_thinking=cfg.enable_thinking)
                jobs.append((p, s, ids))
    if jobs:
        runner = _RUNNERS[cfg.backend](gen, jobs, cfg)
        bar = tqdm(
            total=len(jobs), desc=f"traces[{rank}]" if world > 1 else "traces", unit="trace", disable=not progress
        )
        with shards.part_path(out_path, rank).open("a", encoding="utf-8") as f:
            for results in runner:
                for prompt, sample, seed, ids, new, finish in results:
                    rec = _record(gen, prompt, sample, seed, ids, new, finish)
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                bar.update(len(results))
        bar.close()
    shards.finish(out_path, trace_key, world, rank)
    return out_path


def load_traces(path: str | Path) -> list[tuple[int, dict]]:
    """(line, trace) pairs; each must carry the fields the later stages read."""
    need = ("prompt_id", "prompt_ids", "output_ids", "think_start", "think_end")
    out = []
    for n, obj in iter_jsonl(path):
        missing = [k for k in need if k not in obj]
        if missing:
            raise DataError(f"{path}:{n}: trace lacks field(s) {missing}; was it written by `specexit train traces`?")
        out.append((n, obj))
    if not out:
        raise DataError(f"{path}: no traces (the file is empty)")
    return out
