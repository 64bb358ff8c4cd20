"""What one speculative round costs on this machine: measured once per (model, dtype, device, threads,
CPU), cached on disk, read by the adaptive tree (``auto_tree.py``).

Whether speculation pays depends on the hardware far more than on the model: a verification forward of
5 tokens costs about 1.1x a 1-token one on a GPU, 2.0-2.2x on a 2-core AVX2-only CPU.  So the cost of
a target forward of k new tokens is *measured* (k on a grid, at a short and at a long context, the
median of a few interleaved runs), and so are one draft step over m tree nodes and one draft commit; the
planner interpolates between the grid points and between the two contexts (attention reads every cached
key, so each extra verified token costs more deep in a long trace: on Qwen2.5-0.5B at a 2k context 9
verified tokens took 163 ms and 5 took 124 ms, where a table timed at 128 positions predicted 1.22x and
1.12x of a 1-token forward; docs/performance.md) and corrects the curve online by what each round really
took (a busier machine).
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from .machine import cache_dir, cpu_model, isa_flags

TARGET_SIZES = (1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64)
CONTEXT = 128  # positions already in the cache while timing (a short prompt)
LONG_CONTEXT = 1024  # ... and a second time, deep in a trace (costs between and beyond are linear in it)
COST_VERSION = 3  # bump when what is measured changes (v2: engine attention, packed draft decoder; v3: two contexts)


@dataclass(frozen=True)
class RoundCost:
    """Milliseconds: a target forward of ``k`` new tokens (grid ``sizes``), a draft step over ``m``
    nodes (grid ``draft_sizes``), a draft commit of ``t`` positions (grid ``commit_sizes``)."""

    key: str
    sizes: tuple[int, ...]
    target_ms: tuple[float, ...]
    draft_sizes: tuple[int, ...]
    draft_step_ms: tuple[float, ...]
    commit_sizes: tuple[int, ...]
    commit_ms: tuple[float, ...]
    facts: dict  # what the key was made of (for the reader of the cache file)
    # the same forwards with ``long_context`` positions in the cache (empty: measured at one context only)
    target_long_ms: tuple[float, ...] = ()
    short_context: int = CONTEXT
    long_context: int = LONG_CONTEXT

    def target(self, k: int, context: int | None = None) -> float:
        """A target forward of k new tokens over ``context`` cached positions (None: the short context)."""
        short = _interp(self.sizes, self.target_ms, k)
        if context is None or not self.target_long_ms or context <= self.short_context:
            return short
        long = _interp(self.sizes, self.target_long_ms, k)
        frac = (context - self.short_context) / (self.long_context - self.short_context)
        return max(short + (long - short) * frac, short)  # linear in the keys read, never below the short cost

    def draft_step(self, m: int) -> float:
        return _interp(self.draft_sizes, self.draft_step_ms, m)

    def commit(self, t: int) -> float:
        return _interp(self.commit_sizes, self.commit_ms, t)

    def ratio(self, k: int) -> float:
        """A k-token verification forward over a 1-token one."""
        return self.target(k) / self.target(1)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> RoundCost:
        tup = ("sizes", "target_ms", "draft_sizes", "draft_step_ms", "commit_sizes", "commit_ms", "target_long_ms")
        return RoundCost(**{k: tuple(v) if k in tup else v for k, v in d.items()})


def _interp(xs: tuple[int, ...], ys: tuple[float, ...], x: float) -> float:
    """Piecewise linear through the points, extended linearly beyond the last two (cost keeps growing)."""
    if len(xs) == 1 or x <= xs[0]:
        return ys[0]
    for (x0, y0), (x1, y1) in itertools.pairwise(zip(xs, ys, strict=True)):
        if x <= x1:
            return y0 + (y1 - y0) * (x - x0) / (x1 - x0)
    (x0, y0), (x1, y1) = (xs[-2], ys[-2]), (xs[-1], ys[-1])
    return y1 + max(y1 - y0, 0.0) * (x - x1) / (x1 - x0)


def monotone(ys: list[float]) -> list[float]:
    """The non-decreasing sequence closest to ``ys`` in least squares (pool adjacent violators): a forward
    of more tokens never costs less, and one slow sample must not make a single size look dear."""
    blocks: list[list[float]] = []  # [sum, count]
    for y in ys:
        blocks.append([y, 1.0])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] > blocks[-1][0] / blocks[-1][1]:
            s, n = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += n
    return [s / n for s, n in blocks for _ in range(int(n))]


def interleaved_ms(fns: list, reps: int, warmup: int = 1) -> list[float]:
    """Median ms of each function, timed in turns (a busy moment slows every size alike, not one)."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(reps):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            times[i].append((time.perf_counter() - t0) * 1e3)
    return [statistics.median(t) for t in times]


def cost_facts(target, draft, device: str = "cpu") -> dict:
    """What a measurement depends on: the model shapes, dtypes, device, threads, CPU, torch."""
    tcfg = target.config
    names = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
             "vocab_size")  # fmt: skip
    shape = {k: getattr(tcfg, k, None) for k in names}
    draft_facts = None
    if draft is not None:
        draft_facts = {"fc": list(draft.fc.weight.shape), "lm_head": list(draft.lm_head.weight.shape),
                       "dtype": str(draft.fc.weight.dtype).removeprefix("torch.")}  # fmt: skip
    return {"version": COST_VERSION, "target": shape, "target_dtype": str(target.dtype).removeprefix("torch."),
            "draft": draft_facts, "device": device, "threads": torch.get_num_threads(), "cpu": cpu_model(),
            "isa": isa_flags(), "torch": torch.__version__}  # fmt: skip


def cost_key(facts: dict) -> str:
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def costs_dir() -> Path:
    return cache_dir() / "round-cost"


def median_ms(fn, reps: int, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(out)


@torch.inference_mode()
def measure(target, draft, branching: int = 8, reps: int = 5, sizes: tuple[int, ...] = TARGET_SIZES) -> RoundCost:
    """Time the pieces of a round on random tokens (the cost does not depend on their values)."""
    from .proposer import DraftProposer, TreeConfig  # the proposer imports the draft: only when measuring
    from .sampling import SamplingParams
    from .tree import DraftTree, verification_inputs

    g = torch.Generator().manual_seed(0)
    vocab = target.vocab_size
    # the long context where the model's positions allow it (a small test model may hold fewer)
    room = int(getattr(target.config, "max_position_embeddings", None) or LONG_CONTEXT + max(sizes) + 1)
    long_context = min(LONG_CONTEXT, room - max(sizes) - 1)
    cache = target.new_cache(max(long_context, CONTEXT) + max(sizes) + 1)
    prompt = torch.randint(0, vocab, (1, CONTEXT), generator=g)
    _, hidden = target.forward(prompt, cache)

    def forwards(past: int) -> list:  # k new tokens = 1 pending + a chain of k - 1 drafts, masked as the engine does
        out = []
        for k in sizes:
            tree = DraftTree(tokens=[1] * (k - 1), parents=[i - 1 for i in range(k - 1)], depths=list(range(1, k)))
            ids, pos, mask = verification_inputs([1], tree, past, target.dtype)

            def run(ids=ids, pos=pos, mask=mask) -> None:
                target.forward(ids, cache, pos, mask)
                cache.keep_first(past)

            out.append(run)
        return out

    target_ms = monotone(interleaved_ms(forwards(CONTEXT), reps))
    long_ms: list[float] = []
    if long_context >= 2 * CONTEXT:
        target.forward(torch.randint(0, vocab, (1, long_context - CONTEXT), generator=g), cache)  # deep in a trace
        long_ms = monotone(interleaved_ms(forwards(long_context), reps))
    # measuring is not decoding: the forwards above do not count
    target.forward_calls -= 2 * (reps + 1) * len(sizes) + 2 if long_ms else (reps + 1) * len(sizes) + 1
    draft_sizes, draft_ms, commit_sizes, commit_ms = (1,), (0.0,), (1,), (0.0,)
    if draft is not None:
        fused, _ = draft.fuse(hidden)
        branching = max(1, branching)
        draft_sizes = tuple(sorted({1, branching}))
        commit_sizes = (1, 8)
        draft_ms, commit_ms = [], []
        for m in draft_sizes:
            shallow = DraftProposer(draft, TreeConfig(total_tokens=m, depth=1, branching=m), SamplingParams())
            deep = DraftProposer(draft, TreeConfig(total_tokens=2 * m, depth=2, branching=m), SamplingParams())
            for p in (shallow, deep):
                p.commit(fused, prompt[0].tolist())
            draft_ms.append(max(median_ms(deep.propose, reps) - median_ms(shallow.propose, reps), 0.0))
        p = DraftProposer(draft, TreeConfig(), SamplingParams())
        p.commit(fused, prompt[0].tolist())
        for t in commit_sizes:

            def commit(t=t) -> None:
                p.commit(fused[:t], prompt[0, :t].tolist())
                p.kv.crop(CONTEXT)

            commit_ms.append(median_ms(commit, reps))
    facts = cost_facts(target, draft)
    return RoundCost(key=cost_key(facts), sizes=tuple(sizes), target_ms=tuple(target_ms),
                     draft_sizes=tuple(draft_sizes), draft_step_ms=tuple(draft_ms), commit_sizes=tuple(commit_sizes),
                     commit_ms=tuple(commit_ms), facts=facts, target_long_ms=tuple(long_ms),
                     long_context=long_context)  # fmt: skip


def load_or_measure(target, draft, branching: int = 8, refresh: bool = False) -> tuple[RoundCost, bool]:
    """The cached measurement for this model/dtype/device/CPU, else a new one (written atomically).
    Returns (costs, measured_now)."""
    facts = cost_facts(target, draft)
    path = costs_dir() / f"{cost_key(facts)}.json"
    if not refresh:
        try:
            cost = RoundCost.from_dict(json.loads(path.read_text()))
            if cost.facts == facts and max(cost.draft_sizes) >= min(branching, 8):
                return cost, False
        except (OSError, ValueError, TypeError, KeyError):
            pass  # missing or unreadable: measure again
    cost = measure(target, draft, branching=branching)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cost.to_dict(), indent=1) + "\n")
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache only costs a measurement per run
    return cost, True
