"""What one draft step costs at a given context (docs/performance.md "Tenth session"): the draft's decoder
layer and head for T tree nodes over a draft cache of C positions, torch ops only (no planning, no masks
built).  Against the target's forward at that context (the floor rows' vanilla ms/token) it says what
share of a round k draft steps take whatever the engine's bookkeeping: a lower bound on the overhead.

    python benchmarks/draft_step_cost.py --model smollm2-135m --context 2048 \
        --out benchmarks/results/floor/draft-step-smollm2-bf16-ctx2k.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import floor  # benchmarks/floor.py: its loader

from specexit.draft import DraftKV
from specexit.draft_decode import decoder_for
from specexit.machine import machine_info


def _ms(fn, n: int) -> float:
    for _ in range(3):
        fn()
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--context", type=int, default=2048)
    ap.add_argument("--repeats", type=int, default=50)
    a, gen, draft = floor.load_from_args(ap, "smollm2-135m")
    dec = decoder_for(gen.draft)
    hidden, c = gen.draft.cfg.hidden_size, a.context
    rows = {}
    with torch.inference_mode():
        kv = DraftKV()
        dec.layer(torch.randn(c, hidden, dtype=dec.dtype), torch.randint(0, 1000, (c,)), torch.arange(c), kv, None)
        kv.commit()
        for t in (1, 2, 4, 8):
            h, ids = torch.randn(t, hidden, dtype=dec.dtype), torch.randint(0, 1000, (t,))
            pos, mask = torch.full((t,), c), torch.zeros(t, c + t, dtype=dec.dtype)

            def step(h=h, ids=ids, pos=pos, mask=mask) -> None:
                dec.logits(dec.layer(h, ids, pos, kv, mask))
                kv.drop_scratch()

            rows[t] = round(_ms(step, a.repeats), 3)
    command = " ".join(["benchmarks/draft_step_cost.py", *sys.argv[1:]])
    res = {"model": a.model, "draft": draft, "dtype": a.dtype, "context": c, "draft_step_ms_by_nodes": rows,
           "machine": machine_info(), "command": command}  # fmt: skip
    print(json.dumps({k: v for k, v in res.items() if k != "machine"}, indent=1))
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__":
    main()
