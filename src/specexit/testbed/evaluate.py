"""Evaluate a testbed model on held-out problems: does it overthink the way SpecExit needs?

Measured on test-split problems with plain ``model.generate`` (no specexit engine, so the numbers do not
move when the engine does):

* accuracy and format with thinking and without (``enable_thinking=False``), greedy and sampled;
* thinking length, re-check counts (their spread at temperature > 0 is what an exit policy exploits);
* first passes that were wrong and were fixed (or broken) by a re-check;
* "where the answer first becomes right": on the greedy thinking traces, ``</think>`` is forced after every
  paragraph break and the answer is decoded greedily; the first break after which it is correct is the
  earliest a perfect exit policy could stop.  Accuracy when exiting right after the first pass is the cost of
  a naive "stop at the first re-check" rule.
"""

from __future__ import annotations

import re
import statistics
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import torch

from ..errors import SpecExitError
from ..machine import machine_info, model_record, versions
from .problems import RECHECK, THINK_END, Problem, break_place, make_problems
from .tokenizer import EOS, PARAGRAPH, prompt_text

_ANSWER = re.compile(r"^\n\nThe answer is \\boxed\{(-?\d+)\}\.$")
_NO_THINK_ANSWER = re.compile(r"^The answer is \\boxed\{(-?\d+)\}\.$")
_BOXED = re.compile(r"\\boxed\{(-?\d+)\}")
_RESULT = re.compile(r"= (-?\d+)")


class EvalError(SpecExitError):
    """The model folder cannot be evaluated (missing, or not a testbed-compatible model)."""


@dataclass(frozen=True)
class EvalConfig:
    n: int = 200
    seed: int = 0  # data seed of the test split
    temperature: float = 0.6
    max_new_tokens: int = 768
    batch_size: int = 32
    samples: int = 2  # samples per problem at temperature > 0 (does the re-check count vary?)
    probe: bool = True  # forced-exit probes on the greedy thinking traces
    sample_seed: int = 0


@dataclass
class Completion:
    """One generated completion, parsed."""

    ids: list[int]
    text: str
    ended: bool  # eos generated within the budget
    thinking: str | None  # None: no </think>
    answer: int | None
    format_ok: bool
    think_tokens: int


def load_model(model_dir: str | Path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .train import CHECKPOINT, model_from_checkpoint

    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        if (model_dir / CHECKPOINT).is_file():  # a run stopped between stages
            return model_from_checkpoint(model_dir)
        raise EvalError(f"{model_dir} is not a model folder (no config.json); train one with 'testbed train'")
    tok = AutoTokenizer.from_pretrained(model_dir)
    for t in (EOS, THINK_END, PARAGRAPH):
        if len(tok.encode(t, add_special_tokens=False)) != 1:
            raise EvalError(f"{model_dir}: {t!r} is not a single token; not a testbed tokenizer")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return model, tok


@torch.no_grad()
def generate(
    model, tok, prompts: list[list[int]], max_new_tokens: int, temperature: float, seed: int, batch_size: int
) -> list[tuple[list[int], bool]]:
    """(new ids without eos, ended with eos) per prompt; batches of similar length, left-padded."""
    eos, pad = tok.convert_tokens_to_ids(EOS), tok.pad_token_id
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
    out: list[tuple[list[int], bool]] = [([], False)] * len(prompts)
    for b, start in enumerate(range(0, len(order), batch_size)):
        idx = order[start : start + batch_size]
        n = max(len(prompts[i]) for i in idx)
        ids = torch.tensor([[pad] * (n - len(prompts[i])) + prompts[i] for i in idx])
        mask = torch.tensor([[0] * (n - len(prompts[i])) + [1] * len(prompts[i]) for i in idx])
        sample = temperature > 0
        torch.manual_seed(seed * 1_000_003 + b)
        gen = model.generate(
            input_ids=ids,
            attention_mask=mask,
            max_new_tokens=max_new_tokens,
            do_sample=sample,
            temperature=temperature if sample else None,
            top_k=0 if sample else None,
            top_p=1.0 if sample else None,
            eos_token_id=eos,
            pad_token_id=pad,
        )
        for row, i in enumerate(idx):
            new = gen[row, n:].tolist()
            ended = eos in new
            out[i] = (new[: new.index(eos)] if ended else new, ended)
    return out


def parse(tok, ids: list[int], ended: bool, thinking: bool) -> Completion:
    """Parse a completion of a thinking prompt (``...\\n</think>\\n\\nThe answer is \\boxed{N}.``) or of a
    no-thinking prompt (just the answer sentence)."""
    text = tok.decode(ids, skip_special_tokens=False)
    if not thinking:
        m = _NO_THINK_ANSWER.match(text)
        boxed = _BOXED.findall(text)
        return Completion(ids, text, ended, None, int(boxed[-1]) if boxed else None, bool(m) and ended, 0)
    end_id = tok.convert_tokens_to_ids(THINK_END)
    if end_id not in ids:
        return Completion(ids, text, ended, None, None, False, len(ids))
    cut = ids.index(end_id)
    think = tok.decode(ids[:cut], skip_special_tokens=False)
    rest = tok.decode(ids[cut + 1 :], skip_special_tokens=False)
    boxed = _BOXED.findall(rest)
    paragraphs = think.removesuffix("\n").split(PARAGRAPH)
    ok = (
        ended
        and bool(_ANSWER.match(rest))
        and think.endswith("\n")
        and all(p.strip() and "\n" not in p for p in paragraphs)
    )
    return Completion(ids, text, ended, think, int(boxed[-1]) if boxed else None, ok, cut)


def first_pass_result(thinking: str) -> int | None:
    """The last result written before the first re-check (the first pass's answer)."""
    head = thinking.split(RECHECK)[0]
    found = _RESULT.findall(head)
    return int(found[-1]) if found else None


def _rechecks(c: Completion) -> int | None:
    return None if c.thinking is None else c.thinking.count(RECHECK)


def _summary(problems: list[Problem], comps: list[Completion]) -> dict:
    correct = [c.answer == p.answer for p, c in zip(problems, comps, strict=True)]
    d = {
        "accuracy": sum(correct) / len(correct),
        "format_ok": sum(c.format_ok for c in comps) / len(comps),
        "truncated": sum(not c.ended for c in comps) / len(comps),
    }
    thinks = [c for c in comps if c.thinking is not None]
    if thinks:
        d["mean_thinking_tokens"] = statistics.mean(c.think_tokens for c in thinks)
        d["thinking_tokens_each"] = [c.think_tokens for c in thinks]  # for the length-distribution plot
        rechecks = Counter(c.thinking.count(RECHECK) for c in thinks)
        d["rechecks"] = {str(k): rechecks[k] for k in sorted(rechecks)}
        d["hmm_corrections"] = sum("Hmm," in c.thinking for c in thinks)
        fp_right = fixed = broken = fp_wrong = 0
        for p, c in zip(problems, comps, strict=True):
            if c.thinking is None:
                continue
            fp = first_pass_result(c.thinking)
            if fp == p.answer:
                fp_right += 1
                broken += c.answer != p.answer
            else:
                fp_wrong += 1
                fixed += c.answer == p.answer
        d["first_pass_accuracy"] = fp_right / len(problems)
        d["first_pass_wrong_then_fixed"] = fixed
        d["first_pass_wrong"] = fp_wrong
        d["first_pass_right_then_broken"] = broken
    return d


def probe_exits(model, tok, problems: list[Problem], prompts: list[list[int]], comps: list[Completion], cfg) -> dict:
    """Force ``</think>`` after each paragraph break of each greedy thinking trace and decode the answer
    greedily.  Each break is labelled by the pass it ends a paragraph of (0 = first pass, k = k-th
    re-check); "first right at" is the label of the first break whose forced answer is correct."""
    para, end_id = tok.convert_tokens_to_ids(tok.tokenize(PARAGRAPH))[0], tok.convert_tokens_to_ids(THINK_END)
    jobs: list[tuple[int, int]] = []  # (problem, cut position = tokens kept, the break included)
    for i, c in enumerate(comps):
        if c.thinking is not None:
            jobs += [(i, k + 1) for k, t in enumerate(c.ids[: c.think_tokens]) if t == para]
    outs = generate(
        model, tok, [prompts[i] + comps[i].ids[:k] + [end_id] for i, k in jobs], 16, 0.0, 0, cfg.batch_size * 2
    )
    # per trace: (cut, answer right, re-checks before the break, where the break is: see break_place)
    probes: dict[int, list[tuple[int, bool, int, str]]] = {}
    # "answered" = a boxed answer within the probe's 16 tokens, not more re-checking after </think>
    by_place: dict[str, list[tuple[bool, bool]]] = {"first_pass": [], "pass_end": [], "mid_recheck": []}
    for (i, k), (ids, _) in zip(jobs, outs, strict=True):
        boxed = _BOXED.findall(tok.decode(ids))
        ok = bool(boxed) and int(boxed[-1]) == problems[i].answer
        c = comps[i]
        before, after = tok.decode(c.ids[:k]), tok.decode(c.ids[k : c.think_tokens])
        place = break_place(before, after)
        probes.setdefault(i, []).append((k, ok, before.count(RECHECK), place))
        by_place[place].append((bool(boxed), ok))
    first_right: Counter[str] = Counter()
    saved: list[float] = []
    first_right_frac: list[float | None] = []  # per trace: share of its thinking before the answer is right
    at_first_pass = n_traces = 0
    for i, c in enumerate(comps):
        if c.thinking is None:
            continue
        n_traces += 1
        final_ok = c.answer == problems[i].answer
        exit_first = final_ok  # no re-check: exiting after the first pass is the natural end
        hit = None
        for k, ok, n_pass, place in probes.get(i, []):
            if n_pass == 0 and place == "pass_end":
                exit_first = ok
            if ok and hit is None:
                hit = k
                first_right["first_pass" if n_pass == 0 else f"recheck_{n_pass}"] += 1
        if hit is None:
            first_right["natural_end" if final_ok else "never"] += 1
        if hit is not None or final_ok:
            saved.append(1 - (hit if hit is not None else c.think_tokens) / max(1, c.think_tokens))
            first_right_frac.append(1 - saved[-1])
        else:
            first_right_frac.append(None)
        at_first_pass += exit_first
    order = ["first_pass", *sorted(k for k in first_right if k.startswith("recheck_")), "natural_end", "never"]
    return {
        "n_probes": len(jobs),
        "first_right_at": {k: first_right[k] for k in order if first_right[k]},
        "accuracy_exit_after_first_pass": at_first_pass / max(1, n_traces),
        "oracle_exit_thinking_saved": statistics.mean(saved) if saved else None,
        "probes_by_place": {
            place: {
                "n": len(v),
                "answered": sum(a for a, _ in v) / len(v),
                "accuracy": sum(ok for _, ok in v) / len(v),
            }
            for place, v in by_place.items()
            if v
        },
        "first_right_fraction_each": first_right_frac,
    }


def evaluate(model_dir: str | Path, cfg: EvalConfig | None = None, progress: bool = True) -> dict:
    """All the numbers of the module docstring, as one JSON-able dict."""
    cfg = cfg or EvalConfig()
    model, tok = load_model(model_dir)
    problems = make_problems(cfg.n, cfg.seed, "test")

    def enc(thinking: bool) -> list[list[int]]:
        return [tok.encode(prompt_text(tok, p.question, thinking), add_special_tokens=False) for p in problems]

    think_prompts, plain_prompts = enc(True), enc(False)
    report: dict = {"model": str(model_dir), "n": cfg.n, "test_seed": cfg.seed, "temperature": cfg.temperature}
    # what the report was measured on and with which weights (docs/benchmarks.md, run.json)
    report.update(machine=machine_info(), versions=versions(), weights=model_record(model_dir, "float32"))
    greedy_think = None
    runs = [("think_greedy", True, 0.0), ("think_sampled", True, cfg.temperature)]
    runs += [("no_think_greedy", False, 0.0), ("no_think_sampled", False, cfg.temperature)]
    for name, thinking, temp in runs:
        if progress:
            print(f"[testbed eval] {name} ...", flush=True)
        budget = cfg.max_new_tokens if thinking else 32
        k = cfg.samples if temp > 0 else 1
        prompts = (think_prompts if thinking else plain_prompts) * k
        gens = generate(model, tok, prompts, budget, temp, cfg.sample_seed, cfg.batch_size)
        comps = [parse(tok, ids, ended, thinking) for ids, ended in gens]
        report[name] = _summary(problems * k, comps)
        if k > 1 and thinking:  # sample j of problem i is comps[j * n + i]
            counts = [{_rechecks(comps[j * cfg.n + i]) for j in range(k)} for i in range(cfg.n)]
            report[name]["samples_per_problem"] = k
            report[name]["problems_with_varying_rechecks"] = sum(len(c) > 1 for c in counts) / cfg.n
        if name == "think_greedy":
            greedy_think = comps
            report["examples"] = [
                {"question": p.question, "answer": p.answer, "completion": c.text}
                for p, c in list(zip(problems, comps, strict=True))[:3]
            ]
    if cfg.probe and greedy_think is not None:
        if progress:
            print("[testbed eval] forced-exit probes ...", flush=True)
        report["exit_probes"] = probe_exits(model, tok, problems, think_prompts, greedy_think, cfg)
    return report


def format_report(r: dict) -> str:
    """A short human-readable table of the headline numbers."""
    lines = [f"testbed eval: {r['model']}  (n={r['n']} test problems, T={r['temperature']}; sampled rows: all samples)"]
    for name in ("think_greedy", "think_sampled", "no_think_greedy", "no_think_sampled"):
        s = r.get(name)
        if not s:
            continue
        line = f"  {name:17s} acc {s['accuracy']:.3f}  format {s['format_ok']:.3f}"
        if "mean_thinking_tokens" in s:
            line += (
                f"  think_tok {s['mean_thinking_tokens']:.0f}  rechecks {s['rechecks']}"
                f"  first_pass_acc {s['first_pass_accuracy']:.3f}  fixed {s['first_pass_wrong_then_fixed']}"
                f"/{s['first_pass_wrong']}  broken {s['first_pass_right_then_broken']}  hmm {s['hmm_corrections']}"
            )
            if "problems_with_varying_rechecks" in s:
                line += f"  varying_rechecks {s['problems_with_varying_rechecks']:.2f}"
        lines.append(line)
    if "exit_probes" in r:
        p = r["exit_probes"]
        saved = p["oracle_exit_thinking_saved"]
        lines.append(
            f"  forced-exit probes ({p['n_probes']}): answer first right at {p['first_right_at']}; accuracy if "
            f"exiting right after the first pass {p['accuracy_exit_after_first_pass']:.3f}; an oracle exit "
            f"saves {0 if saved is None else saved:.2f} of the thinking tokens of solved problems"
        )
        for place, v in p.get("probes_by_place", {}).items():
            lines.append(
                f"    probes at {place:11s} n={v['n']:5d}  answered {v['answered']:.3f}  accuracy {v['accuracy']:.3f}"
            )
    return "\n".join(lines)
