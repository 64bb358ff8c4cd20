"""Training examples: a trace, its labels, and the target's features over it.

Features come either *online* (one no-grad target forward per example per epoch) or *offline*
(extracted once by ``specexit train hidden`` into sharded float16 safetensors with an index).  Both
yield the same thing: the fused EAGLE-3 hidden states [T, 3H] (the draft's input), the target's
logits restricted to the draft vocabulary [T, Vd] (the soft labels) and the target's argmax over the
full vocabulary [T] (EAGLE-3 masks positions whose argmax the draft cannot propose).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from tqdm import tqdm

from ..jsonl import DataError
from ..target import TargetModel
from .labels import cut_positives, position_labels
from .traces import trace_key


@dataclass
class Example:
    key: tuple[int, int]
    ids: list[int]  # prompt + output, capped at max_len
    prompt_len: int
    span: tuple[int, int] | None  # thinking tokens, in sequence coordinates
    cuts: list[int]
    correct: list[bool]

    def signal_targets(self, fill: str) -> dict[str, torch.Tensor]:
        """Per-position signal labels and masks over the whole sequence (zero / False outside thinking)."""
        t = len(self.ids)
        out = {
            "progress": torch.zeros(t),
            "remain": torch.zeros(t),
            "confidence": torch.zeros(t),
            "conf_mask": torch.zeros(t, dtype=torch.bool),
            "think_mask": torch.zeros(t, dtype=torch.bool),
            "cut_mask": torch.zeros(t, dtype=torch.bool),
        }
        if self.span is None:
            return out
        s, e = self.span
        prog, rem, conf, cmask = position_labels(e - s, self.cuts, self.correct, fill)
        n = min(e, t) - s  # a span cut by max_len keeps its true-length labels
        if n <= 0:
            return out
        out["progress"][s : s + n] = torch.tensor(prog[:n])
        out["remain"][s : s + n] = torch.tensor(rem[:n])
        out["confidence"][s : s + n] = torch.tensor(conf[:n])
        out["conf_mask"][s : s + n] = torch.tensor(cmask[:n])
        out["think_mask"][s : s + n] = True
        for c in self.cuts:
            if s + c - 1 < t:
                out["cut_mask"][s + c - 1] = True
        return out


def build_examples(traces: list[tuple[int, dict]], labels: dict, max_len: int, confirm: int = 0) -> list[Example]:
    """One example per trace; ``confirm`` > 0 turns the probes' results into "re-derived" labels
    (see ``labels.confirmed``)."""
    out = []
    for _, tr in traces:
        lab = labels.get(trace_key(tr))
        if lab is None:  # truncated traces have no labels: still useful for the token loss
            span, cuts, correct = None, [], []
        else:
            s, e = lab["span"]
            p = len(tr["prompt_ids"])
            span, cuts, correct = (p + s, p + e), list(lab["cuts"]), cut_positives(lab, confirm)
        ids = (list(tr["prompt_ids"]) + list(tr["output_ids"]))[:max_len]
        if len(ids) <= len(tr["prompt_ids"]) + 1:
            continue  # nothing to learn: the prompt fills max_len
        out.append(Example(trace_key(tr), ids, len(tr["prompt_ids"]), span, cuts, correct))
    if not out:
        raise DataError("no usable training examples (empty traces, or prompts longer than --max-len)")
    return out


@torch.no_grad()
def target_argmax(target: TargetModel, final: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """Argmax of the target's full-vocabulary logits, in row chunks (a 150k vocabulary times 2k
    positions would otherwise be a 1.2 GB tensor)."""
    head = target.model.get_output_embeddings()
    return torch.cat([head(final[i : i + chunk]).argmax(-1) for i in range(0, final.shape[0], chunk)])


class OnlineFeatures:
    """Target forward per example (no grad); costs one target pass per example per epoch."""

    def __init__(self, target: TargetModel, used_ids: torch.Tensor) -> None:
        self.target, self.used = target, used_ids
        self.head = target.lm_head_rows(used_ids).detach().float()

    def __call__(self, ex: Example) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        fused, final = self.target.features(ex.ids)
        return fused.float(), final.float() @ self.head.T, target_argmax(self.target, final)


def _key_str(key: tuple[int, int]) -> str:
    return f"{key[0]}_{key[1]}"


def extract_hidden(
    target: TargetModel,
    examples: list[Example],
    out_dir: str | Path,
    used_ids: torch.Tensor,
    shard_size: int = 64,
    progress: bool = True,
) -> Path:
    """Offline features: float16 fused / final hidden states and the argmax, sharded; resumable
    (an index entry is written only after its shard file is complete)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    index_path = out / "index.json"
    index = json.loads(index_path.read_text()) if index_path.exists() else {"shards": {}, "examples": {}}
    save_file({"rows": target.lm_head_rows(used_ids).detach().float().contiguous()}, str(out / "head.safetensors"))
    todo = [ex for ex in examples if _key_str(ex.key) not in index["examples"]]
    for start in tqdm(range(0, len(todo), shard_size), desc="hidden", unit="shard", disable=not progress):
        chunk = todo[start : start + shard_size]
        name = f"shard_{len(index['shards']):05d}.safetensors"
        tensors = {}
        for ex in chunk:
            fused, final = target.features(ex.ids)
            top = target_argmax(target, final)
            k = _key_str(ex.key)
            tensors[f"{k}.fused"] = fused.half().contiguous()
            tensors[f"{k}.final"] = final.half().contiguous()
            tensors[f"{k}.top"] = top.int().contiguous()
        save_file(tensors, str(out / name))
        index["shards"][name] = len(chunk)
        index["examples"].update({_key_str(ex.key): name for ex in chunk})
        index_path.write_text(json.dumps(index))
    return out


class OfflineFeatures:
    """Reads what ``extract_hidden`` wrote; keeps recently used shards in memory."""

    def __init__(self, folder: str | Path, max_cached_shards: int = 4) -> None:
        self.dir = Path(folder)
        if not (self.dir / "index.json").is_file():
            raise DataError(f"{self.dir}: no index.json; run `specexit train hidden` first")
        self.index = json.loads((self.dir / "index.json").read_text())
        self.head = load_file(str(self.dir / "head.safetensors"))["rows"]
        self._cache: dict[str, dict[str, torch.Tensor]] = {}
        self.max_cached = max_cached_shards

    def _shard(self, name: str) -> dict[str, torch.Tensor]:
        if name not in self._cache:
            if len(self._cache) >= self.max_cached:
                self._cache.pop(next(iter(self._cache)))
            self._cache[name] = load_file(str(self.dir / name))
        return self._cache[name]

    def __call__(self, ex: Example) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        k = _key_str(ex.key)
        name = self.index["examples"].get(k)
        if name is None:
            raise DataError(f"{self.dir}: no hidden states for trace {ex.key}; rerun `specexit train hidden`")
        sh = self._shard(name)
        return sh[f"{k}.fused"].float(), sh[f"{k}.final"].float() @ self.head.T, sh[f"{k}.top"].long()
