"""Stage 5: the SpecExit draft trainer.

Loss = token loss (EAGLE-3 TTT: ``steps`` unrolled draft steps, step k weighted ``decay**k``, soft
cross-entropy against the target's distribution restricted to the draft vocabulary, on positions whose
target argmax the draft can propose) + signal losses on step 0 (confidence: BCE against the probe
labels; progress: BCE against t/L; remain: Huber on log(remain + 1), the remain head's pre-activation),
combined by learned uncertainty weights (Kendall et al. 2018): sum_i exp(-s_i) L_i + s_i, so no
hand-tuned ratio between a cross-entropy over 32k tokens and a regression is needed.

AdamW, linear warm-up then constant LR (the public EAGLE-3 recipe), gradient clipping, a checkpoint
every N steps, resume from the last one with the same data order (the order is a function of the
seed and the epoch, so a resumed run reproduces the uninterrupted loss curve), validation metrics.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from torch import nn
from tqdm import tqdm

from ..draft import WEIGHTS_NAME, Eagle3Draft
from ..errors import ConfigError
from ..jsonl import append_jsonl
from .data import Example
from .labels import FILL_MODES
from .loop import drop_metrics_after, epoch_generator, optimizer_step, warmup_schedule
from .ttt import ttt_forward

SAVE_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TrainConfig:
    ttt_steps: int = 7
    step_decay: float = 0.8
    lr: float = 1e-4
    warmup_frac: float = 0.1
    max_steps: int = 1000
    batch_size: int = 4
    max_len: int = 2048
    grad_clip: float = 1.0
    weight_decay: float = 0.0
    ckpt_every: int = 100
    keep_checkpoints: int = 2
    eval_every: int = 200
    val_fraction: float = 0.1
    seed: int = 0
    confidence_fill: str = "hold"
    confidence_confirm: int = 0  # > 0: a right probe is positive only once its answer was re-derived (labels.py)
    freeze_token_head: bool = False
    loss_weighting: str = "uncertainty"  # or "fixed": token + signal_weight * sum(signals)
    signal_weight: float = 1.0
    draft_intermediate: int | None = None  # MLP width of a new draft (None: the target's)
    save_dtype: str = "float32"  # precision of the final OUT/draft (checkpoints stay float32 to resume exactly)

    def validate(self) -> None:
        if self.confidence_fill not in FILL_MODES:
            raise ConfigError(f"confidence fill must be one of {FILL_MODES}, got {self.confidence_fill!r}")
        if self.confidence_confirm < 0:
            raise ConfigError(f"confidence confirm must be >= 0, got {self.confidence_confirm}")
        if self.loss_weighting not in ("uncertainty", "fixed"):
            raise ConfigError(f"loss weighting must be 'uncertainty' or 'fixed', got {self.loss_weighting!r}")
        if self.save_dtype not in SAVE_DTYPES:
            raise ConfigError(f"save dtype must be one of {sorted(SAVE_DTYPES)}, got {self.save_dtype!r}")
        if self.draft_intermediate is not None and self.draft_intermediate <= 0:
            raise ConfigError(f"draft intermediate size must be positive, got {self.draft_intermediate}")
        for name in ("ttt_steps", "max_steps", "batch_size", "max_len", "ckpt_every", "eval_every"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0.0 < self.lr < 1.0 or not 0.0 <= self.warmup_frac < 1.0:
            raise ConfigError("lr must be in (0, 1) and warmup_frac in [0, 1)")


def split_examples(examples: list[Example], val_fraction: float) -> tuple[list[Example], list[Example]]:
    """Validation = whole prompts (every sample of a prompt on the same side), chosen by a hash of the
    prompt id so that adding traces never moves a prompt across the split."""
    if val_fraction <= 0:
        return examples, []
    val = [ex for ex in examples if (ex.key[0] * 2654435761) % 1000 < val_fraction * 1000]
    if not val:
        val = [ex for ex in examples if ex.key[0] == examples[-1].key[0]]
    train = [ex for ex in examples if ex not in val]
    if not train:
        raise ConfigError("too few prompts to split off a validation set; lower --val-fraction")
    return train, val


class LossWeights(nn.Module):
    def __init__(self, names: list[str]) -> None:
        super().__init__()
        self.names = names
        self.log_var = nn.Parameter(torch.zeros(len(names)))

    def forward(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        s = self.log_var.clamp(-6.0, 6.0)
        return sum(torch.exp(-s[i]) * losses[n] + s[i] for i, n in enumerate(self.names) if n in losses)


def collate(examples: list[Example], features, fill: str) -> dict[str, torch.Tensor]:
    b, t = len(examples), max(len(ex.ids) for ex in examples)
    feats = [features(ex) for ex in examples]
    hdim, vd = feats[0][0].shape[-1], feats[0][1].shape[-1]
    batch = {
        "ids": torch.zeros(b, t, dtype=torch.long),
        "fused": torch.zeros(b, t, hdim),
        "target_logits": torch.zeros(b, t, vd),
        "top": torch.zeros(b, t, dtype=torch.long),
        "length": torch.tensor([len(ex.ids) for ex in examples]),
        "prompt_len": torch.tensor([ex.prompt_len for ex in examples]),
    }
    sig = [ex.signal_targets(fill) for ex in examples]
    for name in sig[0]:
        batch[name] = torch.zeros(b, t, dtype=sig[0][name].dtype)
    for row, (ex, (fused, tlog, top)) in enumerate(zip(examples, feats, strict=True)):
        n = len(ex.ids)
        batch["ids"][row, :n] = torch.tensor(ex.ids)
        batch["fused"][row, :n] = fused[:n]
        batch["target_logits"][row, :n] = tlog[:n]
        batch["top"][row, :n] = top[:n]
        for name, v in sig[row].items():
            batch[name][row, :n] = v
    return batch


def _to(batch: dict, device: torch.device) -> dict:
    return batch if device.type == "cpu" else {k: v.to(device) for k, v in batch.items()}


def _shift(x: torch.Tensor, k: int, fill=0) -> torch.Tensor:
    """x[:, k:] padded back to length T (row t of the result is x[:, t + k])."""
    pad = torch.full((x.shape[0], k, *x.shape[2:]), fill, dtype=x.dtype, device=x.device)
    return torch.cat([x[:, k:], pad], dim=1)


def signal_targets(batch: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per signal: (positions supervised, target of the head's pre-activation / probability)."""
    think = batch["think_mask"]
    return {
        "confidence": (batch["conf_mask"] & think, batch["confidence"]),
        "progress": (think, batch["progress"]),
        "remain": (think, torch.log1p(batch["remain"])),
    }


def compute_losses(draft: Eagle3Draft, batch: dict, cfg: TrainConfig, t2d_index: torch.Tensor) -> tuple[dict, dict]:
    """(terms, stats): each loss term as (sum over its supervised positions, their count), so that the
    mean can be taken over the *global* batch when it is split across processes.  Terms: ``token_k``
    for TTT step k (step k, chain t predicts position j = t + 1 + k's distribution) and one per signal."""
    terms: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    stats: dict[str, torch.Tensor] = {}
    pos = torch.arange(batch["ids"].shape[1], device=batch["ids"].device)[None]
    if not cfg.freeze_token_head:
        logits = ttt_forward(draft, batch["fused"], batch["ids"], cfg.ttt_steps)
        in_vocab = t2d_index[batch["top"]] >= 0
        for k, lk in enumerate(logits):
            j = pos + 1 + k
            valid = (j >= batch["prompt_len"][:, None] - 1) & (j <= batch["length"][:, None] - 2)
            valid &= _shift(in_vocab, 1 + k, False)
            tprobs = torch.softmax(_shift(batch["target_logits"], 1 + k), dim=-1)
            ce = -(tprobs * F.log_softmax(lk.float(), dim=-1)).sum(-1)
            terms[f"token_{k}"] = ((ce * valid).sum(), valid.sum().float())
            want = t2d_index[_shift(batch["top"], 1 + k)]
            stats[f"_hit_{k}"] = (lk.argmax(-1) == want) & valid  # per position: for accuracy / evaluate()
            stats[f"_valid_{k}"] = valid
    raw = draft.signal_logits(batch["fused"])
    targets = signal_targets(batch)
    for i, name in enumerate(draft.signals):
        mask, target = targets[name]
        if name == "remain":
            per = F.huber_loss(raw[..., i], target, reduction="none")
        else:  # confidence (probe labels) and progress (soft t/L) are probabilities
            per = F.binary_cross_entropy_with_logits(raw[..., i], target, reduction="none")
        terms[name] = ((per * mask).sum(), mask.sum().float())
    return terms, stats


def reduce_terms(terms: dict, cfg: TrainConfig, world: int = 1) -> tuple[dict, dict]:
    """(means for the gradient, global means for logging).  A mean is sum / global count; for the
    gradient it is also multiplied by the world size, because DDP averages the ranks' gradients
    (sum_r world * sum_r / N / world = the single-process mean).  Terms that nobody supervised this
    step are left out, on every rank alike."""
    names = sorted(terms)
    sums = torch.stack([terms[n][0].detach().float() for n in names])
    counts = torch.stack([terms[n][1].detach().float() for n in names])
    if world > 1:
        torch.distributed.all_reduce(counts)
        torch.distributed.all_reduce(sums)
    grad_means = {n: world * terms[n][0] / counts[i] for i, n in enumerate(names) if counts[i] > 0}
    log_means = {n: sums[i] / counts[i] for i, n in enumerate(names) if counts[i] > 0}
    return _combine_steps(grad_means, cfg), _combine_steps(log_means, cfg)


def _combine_steps(means: dict, cfg: TrainConfig) -> dict:
    """TTT steps into one token loss (step k weighted decay**k); signal terms unchanged."""
    out: dict = {}
    steps = [k for k in range(cfg.ttt_steps) if f"token_{k}" in means]
    if steps:
        out["token"] = sum(cfg.step_decay**k * means[f"token_{k}"] for k in steps)
    out.update({n: v for n, v in means.items() if not n.startswith("token_")})
    return out


def _auc(scores: torch.Tensor, labels: torch.Tensor) -> float | None:
    """Rank-based ROC AUC (Mann-Whitney U), ties averaged; None when only one class is present."""
    pos, neg = int(labels.sum()), int((~labels).sum())
    if pos == 0 or neg == 0:
        return None
    order = torch.argsort(scores)
    ranks = torch.empty_like(scores, dtype=torch.float64)
    ranks[order] = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    sorted_scores = scores[order]
    i = 0
    while i < len(sorted_scores):  # average ranks over ties
        j = i
        while j + 1 < len(sorted_scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        if j > i:
            ranks[order[i : j + 1]] = ranks[order[i : j + 1]].mean()
        i = j + 1
    return float((ranks[labels].sum() - pos * (pos + 1) / 2) / (pos * neg))


@torch.no_grad()
def evaluate(draft, examples, features, cfg: TrainConfig, t2d_index) -> dict:
    draft.eval()
    hits = [0] * cfg.ttt_steps
    counts = [0] * cfg.ttt_steps
    chain_lengths: list[float] = []
    conf_s, conf_l, cut_s, cut_l = [], [], [], []
    prog_err, rem_err, think_n = 0.0, 0.0, 0
    for start in range(0, len(examples), cfg.batch_size):
        batch = _to(collate(examples[start : start + cfg.batch_size], features, cfg.confidence_fill), t2d_index.device)
        _, stats = compute_losses(draft, batch, cfg, t2d_index)
        if not cfg.freeze_token_head:
            alive = torch.ones_like(batch["ids"], dtype=torch.bool)
            length = torch.zeros(batch["ids"].shape, dtype=torch.float)
            for k in range(cfg.ttt_steps):
                hits[k] += int(stats[f"_hit_{k}"].sum())
                counts[k] += int(stats[f"_valid_{k}"].sum())
                alive = alive & stats[f"_hit_{k}"]
                length += alive.float()
            start_ok = stats["_valid_0"]
            chain_lengths += (length[start_ok] + 1.0).tolist()
        raw = draft.signal_logits(batch["fused"])
        targets = signal_targets(batch)
        think = batch["think_mask"]
        for i, name in enumerate(draft.signals):
            r = raw[..., i]
            mask, target = targets[name]
            if name == "confidence":
                conf_s.append(r[mask])
                conf_l.append(target[mask] > 0.5)
                cut_s.append(r[batch["cut_mask"]])
                cut_l.append(target[batch["cut_mask"]] > 0.5)
            elif name == "progress":
                prog_err += float((torch.sigmoid(r[mask]) - target[mask]).abs().sum())
            elif name == "remain":
                rem_err += float((r[mask] - target[mask]).abs().sum())
        think_n += int(think.sum())
    out: dict = {}
    if not cfg.freeze_token_head:
        out["token_acc"] = [round(h / max(c, 1), 4) for h, c in zip(hits, counts, strict=True)]
        out["chain_accept_estimate"] = round(sum(chain_lengths) / max(len(chain_lengths), 1), 3)
    if conf_s:
        scores, labels = torch.cat(conf_s), torch.cat(conf_l)
        out["confidence_auc"] = _auc(scores, labels)
        out["confidence_auc_at_boundaries"] = _auc(torch.cat(cut_s), torch.cat(cut_l))
        out["confidence_positive_rate"] = round(float(labels.float().mean()), 4) if len(labels) else None
    if "progress" in draft.signals and think_n:
        out["progress_mae"] = round(prog_err / think_n, 4)
    if "remain" in draft.signals and think_n:
        out["log_remain_mae"] = round(rem_err / think_n, 4)
    out["examples"] = len(examples)
    draft.train()
    return out


class TrainStep(nn.Module):
    """One training step's forward as a module (draft + loss weights), so that DistributedDataParallel
    can wrap it: DDP syncs the gradients of everything trainable in here."""

    def __init__(self, draft: Eagle3Draft, weights: LossWeights, cfg: TrainConfig, t2d_index: torch.Tensor) -> None:
        super().__init__()
        self.draft, self.weights, self.cfg = draft, weights, cfg
        self.register_buffer("t2d_index", t2d_index, persistent=False)

    def forward(self, batch: dict, world: int) -> tuple[torch.Tensor, dict]:
        terms, stats = compute_losses(self.draft, batch, self.cfg, self.t2d_index)
        losses, global_losses = reduce_terms(terms, self.cfg, world)
        if not losses:
            raise ConfigError("nothing to train on in this batch (no labels, token head frozen)")
        total = self.combine(losses)
        # logged: the global batch's values (identical on every rank and at any world size)
        with torch.no_grad():
            logged = {"loss": float(self.combine(global_losses))}
        logged.update({f"loss_{k}": float(v) for k, v in global_losses.items()})
        acc = torch.tensor([[float(stats[f"_hit_{k}"].sum()), float(stats[f"_valid_{k}"].sum())]
                            for k in range(self.cfg.ttt_steps) if f"_hit_{k}" in stats])  # fmt: skip
        if world > 1 and acc.numel():
            torch.distributed.all_reduce(acc)
        logged.update({f"acc_{k}": float(h / max(n, 1.0)) for k, (h, n) in enumerate(acc.tolist())})
        return total, logged

    def combine(self, losses: dict) -> torch.Tensor:
        if self.cfg.loss_weighting == "uncertainty":
            return self.weights(losses)
        return losses.get("token", 0.0) + self.cfg.signal_weight * sum(v for k, v in losses.items() if k != "token")


def _distributed() -> tuple[int, int, torch.device]:
    """(rank, world size, device), initialising torch.distributed when launched by torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(f"cuda:{local}") if torch.cuda.is_available() else torch.device("cpu")
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return rank, world, device


class Trainer:
    """Single-process, or data-parallel under ``torchrun`` (DDP; gloo on CPU, nccl on GPU).  Every rank
    takes its share of the same global batch, so a run gives the same loss curve at any world size."""

    def __init__(
        self,
        draft: Eagle3Draft,
        train_examples: list[Example],
        val_examples: list[Example],
        features,
        cfg: TrainConfig,
        out_dir: str | Path,
        target=None,
        progress: bool = True,
    ) -> None:
        cfg.validate()
        self.rank, self.world, self.device = _distributed()
        if cfg.batch_size % self.world:
            raise ConfigError(
                f"global batch {cfg.batch_size} does not split evenly over {self.world} processes; "
                "use a --batch that is a multiple of the process count"
            )
        self.draft, self.cfg, self.features, self.target = draft.to(self.device), cfg, features, target
        self.train_ex, self.val_ex = train_examples, val_examples
        self.out = Path(out_dir)
        self.progress = progress and self.rank == 0
        used = draft.draft_to_target
        self.t2d_index = torch.full((draft.cfg.vocab_size,), -1, dtype=torch.long, device=self.device)
        self.t2d_index[used] = torch.arange(len(used), device=self.device)
        names = [*([] if cfg.freeze_token_head else ["token"]), *draft.signals]
        self.weights = LossWeights(names).to(self.device)
        self._set_trainable()
        self.step_module: nn.Module = TrainStep(self.draft, self.weights, cfg, self.t2d_index)
        if self.world > 1:
            self.step_module = torch.nn.parallel.DistributedDataParallel(self.step_module, find_unused_parameters=True)
        params = [p for p in draft.parameters() if p.requires_grad]
        groups = [{"params": params, "weight_decay": cfg.weight_decay}]
        if cfg.loss_weighting == "uncertainty":
            groups.append({"params": list(self.weights.parameters()), "weight_decay": 0.0})
        self.opt = torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95))
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt, warmup_schedule(int(cfg.warmup_frac * cfg.max_steps)))
        self.step = 0
        self.steps_per_epoch = math.ceil(len(train_examples) / cfg.batch_size)

    def _set_trainable(self) -> None:
        for name, p in self.draft.named_parameters():
            p.requires_grad_(not name.startswith("embed_tokens"))
        if self.cfg.freeze_token_head:
            for name, p in self.draft.named_parameters():
                p.requires_grad_(name == "fc.weight")
            h = self.draft.cfg.hidden_size

            def keep_signal_rows(grad: torch.Tensor) -> torch.Tensor:
                grad = grad.clone()
                grad[:h] = 0.0
                return grad

            self.draft.fc.weight.register_hook(keep_signal_rows)

    # -- data order: a pure function of (seed, epoch), so resuming reproduces it ---------------------
    def batch_for(self, step: int) -> list[Example]:
        epoch, i = divmod(step, self.steps_per_epoch)
        order = torch.randperm(len(self.train_ex), generator=epoch_generator(self.cfg.seed, epoch)).tolist()
        idx = order[i * self.cfg.batch_size : (i + 1) * self.cfg.batch_size]
        return [self.train_ex[j] for j in idx]

    # -- checkpoints --------------------------------------------------------------------------------
    @property
    def ckpt_root(self) -> Path:
        return self.out / "checkpoints"

    def latest_checkpoint(self) -> Path | None:
        done = sorted(p for p in self.ckpt_root.glob("step_*") if (p / "state.pt").is_file())
        return done[-1] if done else None

    def save_checkpoint(self) -> Path:
        path = self.ckpt_root / f"step_{self.step:07d}"
        tmp = path.with_name(path.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        self.draft.save_pretrained(tmp)
        state = {
            "step": self.step,
            "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(),
            "loss_weights": self.weights.state_dict(),
            "config": asdict(self.cfg),
        }
        torch.save(state, tmp / "state.pt")  # written last: a checkpoint with state.pt is complete
        shutil.rmtree(path, ignore_errors=True)
        tmp.rename(path)
        for old in sorted(self.ckpt_root.glob("step_*"))[: -self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def resume(self) -> bool:
        path = self.latest_checkpoint()
        if path is None:
            return False
        weights = load_file(str(path / WEIGHTS_NAME))
        missing, unexpected = self.draft.load_state_dict(weights, strict=False)
        if unexpected or [k for k in missing if not k.startswith(("embed_tokens", "rotary"))]:
            raise ConfigError(f"{path}: checkpoint does not fit this draft (missing {missing}, extra {unexpected})")
        state = torch.load(path / "state.pt", weights_only=False)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        self.weights.load_state_dict(state["loss_weights"])
        self.step = int(state["step"])
        if self.rank == 0:
            drop_metrics_after(self.out / "metrics.jsonl", self.step)
        return True

    # -- the loop -----------------------------------------------------------------------------------
    def _log(self, record: dict) -> None:
        append_jsonl(self.out / "metrics.jsonl", [record])

    def train(self) -> dict:
        self.out.mkdir(parents=True, exist_ok=True)
        resumed = self.resume()
        cfg = self.cfg
        self.draft.train()
        bar = tqdm(total=cfg.max_steps, initial=self.step, desc="train", unit="step", disable=not self.progress)
        t0 = time.perf_counter()
        while self.step < cfg.max_steps:
            local = self.batch_for(self.step)[self.rank :: self.world]
            batch = _to(collate(local, self.features, cfg.confidence_fill), self.device)
            total, logged = self.step_module(batch, self.world)
            trainable = [p for p in self.draft.parameters() if p.requires_grad]
            gnorm = optimizer_step(total, self.opt, self.sched, trainable, cfg.grad_clip)
            self.step += 1
            record = {
                "step": self.step,
                **{k: round(v, 6 if k.startswith("loss") else 4) for k, v in logged.items()},
                "grad_norm": round(float(gnorm), 4),
                "lr": self.sched.get_last_lr()[0],
            }
            bar.set_postfix(loss=f"{record['loss']:.3f}", acc0=record.get("acc_0", "-"))
            bar.update(1)
            if self.rank != 0:
                continue  # rank 0 alone logs, checkpoints and validates
            self._log(record)
            if self.step % cfg.ckpt_every == 0 or self.step == cfg.max_steps:
                self.save_checkpoint()
            if self.val_ex and (self.step % cfg.eval_every == 0 or self.step == cfg.max_steps):
                val = evaluate(self.draft, self.val_ex, self.features, cfg, self.t2d_index)
                self._log({"step": self.step, "val": val})
        bar.close()
        if self.world > 1:
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
        if self.rank != 0:
            return {"steps": self.step, "resumed": resumed, "rank": self.rank}
        final = self.out / "draft"
        self.draft.save_pretrained(final, dtype=SAVE_DTYPES[cfg.save_dtype])
        summary = {
            "steps": self.step,
            "resumed": resumed,
            "train_examples": len(self.train_ex),
            "val_examples": len(self.val_ex),
            "wall_s": round(time.perf_counter() - t0, 2),
            "val": evaluate(self.draft, self.val_ex, self.features, cfg, self.t2d_index) if self.val_ex else None,
            "draft": str(final),
        }
        (self.out / "train_summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        return summary
