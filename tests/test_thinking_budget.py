"""The thinking budget that ends at a boundary (specexit.thinking_budget) in the policy and the engine."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from specexit.boundaries import BoundaryDetector
from specexit.exit_policy import ExitConfig, ExitPolicy
from specexit.sampling import SamplingParams

ASSETS = Path(__file__).resolve().parents[1] / "src" / "specexit" / "assets"
THINK_START, THINK_END = 0, 1


def _stream(seed: int) -> list[str]:
    """Thinking text as tokens: paragraphs of 2-4 sentences of 4-9 words; words of 1-3 tokens (a word's
    first token starts with a space, its others do not)."""
    rng = random.Random(seed)
    toks: list[str] = []
    for _ in range(12):
        for s in range(rng.randint(2, 4)):
            for w in range(rng.randint(4, 9)):
                parts = rng.randint(1, 3)
                first = ("" if (s == 0 and w == 0) else " ") + "ab"
                toks += [first] + ["cd"] * (parts - 1)
            toks[-1] += "."
        toks.append("\n\n")
    return toks


def _run(texts: list[str], cfg: ExitConfig, round_size: int) -> tuple[int, int | None, str | None]:
    """Feed the stream in rounds of ``round_size`` tokens; (thinking kept, tokens kept, boundary kind)."""
    vocab = {t: i + 2 for i, t in enumerate(dict.fromkeys(texts))}
    inv = {i: t for t, i in vocab.items()}
    det = BoundaryDetector(lambda i: inv.get(i, ""))
    pol = ExitPolicy(cfg, det, THINK_START, THINK_END, enabled=False)
    pol.start([THINK_START])
    ids = [vocab[t] for t in texts]
    done = 0
    for k in range(0, len(ids), round_size):
        d = pol.step(ids[k : k + round_size], None)
        if d.exit:
            return pol.thinking_tokens, done + d.keep, d.record.boundary
        done += len(ids[k : k + round_size])
    return pol.thinking_tokens, None, None


@pytest.mark.parametrize("round_size", [1, 3, 7])
def test_the_budget_holds_and_never_cuts_mid_word(round_size):
    for seed in range(20):
        texts = _stream(seed)
        for n in (30, 57, 100, 181, 250):
            thinking, kept, kind = _run(texts, ExitConfig(thinking_budget=n, budget_at="boundary"), round_size)
            assert kept is not None and thinking == kept <= n, (seed, n, thinking)
            # the kept text ends at a word end: the next token starts a new word or paragraph
            nxt = texts[kept] if kept < len(texts) else " "
            assert nxt[:1].isspace() or texts[kept - 1] == "\n\n", (seed, n, kind, texts[kept - 3 : kept + 1])


def test_the_budget_prefers_a_paragraph_end_to_a_hard_cut():
    kinds, hard_mid_word = [], 0
    for seed in range(40):
        texts = _stream(seed)
        for n in (120, 200):
            _, _, kind = _run(texts, ExitConfig(thinking_budget=n, budget_at="boundary"), 5)
            kinds.append(kind)
            _, kept_hard, _ = _run(texts, ExitConfig(thinking_budget=n), 5)
            hard_mid_word += not (texts[kept_hard][:1].isspace() or texts[kept_hard - 1] == "\n\n")
    assert kinds.count("budget-paragraph") >= 0.5 * len(kinds) and "budget" not in kinds
    assert hard_mid_word >= 0.2 * len(kinds)  # the hard cap does cut mid-word (the baseline it improves on)


@pytest.fixture(scope="module")
def testbed():
    from specexit.engine import SpecExitGenerator

    return SpecExitGenerator.from_pretrained(ASSETS / "testbed", draft_dir=ASSETS / "testbed-draft")


def test_under_speculative_decoding_the_budget_holds_and_lands_on_a_boundary(testbed):
    """Spec rounds accept several tokens at once, often past N: the budget still holds exactly, and the
    thinking kept is a prefix of the unbudgeted greedy output that ends where a word or paragraph does."""
    from specexit.testbed.problems import make_problems

    tok = testbed.tokenizer
    cut = 0
    for prob in make_problems(4, seed=3, split="test"):
        full = testbed.generate(prob.question, mode="spec", max_new_tokens=500, sampling=SamplingParams())
        for n in (40, 90, 150):
            cfg = ExitConfig(thinking_budget=n, budget_at="boundary")
            r = testbed.generate(prob.question, mode="spec", max_new_tokens=500, exit_config=cfg)
            assert r.thinking_tokens <= n
            if full.thinking_tokens <= n:
                continue
            cut += 1
            assert r.exit is not None and r.exit["boundary"].startswith("budget")
            start = full.token_ids.index(testbed.think_start_id) + 1 if testbed.think_start_id in full.token_ids else 0
            kept = r.token_ids[start : start + r.thinking_tokens]
            assert kept == full.token_ids[start : start + r.thinking_tokens]  # lossless up to the cut
            nxt = tok.decode([full.token_ids[start + r.thinking_tokens]])
            assert nxt[:1].isspace() or tok.decode(kept).endswith("\n\n"), (n, tok.decode(kept[-4:]), nxt)
    assert cut >= 6  # most (problem, budget) pairs did need the budget


def test_generate_flag_and_bench_method(testbed, capsys):
    import json

    from specexit.bench.methods import parse_method
    from specexit.cli import main

    m = parse_method("boundary-budget:64")
    assert m.exit_config.thinking_budget == 64 and m.exit_config.budget_at == "boundary" and m.mode == "spec"
    assert parse_method("budget:64").exit_config.budget_at == "token"
    from specexit.testbed.problems import make_problems

    question = make_problems(1, seed=3, split="test")[0].question  # thinks for more than 40 tokens (above)
    argv = ["generate", "--target", str(ASSETS / "testbed"), "--draft", str(ASSETS / "testbed-draft"), "--mode",
            "spec", "--thinking-budget", "40", "--json", "--prompt", question]  # fmt: skip
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["thinking_tokens"] <= 40 and out["exit"]["boundary"].startswith("budget")
    assert main([*argv[:-2], "--thinking-budget", "0", "--prompt", "x"]) == 2
    assert "--thinking-budget must be >= 1" in capsys.readouterr().err
