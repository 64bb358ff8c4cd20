"""Pick the draft tree for a target on this machine: plain decoding vs speculative decoding with several
trees on the same few problems (greedy, so every tree must reproduce plain decoding's tokens).

A big tree accepts more tokens per round but makes the target verify more tokens per forward; on a CPU
the forward's cost grows with the tokens verified much sooner than on a GPU, so the best tree is smaller.

    python benchmarks/zoo/choose_tree.py --target T --draft D --dataset gsm8k100 --limit 2 \
        --trees "60,6,10;16,5,4;8,4,2;chain:4" --dtype bfloat16 --answer-trigger 'The final answer is \\boxed{'
"""

from __future__ import annotations

import argparse
import json
import statistics

import torch

from specexit.answer_trigger import add_answer_trigger_args, answer_trigger_kwargs
from specexit.bench.datasets import load_dataset
from specexit.cli_options import parse_tree
from specexit.engine import SpecExitGenerator


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--target", required=True)
    ap.add_argument("--draft", required=True)
    ap.add_argument("--dataset", default="gsm8k100")
    ap.add_argument("--limit", type=int, default=2)
    ap.add_argument("--offset", type=int, default=0, help="skip this many problems first")
    ap.add_argument("--trees", default="60,6,10;16,5,4;8,4,2;chain:4")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--max-new-tokens", type=int, default=768)
    ap.add_argument("--threads", type=int, default=1)
    add_answer_trigger_args(ap)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    gen = SpecExitGenerator.from_pretrained(a.target, a.draft, dtype=a.dtype, **answer_trigger_kwargs(a))
    problems = load_dataset(a.dataset)[a.offset : a.offset + a.limit]
    rows = []
    for p in problems:
        ids = gen.encode_prompt(p.question)
        ref = gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=a.max_new_tokens)
        row = {"problem": p.id, "tokens": ref.new_tokens, "vanilla_s": ref.wall_s, "trees": {}}
        for spec in a.trees.split(";"):
            r = gen.generate(input_ids=ids, mode="spec", max_new_tokens=a.max_new_tokens, tree=parse_tree(spec))
            row["trees"][spec] = {
                "s": r.wall_s,
                "accept": r.mean_accept_length,
                "same_tokens": r.token_ids == ref.token_ids,
            }
        rows.append(row)
        print(json.dumps(row), flush=True)
    print("\n| tree | mean accept length | s / problem | speed-up vs vanilla | same tokens |")
    print("|---|---|---|---|---|")
    van = statistics.mean(r["vanilla_s"] for r in rows)
    print(f"| vanilla | 1 | {van:.1f} | 1.00x | – |")
    for spec in a.trees.split(";"):
        s = statistics.mean(r["trees"][spec]["s"] for r in rows)
        acc = statistics.mean(r["trees"][spec]["accept"] for r in rows)
        same = sum(r["trees"][spec]["same_tokens"] for r in rows)
        print(f"| {spec} | {acc:.2f} | {s:.1f} | {van / s:.2f}x | {same}/{len(rows)} |")


if __name__ == "__main__":
    main()
