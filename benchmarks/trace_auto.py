"""Trace ``--tree auto`` round by round: what it verified, what the target accepted, what the forward took
and what the planner expected it to take, with its depth factors (docs/performance.md "Ninth session").

    python benchmarks/trace_auto.py --model qwen2.5-coder-0.5b --accept forced --context 2048 \
        --out benchmarks/results/floor/trace-qwen0.5b-bf16-forced-ctx2k.json

Two passes over the prompts (the second starts from what the first learned, as a server's next request
does); one JSON record per round.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floor  # benchmarks/floor.py: its loader, prompts and perfect draft

from specexit import auto_tree
from specexit.cli_options import parse_tree
from specexit.machine import machine_info


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--accept", choices=["draft", "forced"], default="draft")
    ap.add_argument("--context", type=int, default=0)
    ap.add_argument("--prompts", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=96)
    ap.add_argument("--passes", type=int, default=2)
    a, gen, draft = floor.load_from_args(ap, "qwen2.5-coder-0.5b")
    ids_list = floor.prompts(gen, "gsm8k100", a.prompts, a.context)
    refs = None
    if a.accept == "forced":
        refs = [ids + gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=a.new_tokens).token_ids
                for ids in ids_list]  # fmt: skip
    rounds: list[dict] = []
    passes: list[dict] = []  # per finished pass: its speed (a round's "pass" is how many finished before it)
    observe = auto_tree.AutoTreePlanner.observe

    def traced(self, **kw):
        weights = self.tree_weights(kw["tree_probs"], kw["tree_depths"], kw.get("tree_parents"))[2]
        rounds.append({
            "pass": len(passes), "context": self.context, "verified": kw["n_verified"], "tokens": kw["tokens"],
            "expected_tokens": round(1 + sum(weights), 3),
            "draft_steps": kw["draft_steps"], "depths": kw["tree_depths"], "parents": kw.get("tree_parents"),
            "path_probs": [round(p, 3) for p in kw["tree_probs"]],
            "target_ms": round(kw["target_ms"], 2), "expected_ms": round(self.verify_ms(kw["n_verified"]), 2),
            "table_ms": round(self.cost.target(kw["n_verified"], self.context), 2),
            "first_child_factor": [round(self.depth_factor(d), 3) for d in range(1, 7)],
            "sibling_factor": [round(self.depth_factor(d, False), 3) for d in range(1, 4)],
        })  # fmt: skip
        return observe(self, **kw)

    auto_tree.AutoTreePlanner.observe = traced
    for _ in range(a.passes):
        r = floor.run_method(gen, ids_list, "spec", parse_tree("auto"), a.new_tokens, refs)
        passes.append({"ms_per_token": r["ms_per_token"], "tokens_per_round": r["tokens_per_round"]})
        print(f"pass {len(passes) - 1}: {r['ms_per_token']} ms/token, {r['tokens_per_round']} tokens/round")
    res = {"model": a.model, "draft": draft, "dtype": a.dtype, "accept": a.accept, "context": a.context,
           "prompts": a.prompts, "new_tokens": a.new_tokens, "passes": passes, "rounds": rounds,
           "machine": machine_info(), "command": " ".join(["benchmarks/trace_auto.py", *sys.argv[1:]])}  # fmt: skip
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
