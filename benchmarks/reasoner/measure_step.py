"""Cost of one LoRA SFT step and of one batch of sampled solutions for the reasoner recipe
(docs/reasoner.md, "Planning"), on this machine.

    python benchmarks/reasoner/measure_step.py --model DIR [--tokens 512] [--dtypes float32,bfloat16]
        [--batch 16 --new-tokens 256] --out benchmarks/results/reasoner/step_cost.json

SFT step: LoRA rank 16 on q/v plus trainable rows for <think> / </think> in the embedding and the
output head, AdamW, one sequence of --tokens tokens, forward + backward + step; the first step is a
warm-up and not timed.  Sampling: one batched ``generate`` call (left padding, T = 0.7) of --batch
prompts for --new-tokens tokens.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

THINK_IDS = [151667, 151668]  # <think>, </think> in the Qwen3 tokenizer (inside Qwen2.5's 151,936 rows)


def sft_step_seconds(model_dir: str, dtype: torch.dtype, tokens: int, steps: int = 3) -> dict:
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype)
    targets = {"embed_tokens": THINK_IDS}
    if not model.config.tie_word_embeddings:
        targets["lm_head"] = THINK_IDS
    cfg = LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "v_proj"], trainable_token_indices=targets)
    model = get_peft_model(model, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    ids = torch.randint(0, 150_000, (1, tokens))
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i:
            times.append(time.perf_counter() - t0)
    return {"dtype": str(dtype).removeprefix("torch."), "tokens": tokens, "trainable_params": trainable,
            "step_s": round(sorted(times)[len(times) // 2], 3), "steps_timed": steps}  # fmt: skip


def sample_batch_seconds(model_dir: str, dtype: torch.dtype, batch: int, new_tokens: int) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    tok.padding_side = "left"
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype).eval()
    msgs = [[{"role": "user", "content": f"What is {i + 3} times {i + 7}, minus {i}? Think step by step."}]
            for i in range(batch)]  # fmt: skip
    texts = [tok.apply_chat_template(m, tokenize=False, add_generation_prompt=True) for m in msgs]
    enc = tok(texts, return_tensors="pt", padding=True)
    torch.manual_seed(0)
    with torch.inference_mode():
        model.generate(**enc, max_new_tokens=8, do_sample=True, temperature=0.7)  # warm-up
        t0 = time.perf_counter()
        out = model.generate(**enc, max_new_tokens=new_tokens, min_new_tokens=new_tokens, do_sample=True,
                             temperature=0.7, pad_token_id=tok.pad_token_id)  # fmt: skip
        wall = time.perf_counter() - t0
    made = (out.shape[1] - enc["input_ids"].shape[1]) * batch
    return {"dtype": str(dtype).removeprefix("torch."), "batch": batch, "new_tokens": new_tokens,
            "wall_s": round(wall, 2), "tokens_per_s": round(made / wall, 1)}  # fmt: skip


def main() -> None:
    from specexit.machine import machine_info

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--tokens", type=int, default=512)
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--new-tokens", type=int, default=256)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    res: dict = {"model": a.model, "machine": machine_info(), "sft": [], "sampling": []}
    for name in a.dtypes.split(","):
        dtype = getattr(torch, name)
        res["sft"].append(sft_step_seconds(a.model, dtype, a.tokens))
        print("sft", res["sft"][-1], flush=True)
        res["sampling"].append(sample_batch_seconds(a.model, dtype, a.batch, a.new_tokens))
        print("sampling", res["sampling"][-1], flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
