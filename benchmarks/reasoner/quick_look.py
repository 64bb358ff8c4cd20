"""A first look at a tuned thinking model: does it open and close `<think>`, re-verify, and answer right?

    python benchmarks/reasoner/quick_look.py --model MERGED_DIR --n 6 [--temperature 0] --out FILE.json

Runs the held-out problems of `specexit reasoner problems --split heldout` (testbed test split first)
through the package's own engine (plain decoding), and counts per output: a `<think>` span opened and
closed, re-verification openers in the thinking, thinking tokens, and whether the answer is right.
Not the benchmark (docs/reasoner.md has that plan); a smoke check of what SFT taught.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from specexit.engine import SpecExitGenerator
from specexit.reasoner.compose import RECHECK_OPENERS
from specexit.reasoner.problems import make_mix
from specexit.sampling import SamplingParams
from specexit.scoring import score
from specexit.span import prompt_opens_thinking


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--n", type=int, default=6)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--max-new-tokens", type=int, default=1024)
    ap.add_argument("--dtype", default="bfloat16")
    ap.add_argument("--out", type=Path, required=True)
    a = ap.parse_args()
    torch.set_num_threads(2)
    gen = SpecExitGenerator.from_pretrained(a.model, dtype=a.dtype)
    rows = []
    for p in make_mix(a.n, 0, "heldout")[: a.n]:
        ids = gen.encode_prompt(p.question)
        r = gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=a.max_new_tokens,
                         sampling=SamplingParams(temperature=a.temperature, seed=0))  # fmt: skip
        # the thinking model's template opens <think> in the prompt (reasoner/tokenizer.opening_template)
        opened = prompt_opens_thinking(ids, gen.think_start_id, gen.think_end_id) or gen.think_start_id in r.token_ids
        closed = gen.think_end_id in r.token_ids
        rows.append({
            "id": p.id, "gold": p.answer, "opened": bool(opened), "closed": bool(closed),
            "rechecks": sum(r.reasoning.count(o) for o in RECHECK_OPENERS), "thinking_tokens": r.thinking_tokens,
            "new_tokens": r.new_tokens, "finish": r.finish_reason, "correct": score(r.answer, p.answer)["correct"],
            "answer": r.answer[:120], "text_head": r.text[:300],
        })  # fmt: skip
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "text_head"}), flush=True)
    keys = ("opened", "closed", "correct", "rechecks", "thinking_tokens")
    summary = {k: sum(r[k] for r in rows) / len(rows) for k in keys}
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps({"model": a.model, "temperature": a.temperature, "summary": summary, "rows": rows},
                                indent=2) + "\n")  # fmt: skip
    print("summary", summary)


if __name__ == "__main__":
    main()
