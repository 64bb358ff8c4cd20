"""Training-loop rules shared by the draft trainer (train/trainer.py) and the testbed trainer
(testbed/train.py): the seeded data order, the learning-rate schedule and one optimizer update."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterable
from pathlib import Path

import torch


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random stream of one epoch's data order: a pure function of (seed, epoch), so a resumed run
    draws the same batches as an uninterrupted one."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def warmup_schedule(warmup: int, total: int | None = None, min_ratio: float = 1.0) -> Callable[[int], float]:
    """LR factor of step s (for ``LambdaLR``): linear warm-up, (s + 1) / warmup over the first ``warmup``
    steps (at least 1), then constant (``total`` None) or cosine decay to ``min_ratio`` at step ``total``."""
    warm = max(1, warmup)

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if total is None:
            return 1.0
        t = min(1.0, (step - warm) / max(1, total - warm))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * t))

    return factor


def optimizer_step(
    loss: torch.Tensor,
    opt: torch.optim.Optimizer,
    sched: torch.optim.lr_scheduler.LRScheduler,
    params: Iterable[torch.Tensor],
    grad_clip: float,
) -> torch.Tensor:
    """One update: backward, clip the global gradient norm of ``params``, optimizer step, schedule step.
    Returns the gradient norm before clipping."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    gnorm = torch.nn.utils.clip_grad_norm_(params, grad_clip)
    opt.step()
    sched.step()
    return gnorm


def drop_metrics_after(path: Path, step: int) -> None:
    """On resume: remove the metrics lines logged after the checkpoint's ``step``, so the curve goes on
    from the checkpoint without a repeated or orphaned stretch."""
    if path.exists():
        keep = [ln for ln in path.read_text().splitlines() if ln and json.loads(ln).get("step", 0) <= step]
        path.write_text("".join(ln + "\n" for ln in keep))
