"""Forced exits on the same thinking text for several testbed models: after each paragraph break of the
generator's trace of a held-out problem, force ``</think>`` and decode 16 tokens greedily.  Grouped by
where the break is (inside the first pass, at a pass end, inside a re-check): how often the model answers
at once (a boxed answer, not more re-checking) and how often that answer is right.  Teacher-forced text
makes models comparable: the exits land at the same places for all of them.

    python benchmarks/testbed_probe_places.py MODEL_DIR [MODEL_DIR ...] [--n 60] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from specexit.testbed import problems as P
from specexit.testbed.evaluate import EvalConfig, load_model, parse, probe_exits
from specexit.testbed.tokenizer import prompt_text


def probe_places(model_dir: str, n: int) -> dict:
    model, tok = load_model(model_dir)
    problems = P.make_problems(n, split="test")
    prompts = [tok.encode(prompt_text(tok, p.question, True), add_special_tokens=False) for p in problems]
    comps = [parse(tok, tok.encode(P.make_trace(p).completion), True, True) for p in problems]
    return probe_exits(model, tok, problems, prompts, comps, EvalConfig(batch_size=16))["probes_by_place"]


def reference(n: int) -> dict:
    """What the generator's own rule answers at the same breaks (the last completed pass): the ceiling."""
    by: dict[str, list[bool]] = {}
    for prob in P.make_problems(n, split="test"):
        t = P.make_trace(prob)
        for offset, ans in t.boundaries:
            place = P.break_place(t.completion[:offset], t.completion[offset:])
            by.setdefault(place, []).append(ans == prob.answer)
    return {k: {"n": len(v), "answered": 1.0, "accuracy": sum(v) / len(v)} for k, v in by.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+")
    ap.add_argument("--n", type=int, default=60, help="held-out test problems (data seed 0)")
    ap.add_argument("--json", default=None, help="also write the table as JSON")
    a = ap.parse_args()
    torch.set_num_threads(1)
    out = {"generator rule (last completed pass)": reference(a.n)}
    out |= {m: probe_places(m, a.n) for m in a.models}
    print("| model | break | probes | answered at once | right |")
    print("|---|---|---|---|---|")
    for m, places in out.items():
        for place, v in places.items():
            print(f"| {m} | {place} | {v['n']} | {v['answered']:.1%} | {v['accuracy']:.1%} |")
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
