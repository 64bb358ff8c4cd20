"""The micro-measurements behind docs/performance.md "Sixth session" (issue #22), in one run.

- attention: CPU SDPA (GQA) vs the engine's short-query attention (``attention.grouped_attention``)
  per layer, Qwen2.5-0.5B's shape (14 query / 2 KV heads, head dim 64), bf16 inputs, with their max error
  against a float64 reference;
- products: one small matrix product (the draft's shapes) in fp32 and bf16: a fixed cost per call;
- draft: a draft proposal (chain of 4) and a commit of 3 tokens over a long context, with the packed
  decoder (``draft_decode.py``) and with the draft module's own layer / logits;
- target: one decoding step after a long context with the engine's attention and with SDPA.

    python benchmarks/engine_pieces.py --out benchmarks/results/engine_pieces/epyc-avx512bf16.json
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from torch.nn import functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floor

from specexit.attention import ENGINE_ATTENTION, grouped_attention
from specexit.machine import machine_info
from specexit.proposer import DraftProposer, TreeConfig
from specexit.round_cost import median_ms as cost_median_ms
from specexit.sampling import SamplingParams


def median_ms(fn, reps: int = 30) -> float:
    return round(cost_median_ms(fn, reps, warmup=3), 4)


def attention_rows() -> list[dict]:
    hq, hk, d, dt = 14, 2, 64, torch.bfloat16
    g = torch.Generator().manual_seed(0)
    rows = []
    for keys in (128, 512, 2048, 8192):
        for t in (1, 5, 17):
            q = torch.randn(1, hq, t, d, generator=g).to(dt)
            k = torch.randn(1, hk, keys + t, d, generator=g).to(dt)
            v = torch.randn(1, hk, keys + t, d, generator=g).to(dt)
            allowed = torch.ones(t, keys + t, dtype=torch.bool)
            allowed[:, keys:] = torch.ones(t, t, dtype=torch.bool).tril()
            fmask = torch.zeros(t, keys + t).masked_fill(~allowed, torch.finfo(dt).min)
            rep = hq // hk
            kr, vr = k[0].double().repeat_interleave(rep, 0), v[0].double().repeat_interleave(rep, 0)
            ref = F.scaled_dot_product_attention(q[0].double(), kr, vr, attn_mask=allowed)
            bmask = fmask.to(dt)[None, None]

            def sdpa(q=q, k=k, v=v, m=bmask):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=m, enable_gqa=True)[0]

            def mine(q=q, k=k, v=v, m=fmask):
                return grouped_attention(q[0], k[0], v[0], m, d**-0.5, float32_inputs=True)

            rows.append({"keys": keys, "queries": t, "sdpa_ms": median_ms(sdpa), "matmul_ms": median_ms(mine),
                         "sdpa_max_err": round((sdpa().double() - ref).abs().max().item(), 5),
                         "matmul_max_err": round((mine().double() - ref).abs().max().item(), 5)})  # fmt: skip
    return rows


def product_rows() -> list[dict]:
    rows = []
    for k, n in ((1152, 576), (576, 1536), (1536, 576), (576, 4096), (1792, 896), (896, 4096)):
        row = {"shape": f"[1,{k}]x[{k},{n}]"}
        for dt in (torch.float32, torch.bfloat16):
            w, x = torch.randn(n, k).to(dt), torch.randn(1, k).to(dt)
            row[f"{str(dt).removeprefix('torch.')}_us"] = round(1e3 * median_ms(lambda x=x, w=w: F.linear(x, w), 50))
        rows.append(row)
    return rows


class _ModuleDecoder:
    """The draft module's own layer and head, in the packed decoder's place."""

    def __init__(self, draft) -> None:
        self.layer, self.logits = draft.layer, draft.logits


@torch.inference_mode()
def draft_rows(model: str, context: int) -> dict:
    gen, desc = floor.load(model, "bfloat16")
    target, draft = gen.target, gen.draft
    ids = torch.randint(0, 1000, (1, context), generator=torch.Generator().manual_seed(0))
    cache = target.new_cache(context + 8)
    _, hidden = target.forward(ids, cache)
    fused, _ = draft.fuse(hidden)
    out = {"model": model, "draft": desc, "context": context}
    for name in ("packed", "module"):
        p = DraftProposer(draft, TreeConfig(total_tokens=4, depth=4, branching=1, chain=True), SamplingParams())
        if name == "module":
            p.decoder = _ModuleDecoder(draft)
        p.commit(fused[:-3], ids[0, 1:-2].tolist())

        def commit3(p=p) -> None:
            p.commit(fused[-3:], [5, 6, 7])
            p.kv.crop(context - 3)

        out[f"{name}_commit3_ms"] = median_ms(commit3)
        p.commit(fused[-3:], [5, 6, 7])
        out[f"{name}_chain4_propose_ms"] = median_ms(p.propose)
    # one decoding step after the context, with the engine's attention and with SDPA
    for impl in (ENGINE_ATTENTION, "sdpa"):
        target.model.set_attn_implementation(impl)

        def step() -> None:
            target.forward(torch.tensor([[5]]), cache, last_only=True)
            cache.keep_first(context)

        out[f"target_step_ms_{'engine' if impl == ENGINE_ATTENTION else 'sdpa'}"] = median_ms(step, reps=10)
    target.model.set_attn_implementation(ENGINE_ATTENTION)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res = {"attention": attention_rows(), "products": product_rows(),
           "draft_and_step": [draft_rows(m, a.context) for m in ("smollm2-135m", "qwen2.5-coder-0.5b")],
           "threads": a.threads, "machine": machine_info(), "command": " ".join(sys.argv)}  # fmt: skip
    floor.emit(res, a.out)


if __name__ == "__main__":
    main()
