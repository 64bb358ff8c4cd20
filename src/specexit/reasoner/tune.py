"""LoRA fine-tuning of a zoo model on composed thinking traces (stage 4 of docs/reasoner.md).

LoRA (peft) on the attention projections plus the embedding rows of the think tokens and, for a model
with an untied output head, their head rows: those rows are untrained in Qwen2.5 weights, and the
model must learn to *write* ``</think>``.  The prompt opens ``<think>`` (``tokenizer.opening_template``);
the loss covers the completion only (thinking, ``</think>``, answer, ``<|im_end|>``), not the prompt.

Resumable: a checkpoint (adapter, optimizer, schedule, step, RNG) is written atomically every
``ckpt_every`` steps; a rerun with the same ``--out`` continues from it and gives the same loss curve
as an uninterrupted run (no dropout; the data order is a function of (seed, epoch)).
"""

from __future__ import annotations

import json
import shutil
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..errors import ConfigError
from ..jsonl import append_jsonl, iter_jsonl
from ..train.loop import drop_metrics_after, epoch_generator, warmup_schedule
from .tokenizer import load_thinking_tokenizer

THINK_TOKENS = ("<think>", "</think>")


@dataclass
class TuneConfig:
    lora_r: int = 16
    lora_alpha: int = 32
    target_modules: tuple[str, ...] = ("q_proj", "v_proj")
    lr: float = 2e-4
    warmup: int = 20
    epochs: int = 1
    max_steps: int | None = None  # optimizer steps (each over ``grad_accum`` examples)
    grad_accum: int = 4
    max_len: int = 1024
    ckpt_every: int = 25
    grad_clip: float = 1.0
    seed: int = 0
    dtype: str = "float32"

    def validate(self) -> None:
        if self.lora_r < 1 or self.grad_accum < 1 or self.max_len < 8 or self.ckpt_every < 1 or self.epochs < 1:
            raise ConfigError("lora_r, grad_accum, ckpt_every, epochs must be >= 1 and max_len >= 8")
        if not 0 < self.lr < 1:
            raise ConfigError(f"lr must be in (0, 1), got {self.lr}")
        if self.max_steps is not None and self.max_steps < 1:
            raise ConfigError(f"max_steps must be >= 1, got {self.max_steps}")


def completion_text(ex: dict) -> str:
    """What the thinking model writes after its chat prompt, which opens ``<think>`` (``opening_template``)."""
    return f"{ex['thinking'].strip()}\n</think>\n\n{ex['answer'].strip()}<|im_end|>\n"


def encode_example(tok, ex: dict, max_len: int) -> tuple[list[int], int] | None:
    """(token ids, index of the first completion token), or None for a trace longer than ``max_len``:
    cutting one would drop its ``</think>`` and answer and teach the model to re-check without end
    (round 1 of docs/reasoner.md did that), so such traces are left out."""
    prompt = tok.apply_chat_template(
        [{"role": "user", "content": ex["question"]}], tokenize=False, add_generation_prompt=True, enable_thinking=True
    )
    p_ids = tok.encode(prompt, add_special_tokens=False)
    c_ids = tok.encode(completion_text(ex), add_special_tokens=False)
    ids = p_ids + c_ids
    return (ids, len(p_ids)) if len(ids) <= max_len else None


def think_token_ids(tok) -> list[int]:
    vocab = tok.get_vocab()
    missing = [t for t in THINK_TOKENS if t not in vocab]
    if missing:
        raise ConfigError(f"the tokenizer has no {missing} token(s): use a tokenizer with think tokens (Qwen3's)")
    return [vocab[t] for t in THINK_TOKENS]


@contextmanager
def peft_wrapping() -> Iterator[None]:
    """peft 0.21.2 (the newest) reads ``model.is_gradient_checkpointing`` whenever it wraps a model, a property
    transformers 5 deprecated (a FutureWarning per call, removal in v6): nothing our code or a user can act
    on, so that one warning is silenced while peft wraps; any other warning still shows."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
        yield


def build_model(base_dir: str | Path, tok, cfg: TuneConfig):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=getattr(torch, cfg.dtype))
    ids = think_token_ids(tok)
    rows = model.get_input_embeddings().weight.shape[0]
    if max(ids) >= rows:
        raise ConfigError(f"think token ids {ids} lie outside the model's {rows} embedding rows")
    targets = {"embed_tokens": ids}
    if not model.config.tie_word_embeddings:
        targets["lm_head"] = ids
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=0.0,
                      target_modules=list(cfg.target_modules), trainable_token_indices=targets)  # fmt: skip
    with peft_wrapping():
        return get_peft_model(model, lora)


def _save_checkpoint(out: Path, model, opt, sched, state: dict) -> None:
    tmp = out / "checkpoint.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(str(tmp))
    torch.save({"opt": opt.state_dict(), "sched": sched.state_dict(), "rng": torch.get_rng_state(), **state},
               tmp / "state.pt")  # fmt: skip
    final = out / "checkpoint"
    shutil.rmtree(final, ignore_errors=True)
    tmp.replace(final)  # the last step of a checkpoint: a kill before it leaves the previous one whole


def _load_adapter_weights(model, adapter_dir: Path) -> None:
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    result = set_peft_model_state_dict(model, load_file(str(adapter_dir / "adapter_model.safetensors")))
    if result.unexpected_keys:
        raise ConfigError(f"--init-adapter {adapter_dir}: weights this model has no place for: "
                          f"{result.unexpected_keys[:3]}")  # fmt: skip


def _load_checkpoint(out: Path, model, opt, sched) -> dict | None:
    ckpt = out / "checkpoint"
    if not (ckpt / "state.pt").is_file():
        return None
    _load_adapter_weights(model, ckpt)
    state = torch.load(ckpt / "state.pt", weights_only=False)
    opt.load_state_dict(state.pop("opt"))
    sched.load_state_dict(state.pop("sched"))
    torch.set_rng_state(state.pop("rng"))
    return state


def check_init_adapter(adapter_dir: str | Path, cfg: TuneConfig) -> None:
    """A previous round's adapter/ to start from must have this run's LoRA shape."""
    conf = Path(adapter_dir) / "adapter_config.json"
    if not conf.is_file() or not (Path(adapter_dir) / "adapter_model.safetensors").is_file():
        raise ConfigError(f"--init-adapter {adapter_dir}: not an adapter/ folder of `reasoner tune`")
    c = json.loads(conf.read_text())
    if c.get("r") != cfg.lora_r or sorted(c.get("target_modules") or []) != sorted(cfg.target_modules):
        raise ConfigError(f"--init-adapter {adapter_dir}: LoRA rank {c.get('r')} on {c.get('target_modules')}, "
                          f"this run has rank {cfg.lora_r} on {list(cfg.target_modules)}")  # fmt: skip


def tune(
    base_dir: str | Path,
    tokenizer_dir: str | Path,
    examples_path: str | Path,
    out_dir: str | Path,
    cfg: TuneConfig,
    progress: bool = True,
    init_adapter: str | Path | None = None,
) -> dict:
    """Train (or resume) and write OUT/adapter; returns the run summary (also OUT/tune.json).
    ``init_adapter``: start from a previous round's adapter (a fresh optimizer and schedule; a checkpoint
    in OUT, when there is one, wins: it already started from it)."""
    from tqdm import tqdm

    cfg.validate()
    if init_adapter is not None:
        check_init_adapter(init_adapter, cfg)
    out = Path(out_dir)
    examples = [obj for _, obj in iter_jsonl(examples_path)]
    if not examples:
        raise ConfigError(f"{examples_path}: no examples")
    tok = load_thinking_tokenizer(tokenizer_dir)
    encoded = [encode_example(tok, ex, cfg.max_len) for ex in examples]
    data = [e for e in encoded if e is not None]
    too_long = len(encoded) - len(data)
    if not data:
        raise ConfigError(f"{examples_path}: every example is longer than --max-len {cfg.max_len}")
    torch.manual_seed(cfg.seed)
    model = build_model(base_dir, tok, cfg)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=0.0)
    per_epoch = len(data) // cfg.grad_accum
    if per_epoch < 1:
        raise ConfigError(f"{len(data)} examples are fewer than one step of --grad-accum {cfg.grad_accum}")
    total = min(cfg.max_steps or per_epoch * cfg.epochs, per_epoch * cfg.epochs)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_schedule(cfg.warmup))
    out.mkdir(parents=True, exist_ok=True)
    state = _load_checkpoint(out, model, opt, sched)
    if state is None:
        state = {"step": 0}
        if init_adapter is not None:
            _load_adapter_weights(model, Path(init_adapter))
    step = state["step"]
    log = out / "metrics.jsonl"
    drop_metrics_after(log, step)  # metrics logged after the checkpoint are redone
    model.train()
    bar = tqdm(total=total, initial=step, desc="tune", unit="step", disable=not progress)
    t0 = time.perf_counter()
    while step < total:
        epoch, within = divmod(step, per_epoch)
        order = torch.randperm(len(data), generator=epoch_generator(cfg.seed, epoch)).tolist()
        batch = [data[i] for i in order[within * cfg.grad_accum : (within + 1) * cfg.grad_accum]]
        n_tokens = sum(len(ids) - start for ids, start in batch)
        loss = torch.zeros(())
        opt.zero_grad(set_to_none=True)
        for ids, start in batch:  # one sequence at a time: no padding; the loss is per completion token
            x = torch.tensor([ids])
            labels = x.clone()
            labels[0, :start] = -100
            out_ = model(input_ids=x)
            logits = out_.logits[0, :-1].float()
            tok_loss = torch.nn.functional.cross_entropy(logits, labels[0, 1:], ignore_index=-100, reduction="sum")
            (tok_loss / n_tokens).backward()
            loss += tok_loss.detach() / n_tokens
        # gradients were accumulated example by example (one graph at a time fits in memory)
        gnorm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
        opt.step()
        sched.step()
        step += 1
        append_jsonl(log, [{"step": step, "loss": round(float(loss), 5), "grad_norm": round(float(gnorm), 4),
                           "lr": sched.get_last_lr()[0], "tokens": n_tokens}])  # fmt: skip
        bar.update(1)
        bar.set_postfix(loss=f"{float(loss):.3f}")
        if step % cfg.ckpt_every == 0 or step == total:
            _save_checkpoint(out, model, opt, sched, {"step": step})
    bar.close()
    model.save_pretrained(str(out / "adapter"))
    summary = {"steps": step, "examples": len(data), "too_long_left_out": too_long, "config": asdict(cfg),
               "wall_s_this_run": round(time.perf_counter() - t0, 2), "base": str(base_dir),
               "tokenizer": str(tokenizer_dir), "init_adapter": None if init_adapter is None else str(init_adapter),
               "think_token_ids": think_token_ids(tok)}  # fmt: skip
    (out / "tune.json").write_text(json.dumps(summary, indent=2) + "\n")
    return summary
