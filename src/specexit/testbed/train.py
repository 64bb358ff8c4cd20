"""Train the testbed "overthinker": a small Qwen3 from scratch on generated reasoning traces.

The run is a pure function of its ``TrainConfig``: data are regenerated from seeds, batch order is a
seeded permutation per epoch, the model is initialised from ``seed``.  Checkpoints (model, optimizer,
scheduler, RNG states, step) are written atomically every ``checkpoint_every`` steps, so an interrupted
run resumes where it stopped and ends with the same weights as an uninterrupted one.

Output: a Hugging Face folder (``config.json``, ``model.safetensors``, tokenizer with the chat template,
``generation_config.json`` with eos ``<|im_end|>``) plus ``testbed.json`` (written last: a folder without
it is incomplete) recording the generator version, seeds, settings and throughput.
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from ..errors import SpecExitError
from ..jsonl import append_jsonl
from ..train.loop import epoch_generator, optimizer_step, warmup_schedule
from .problems import GENERATOR_VERSION, Trace, TraceConfig, training_mix
from .tokenizer import DEFAULT_VOCAB_SIZE, EOS, check_tokenizer, prompt_text, train_tokenizer

MAX_SAFETENSORS_BYTES = 25_000_000
CHECKPOINT = "checkpoints/last.pt"
LOG = "checkpoints/train_log.jsonl"
MANIFEST = "testbed.json"


class TrainError(SpecExitError):
    """A training run cannot start or resume (bad settings, a checkpoint from other settings)."""


@dataclass(frozen=True)
class ModelConfig:
    """Defaults: the testbed model (2.1M parameters; 8 layers so EAGLE-3's taps 1, 3, 4 are distinct)."""

    hidden: int = 128
    layers: int = 8
    heads: int = 4
    kv_heads: int = 2
    intermediate: int = 512
    max_positions: int = 1024
    rope_theta: float = 10000.0


@dataclass(frozen=True)
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    n_examples: int = 80_000
    data_seed: int = 0
    p_no_thinking: float = 0.15
    p_drill: float = 0.35  # arithmetic practice documents (see problems.make_drill)
    trace: TraceConfig = field(default_factory=TraceConfig)
    vocab_size: int = DEFAULT_VOCAB_SIZE
    tokenizer_docs: int = 3000
    batch_size: int = 16
    epochs: float = 1.0
    lr: float = 3e-3
    min_lr_ratio: float = 0.05
    warmup_steps: int = 300
    weight_decay: float = 0.1
    beta2: float = 0.95
    grad_clip: float = 1.0
    bf16: bool = True
    seed: int = 0
    checkpoint_every: int = 250

    @property
    def steps(self) -> int:
        return max(1, math.ceil(self.n_examples * self.epochs / self.batch_size))

    def to_dict(self) -> dict:
        return json.loads(json.dumps(asdict(self)))  # tuples -> lists, comparable with a loaded checkpoint


PRESETS: dict[str, TrainConfig] = {
    # seconds: the unit tests' smoke run
    "smoke": TrainConfig(
        model=ModelConfig(hidden=32, layers=2, heads=2, kv_heads=1, intermediate=64, max_positions=1024),
        n_examples=80,
        batch_size=4,
        tokenizer_docs=300,
        warmup_steps=5,
        checkpoint_every=10,
    ),
    # minutes: checks that the loss falls and the format is learnt
    "dev": TrainConfig(n_examples=8000, warmup_steps=100),
    # the testbed model
    "full": TrainConfig(),
}


def _merge(base: TrainConfig, overrides: dict) -> TrainConfig:
    """``base`` with ``overrides`` (keys of TrainConfig, ModelConfig or TraceConfig; None = keep)."""
    groups = {"model": ModelConfig, "trace": TraceConfig}
    top, sub = {}, {k: {} for k in groups}
    for key, value in overrides.items():
        if value is None:
            continue
        owner = next((g for g, cls in groups.items() if key in {f.name for f in fields(cls)}), None)
        if key in {f.name for f in fields(TrainConfig)}:
            top[key] = value
        elif owner is not None:
            sub[owner][key] = value
        else:
            raise TrainError(f"unknown training setting {key!r}")
    try:
        for g, kv in sub.items():
            if kv:
                top[g] = replace(getattr(base, g), **kv)
        return replace(base, **top)
    except ValueError as e:  # a setting out of range, named by the config's own check
        raise TrainError(str(e)) from None


def make_config(preset: str = "full", **overrides) -> TrainConfig:
    if preset not in PRESETS:
        raise TrainError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
    return _merge(PRESETS[preset], overrides)


def config_from_dict(d: dict) -> TrainConfig:
    d = dict(d)
    model = ModelConfig(**d.pop("model"))
    trace = d.pop("trace")
    trace["slip_deltas"] = tuple(trace["slip_deltas"])
    return TrainConfig(model=model, trace=TraceConfig(**trace), **d)


# --------------------------------------------------------------------------------------------------
# data


@dataclass
class Example:
    ids: torch.Tensor  # int32 (a list of Python ints costs ~10x the memory at 100k examples)
    n_prompt: int  # loss on ids[n_prompt:] (the assistant's part and the closing eos)


def encode_examples(tok, cfg: TrainConfig) -> list[Example]:
    """Chat-formatted traces (prompt and completion tokenized apart, exactly as at inference; the prompt
    ends with a newline or ``</think>``, so no merge is lost; a forced-exit example's cut thinking is part
    of its prompt) and plain arithmetic practice documents (loss on all of it, ended by ``<|endoftext|>``)."""
    mix = training_mix(cfg.n_examples, cfg.data_seed, cfg.p_drill, cfg.p_no_thinking, cfg.trace)
    prompts = [prompt_text(tok, t.problem.question, t.thinking) + t.prefix if isinstance(t, Trace) else "" for t in mix]
    comps = [t.completion + EOS if isinstance(t, Trace) else t + tok.pad_token for t in mix]
    p_ids = tok(prompts, add_special_tokens=False)["input_ids"]
    c_ids = tok(comps, add_special_tokens=False)["input_ids"]
    out = []
    for p, c in zip(p_ids, c_ids, strict=True):
        ids = p + c
        if len(ids) > cfg.model.max_positions:
            raise TrainError(f"an example has {len(ids)} tokens, above max_positions={cfg.model.max_positions}")
        out.append(Example(torch.tensor(ids, dtype=torch.int32), len(p)))
    return out


def epoch_batches(lengths: list[int], batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Seeded batches of one epoch, grouped by length (little padding): shuffle, sort within windows of
    64 batches, cut, shuffle the batches.  A partial last batch is dropped."""
    g = epoch_generator(seed, epoch)  # the draft trainer's rule: a resumed run draws the same batches
    order = torch.randperm(len(lengths), generator=g).tolist()
    window = batch_size * 64
    batches = []
    for w in range(0, len(order), window):
        chunk = sorted(order[w : w + window], key=lambda i: lengths[i])
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk) - batch_size + 1, batch_size)]
    perm = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in perm]


def collate(examples: list[Example], pad_id: int, multiple: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded (input_ids, labels), length rounded up to ``multiple`` (fewer distinct shapes for the
    CPU kernels); labels are -100 on prompt and padding.  No attention mask is needed: with right padding
    and causal attention no real token ever sees a pad."""
    n = -(-max(len(e.ids) for e in examples) // multiple) * multiple
    ids = torch.full((len(examples), n), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), n), -100, dtype=torch.long)
    for row, e in enumerate(examples):
        t = e.ids.long()
        ids[row, : len(t)] = t
        labels[row, e.n_prompt : len(t)] = t[e.n_prompt :]
    return ids, labels


# --------------------------------------------------------------------------------------------------
# model and optimisation


def build_model(cfg: TrainConfig, tok):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    m = cfg.model
    if m.hidden % m.heads or m.heads % m.kv_heads:
        raise TrainError(f"hidden {m.hidden} / heads {m.heads} / kv_heads {m.kv_heads} do not divide")
    config = Qwen3Config(
        vocab_size=len(tok),
        hidden_size=m.hidden,
        intermediate_size=m.intermediate,
        num_hidden_layers=m.layers,
        num_attention_heads=m.heads,
        num_key_value_heads=m.kv_heads,
        head_dim=m.hidden // m.heads,
        max_position_embeddings=m.max_positions,
        rope_parameters={"rope_type": "default", "rope_theta": m.rope_theta},
        tie_word_embeddings=True,
        eos_token_id=tok.convert_tokens_to_ids(EOS),
        pad_token_id=tok.pad_token_id,
        bos_token_id=None,
        use_cache=True,
    )
    torch.manual_seed(cfg.seed)
    return Qwen3ForCausalLM(config)


def build_optimizer(model, cfg: TrainConfig):
    """AdamW, no weight decay on vectors (norms); linear warm-up, then cosine decay to ``min_lr_ratio`` of
    the peak at the last step."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr,
        betas=(0.9, cfg.beta2),
    )
    return opt, torch.optim.lr_scheduler.LambdaLR(opt, warmup_schedule(cfg.warmup_steps, cfg.steps, cfg.min_lr_ratio))


def loss_fn(
    model, ids: torch.Tensor, labels: torch.Tensor, bf16: bool, digits: torch.Tensor
) -> tuple[torch.Tensor, float]:
    """Mean cross-entropy over the assistant tokens, and (for the log) over its digit tokens alone: the
    arithmetic is what a testbed model learns last, and the total loss hides it."""
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(input_ids=ids).logits
    target = labels[:, 1:].flatten()
    per_token = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), target, ignore_index=-100, reduction="none")
    keep = target != -100
    is_digit = torch.isin(target, digits)
    digit_loss = float(per_token[is_digit].detach().mean()) if is_digit.any() else float("nan")
    return per_token[keep].mean(), digit_loss


# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class TrainResult:
    out: Path
    step: int
    losses: list[float]  # one per step since the start of the run (resumed runs included)
    finished: bool
    tokens_per_s: float
    wall_s: float


def _save_checkpoint(path: Path, state: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save(state, tmp)
    os.replace(tmp, path)


def model_from_checkpoint(out: str | Path):
    """(model, tokenizer) of the last checkpoint of a run in ``out``, finished or not (to look at a run
    between stages)."""
    out = Path(out)
    path = out / CHECKPOINT
    if not path.is_file():
        raise TrainError(f"{out} has no checkpoint ({CHECKPOINT})")
    state = torch.load(path, weights_only=False)
    tok = _load_tokenizer(out)
    model = build_model(config_from_dict(state["config"]), tok)
    model.load_state_dict(state["model"])
    model.generation_config.eos_token_id = tok.convert_tokens_to_ids(EOS)
    model.generation_config.pad_token_id = tok.pad_token_id
    return model.eval(), tok


def _load_tokenizer(out: Path):
    from transformers import AutoTokenizer

    if not (out / "tokenizer.json").is_file():
        raise TrainError(f"{out} has a checkpoint but no tokenizer.json; pass --fresh to start over")
    tok = AutoTokenizer.from_pretrained(out)
    check_tokenizer(tok)
    return tok


def train(
    cfg: TrainConfig,
    out: str | Path,
    resume: bool = True,
    progress: bool = True,
    stop_after: int | None = None,
    threads: int | None = 1,
) -> TrainResult:
    """Run (or resume) training into ``out``.  ``stop_after``: stop once that many steps are done, with
    a checkpoint, as an interruption would (for tests and staged runs); the schedule is unchanged."""
    from tqdm.auto import tqdm

    if threads:
        torch.set_num_threads(threads)
    out = Path(out)
    ckpt_path = out / CHECKPOINT
    state = None
    if ckpt_path.exists() and resume:
        state = torch.load(ckpt_path, weights_only=False)
        if state["config"] != cfg.to_dict():
            raise TrainError(
                f"{ckpt_path} was written with other settings; resume with the same settings, pass "
                "--fresh to start over, or use another --out"
            )
        tok = _load_tokenizer(out)
    else:
        if (out / MANIFEST).exists() or ckpt_path.exists():
            for name in (MANIFEST, CHECKPOINT, LOG):
                (out / name).unlink(missing_ok=True)
        tok = train_tokenizer(cfg.vocab_size, cfg.tokenizer_docs, cfg.data_seed)
        out.mkdir(parents=True, exist_ok=True)
        tok.save_pretrained(out)

    t0 = time.perf_counter()
    examples = encode_examples(tok, cfg)
    lengths = [len(e.ids) for e in examples]
    prep_s = time.perf_counter() - t0
    nb = len(epoch_batches(lengths, cfg.batch_size, cfg.seed, 0))
    if nb == 0:
        raise TrainError(f"{cfg.n_examples} examples make no batch of {cfg.batch_size}")

    model = build_model(cfg, tok)
    opt, sched = build_optimizer(model, cfg)
    step, losses, tokens, wall = 0, [], 0, 0.0
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optim"])
        sched.load_state_dict(state["sched"])
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(state["rng"]["python"])
        step, losses, tokens, wall = state["step"], state["losses"], state["tokens"], state["wall_s"]
    else:
        random.seed(cfg.seed)
    model.train()
    total = cfg.steps
    end = total if stop_after is None else min(total, stop_after)
    pad_id = tok.pad_token_id

    def checkpoint() -> None:
        _save_checkpoint(
            ckpt_path,
            {
                "config": cfg.to_dict(),
                "model": model.state_dict(),
                "optim": opt.state_dict(),
                "sched": sched.state_dict(),
                "rng": {"torch": torch.get_rng_state(), "python": random.getstate()},
                "step": step,
                "losses": losses,
                "tokens": tokens,
                "wall_s": wall,
            },
        )

    bar = tqdm(total=total, initial=step, disable=not progress, mininterval=2.0, desc="testbed train")
    cache: dict[int, list[list[int]]] = {}
    smooth = smooth_d = None
    digits = torch.tensor(sorted({i for d in "0123456789" for i in tok.encode(d, add_special_tokens=False)}))
    (out / LOG).parent.mkdir(parents=True, exist_ok=True)
    while step < end:
        epoch, k = divmod(step, nb)
        if epoch not in cache:
            cache.clear()
            cache[epoch] = epoch_batches(lengths, cfg.batch_size, cfg.seed, epoch)
        batch = [examples[i] for i in cache[epoch][k]]
        ids, labels = collate(batch, pad_id)
        t = time.perf_counter()
        loss, digit_loss = loss_fn(model, ids, labels, cfg.bf16, digits)
        optimizer_step(loss, opt, sched, model.parameters(), cfg.grad_clip)
        dt = time.perf_counter() - t
        step += 1
        wall += dt
        n_tok = sum(len(e.ids) for e in batch)
        tokens += n_tok
        value = float(loss.detach())
        losses.append(value)
        smooth = value if smooth is None else 0.98 * smooth + 0.02 * value
        if not math.isnan(digit_loss):
            smooth_d = digit_loss if smooth_d is None else 0.98 * smooth_d + 0.02 * digit_loss
        bar.update(1)
        bar.set_postfix(loss=f"{smooth:.4f}", digits=f"{smooth_d:.3f}", tok_s=f"{tokens / wall:.0f}", refresh=False)
        if step % 10 == 0 or step == end:
            rec = {
                "step": step,
                "loss": round(smooth, 5),
                "digit_loss": round(smooth_d or 0.0, 5),
                "lr": sched.get_last_lr()[0],
                "tok_s": round(tokens / wall, 1),
                "wall_s": round(wall, 1),
            }
            append_jsonl(out / LOG, [rec])
        if step % cfg.checkpoint_every == 0 or step == end:
            checkpoint()
    bar.close()
    result = TrainResult(out, step, losses, step >= total, tokens / max(wall, 1e-9), wall)
    if result.finished:
        n_drill = sum(e.n_prompt == 0 for e in examples)
        data = {
            "examples": len(examples),
            "drills": n_drill,
            "traces": len(examples) - n_drill,
            "tokens": sum(lengths),
            "data_prep_s": round(prep_s, 1),
        }
        export(model, tok, cfg, out, result, data, threads)
    return result


def export(model, tok, cfg: TrainConfig, out: Path, result: TrainResult, data: dict, threads: int | None) -> None:
    """Write the HF folder (bfloat16 weights if float32 would pass the size limit), check it loads and
    generates, then write ``testbed.json`` last."""
    import transformers
    from transformers import AutoModelForCausalLM, GenerationConfig

    model.eval()
    n_params = sum(p.numel() for p in model.parameters())
    dtype = torch.float32 if n_params * 4 < MAX_SAFETENSORS_BYTES - 1_000_000 else torch.bfloat16
    model.to(dtype)
    eos = tok.convert_tokens_to_ids(EOS)
    model.generation_config = GenerationConfig(eos_token_id=eos, pad_token_id=tok.pad_token_id, do_sample=False)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    size = (out / "model.safetensors").stat().st_size
    if size > MAX_SAFETENSORS_BYTES:
        raise TrainError(f"model.safetensors is {size} bytes, above the {MAX_SAFETENSORS_BYTES} limit")
    loaded = AutoModelForCausalLM.from_pretrained(out)
    ids = tok(
        prompt_text(tok, "Mia has 5 apples. She finds 3 more apples. How many apples does Mia have now?"),
        return_tensors="pt",
        add_special_tokens=False,
    )
    with torch.no_grad():
        gen = loaded.generate(**ids, max_new_tokens=8, do_sample=False)
    if gen.shape[1] <= ids["input_ids"].shape[1]:
        raise TrainError("the saved model did not generate")
    tail = result.losses[-50:]
    manifest = {
        "what": "SpecExit testbed 'overthinker': a small Qwen3 trained from scratch on synthetic arithmetic "
        "word-problem reasoning traces with redundant re-checks (plus arithmetic practice documents). "
        "A testbed, not a real reasoning model.",
        "generator_version": GENERATOR_VERSION,
        "train_config": cfg.to_dict(),
        "data": data,
        "model": {"params": n_params, "dtype": str(dtype).removeprefix("torch."), "safetensors_bytes": size},
        "tokenizer": {"vocab_size": len(tok), "eos": EOS},
        "run": {
            "steps": result.step,
            "final_loss": sum(tail) / len(tail),
            "tokens_per_s": result.tokens_per_s,
            "train_wall_s": result.wall_s,
            "threads": threads or torch.get_num_threads(),
            "bf16_autocast": cfg.bf16,
        },
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__},
        "recommended_sampling": {"temperature": 0.6},
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
