"""The testbed 'overthinker': problem/trace generator, tokenizer, trainer (smoke run + resume), CLI."""

import json
import re

import pytest
import torch

from specexit.cli import main as run_cli
from specexit.errors import SpecExitError
from specexit.testbed import problems as P
from specexit.testbed.evaluate import Completion, EvalConfig, evaluate, first_pass_result, format_report, parse
from specexit.testbed.tokenizer import CHAT_TEMPLATE, PARAGRAPH, SPECIAL_TOKENS, prompt_text, train_tokenizer
from specexit.testbed.train import make_config, train

_EQ = re.compile(r"(\d+) ([-+*/]) (\d+) = (\d+)")
_OPS = {"+": lambda a, b: a + b, "-": lambda a, b: a - b, "*": lambda a, b: a * b, "/": lambda a, b: a // b}


@pytest.fixture(scope="module")
def tok():
    return train_tokenizer(n_docs=300)


@pytest.fixture(scope="module")
def traces():
    return P.training_traces(600, seed=3)


# --------------------------------------------------------------------------------------------------
# problems


def test_problems_are_deterministic_by_seed():
    a = P.make_problems(50, seed=1, split="train")
    b = P.make_problems(50, seed=1, split="train")
    c = P.make_problems(50, seed=2, split="train")
    assert [p.question for p in a] == [p.question for p in b]
    assert [p.question for p in a] != [p.question for p in c]
    t1, t2 = P.training_traces(40, seed=1), P.training_traces(40, seed=1)
    assert [t.completion for t in t1] == [t.completion for t in t2]


def test_train_and_test_are_disjoint():
    train = P.make_problems(1500, seed=0, split="train")
    test = P.make_problems(300, seed=0, split="test")
    assert {p.split for p in train} == {"train"} and {p.split for p in test} == {"test"}
    assert not {p.seed for p in train} & {p.seed for p in test}
    assert not {p.question for p in train} & {p.question for p in test}
    skeleton = lambda p: tuple((s.op, s.left, s.right) for s in p.steps)  # noqa: E731
    assert not {skeleton(p) for p in train} & {skeleton(p) for p in test}


def test_problem_ranges_and_answers():
    for p in P.make_problems(300, seed=0, split="test"):
        assert 2 <= len(p.steps) <= 4
        values = P.derive(p.steps)
        assert values[-1][2] == p.answer
        for s, (a, b, res) in zip(p.steps, values, strict=True):
            assert 0 < res <= P.MAX_VALUE
            if s.op == "*":
                assert min(a, b) <= 9
            if s.op == "/":
                assert a % b == 0 and 2 <= b <= 9
            for kind, v in (s.left, s.right):
                assert kind == "r" or v <= P.MAX_OPERAND


def test_bad_split_and_seed_are_errors():
    with pytest.raises(SpecExitError):
        P.make_problems(1, split="dev")
    with pytest.raises(SpecExitError):
        P.make_problems(1, seed=P.MAX_DATA_SEED + 1)


def test_write_jsonl(tmp_path):
    path = P.write_jsonl(tmp_path / "p.jsonl", 5, seed=0, split="test")
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 5 and all(set(r) == {"question", "answer"} and r["answer"].isdigit() for r in rows)


# --------------------------------------------------------------------------------------------------
# traces


def _passes(thinking: str) -> list[list[str]]:
    """Paragraphs of each derivation pass (first pass, then one per re-check)."""
    out: list[list[str]] = [[]]
    for para in thinking.split(PARAGRAPH):
        if para == P.RECHECK:
            out.append([])
        else:
            out[-1].append(para)
    return out


def test_trace_format(traces):
    thinking = [t for t in traces if t.thinking]
    assert 0.7 < len(thinking) / len(traces) < 0.95
    assert any(t.prefix for t in traces)
    for t in traces:
        if not t.thinking:
            assert t.completion == f"The answer is \\boxed{{{t.problem.answer}}}."
            continue
        if t.prefix:  # forced exit: cut at the break that ends a pass, answer = that pass's result
            think, sep, rest = t.prefix.partition("\n\n</think>")
            assert sep and not rest and t.completion == f"\n\nThe answer is \\boxed{{{t.final}}}."
            assert int(_EQ.findall(think)[-1][3]) == t.final
            assert len(_passes(think)) == t.n_rechecks + 1
            continue
        think, sep, answer = t.completion.partition("\n</think>\n\n")
        assert sep and answer == f"The answer is \\boxed{{{t.final}}}."
        assert "</think>" not in think and "\n\n\n" not in think
        paragraphs = think.split(PARAGRAPH)
        assert all(p and "\n" not in p for p in paragraphs)
        passes = _passes(think)
        assert len(passes) == 1 + t.n_rechecks == 1 + think.count(P.RECHECK)
        n = len(t.problem.steps)
        last = None
        for k, paras in enumerate(passes):
            eqs = [_EQ.search(p) for p in paras if not p.startswith("Hmm,")]
            assert len(eqs) == n and all(eqs)
            for m in eqs:
                a, op, b, res = int(m[1]), m[2], int(m[3]), int(m[4])
                if k > 0:  # re-checks never slip
                    assert _OPS[op](a, b) == res
            last = int(eqs[-1][4])
        assert t.final == last  # the boxed answer is the last derivation's result
        assert first_pass_result(think) == t.first_pass


def _last_completed_pass_result(think: str, n_steps: int) -> int:
    """What a forced exit after ``think`` answers: the last completed pass's result, or inside the first
    pass the last result written."""
    passes = _passes(think)
    eqs = [[int(m[4]) for p in paras if not p.startswith("Hmm,") and (m := _EQ.search(p))] for paras in passes]
    if len(passes) == 1:
        return eqs[0][-1]
    done = [e for e in eqs if len(e) == n_steps]
    return done[-1][-1]


def test_boundary_forced_exits_answer_the_last_completed_pass():
    cfg = P.TraceConfig(forced_exit_cuts="boundary", p_forced_exit=0.5)
    mixed = P.training_mix(400, seed=5, cfg=cfg)
    forced = [t for t in mixed if t.prefix]
    assert len(forced) > 100
    mid_recheck = 0
    for t in forced:
        think, sep, rest = t.prefix.partition("\n\n</think>")
        assert sep and not rest and t.completion == f"\n\nThe answer is \\boxed{{{t.final}}}."
        assert t.final == _last_completed_pass_result(think, len(t.problem.steps))
        assert t.n_rechecks == think.count(P.RECHECK)
        passes = _passes(think)
        mid_recheck += len(passes) > 1 and len([p for p in passes[-1] if not p.startswith("Hmm,")]) < len(
            t.problem.steps
        )
    assert mid_recheck > 20  # cuts land inside re-checks too, not only at pass ends
    # every break of a thinking trace is a cut; pass ends are among them with the same answers
    for t in P.training_traces(100, seed=6):
        if not t.thinking or t.prefix:
            continue
        think = t.completion.partition("\n</think>")[0]
        assert len(t.boundaries) == think.count(PARAGRAPH)
        assert all(t.completion[o - 2 : o] == PARAGRAPH for o, _ in t.boundaries)
        assert set(t.pass_ends) <= set(t.boundaries)
        for o, ans in t.boundaries:
            assert ans == _last_completed_pass_result(t.completion[: o - 2], len(t.problem.steps))


def test_pass_cuts_are_generator_v2():
    """The default keeps the shipped testbed's training data: forced exits only at pass ends."""
    for t in P.training_mix(400, seed=5):
        if t.prefix:
            assert (len(t.prefix) - len("</think>"), t.final) in set(P.make_trace(t.problem).pass_ends)
    with pytest.raises(ValueError, match="forced_exit_cuts"):
        P.TraceConfig(forced_exit_cuts="anywhere")
    with pytest.raises(ValueError, match="p_forced_exit"):
        P.TraceConfig(p_forced_exit=1.5)


def test_slips_only_in_first_passes_and_caught_ones_are_fixed(traces):
    slipped = [t for t in traces if t.slip is not None]
    assert 0.1 < len(slipped) / len(traces) < 0.4
    assert any(t.caught for t in slipped) and any(not t.caught for t in slipped)
    for t in traces:
        if not t.thinking or t.prefix:
            continue
        think = t.completion.split("\n</think>")[0]
        first = _passes(think)[0]
        wrong = [p for p in first if (m := _EQ.search(p)) and _OPS[m[2]](int(m[1]), int(m[3])) != int(m[4])]
        hmms = re.findall(r"Hmm, (\d+) ([-+*/]) (\d+) is (\d+), not (\d+)\.", think)
        if t.slip is None:
            assert not wrong and not hmms and t.final == t.problem.answer
            continue
        assert len(wrong) == 1  # exactly the slipped step; later steps use its value correctly
        if t.caught:
            assert len(hmms) == 1 and t.final == t.problem.answer
            a, op, b, res, bad = hmms[0]
            assert _OPS[op](int(a), int(b)) == int(res) != int(bad)
            assert f"{a} {op} {b} = {bad}" in wrong[0]
        else:
            assert t.n_rechecks == 0 and not hmms and t.final != t.problem.answer


def test_drills_are_correct_and_mixed_by_seed():
    mix = P.training_mix(300, seed=2, p_drill=0.35)
    assert mix == P.training_mix(300, seed=2, p_drill=0.35)
    drills = [x for x in mix if isinstance(x, str)]
    assert 0.2 < len(drills) / len(mix) < 0.5
    for d in drills:
        for line in d.split("\n"):
            m = _EQ.fullmatch(line)
            assert m and _OPS[m[2]](int(m[1]), int(m[3])) == int(m[4]) and int(m[4]) <= P.MAX_VALUE
    seeds = P.problem_seeds(300, 2, "train")
    for s, x in zip(seeds, mix, strict=True):
        assert isinstance(x, str) or x.problem == P.make_problem(s)


# --------------------------------------------------------------------------------------------------
# tokenizer


def test_tokenizer_round_trip_and_special_tokens(tok, traces):
    for t in SPECIAL_TOKENS:
        assert len(tok.encode(t, add_special_tokens=False)) == 1
    assert len(tok.encode(PARAGRAPH, add_special_tokens=False)) == 1
    assert tok.eos_token == "<|im_end|>"
    assert len(tok.encode("307", add_special_tokens=False)) == 3  # one token per digit
    assert 300 < len(tok) <= 1500
    para = tok.convert_tokens_to_ids(tok.tokenize(PARAGRAPH))[0]
    for t in traces[:120]:
        text = prompt_text(tok, t.problem.question, t.thinking) + t.prefix + t.completion + "<|im_end|>"
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids) == text
        assert ids.count(para) == (t.prefix + t.completion).count(PARAGRAPH) + (0 if t.thinking else 2)


def test_chat_template_thinking_switch(tok):
    assert tok.chat_template == CHAT_TEMPLATE
    on = prompt_text(tok, "Q?")
    off = prompt_text(tok, "Q?", thinking=False)
    assert on.endswith("<|im_start|>assistant\n<think>\n")
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")


def test_parse_completions(tok):
    good = "2 * 3 = 6 apples.\n\nWait, let me double-check.\n\n2 * 3 = 6 apples.\n</think>\n\nThe answer is \\boxed{6}."
    c = parse(tok, tok.encode(good, add_special_tokens=False), True, thinking=True)
    assert isinstance(c, Completion) and c.format_ok and c.answer == 6 and c.thinking.count(P.RECHECK) == 1
    bad = parse(tok, tok.encode("2 * 3 = 6 apples.", add_special_tokens=False), False, thinking=True)
    assert not bad.format_ok and bad.answer is None


# --------------------------------------------------------------------------------------------------
# training


def test_smoke_training_resumes_with_identical_losses(tmp_path):
    torch.set_num_threads(1)
    cfg = make_config("smoke")
    assert cfg.steps == 20
    whole = train(cfg, tmp_path / "a", progress=False)
    assert whole.finished and len(whole.losses) == 20 and whole.losses[-1] < whole.losses[0]
    half = train(cfg, tmp_path / "b", progress=False, stop_after=10)
    assert not half.finished and half.step == 10 and not (tmp_path / "b" / "testbed.json").exists()
    rest = train(cfg, tmp_path / "b", progress=False)
    assert rest.finished and rest.losses == whole.losses
    manifest = json.loads((tmp_path / "b" / "testbed.json").read_text())
    assert manifest["generator_version"] == P.GENERATOR_VERSION and manifest["run"]["steps"] == 20
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(tmp_path / "b")
    tk = AutoTokenizer.from_pretrained(tmp_path / "b")
    assert model.generation_config.eos_token_id == tk.convert_tokens_to_ids("<|im_end|>")
    a = AutoModelForCausalLM.from_pretrained(tmp_path / "a").state_dict()
    assert all(torch.equal(v, a[k]) for k, v in model.state_dict().items())
    bad = make_config("smoke", lr=1e-2)
    with pytest.raises(SpecExitError, match="other settings"):
        train(bad, tmp_path / "b", progress=False, stop_after=5)
    # the evaluation pipeline runs end to end (numbers are meaningless for a 20-step model)
    report = evaluate(tmp_path / "b", EvalConfig(n=3, max_new_tokens=12, batch_size=2), progress=False)
    for name in ("think_greedy", "think_sampled", "no_think_greedy", "no_think_sampled"):
        assert 0 <= report[name]["accuracy"] <= 1 and 0 <= report[name]["format_ok"] <= 1
    assert "exit_probes" in report and format_report(report).startswith("testbed eval")


def test_cli_data_and_errors(tmp_path, capsys):
    assert run_cli(["testbed", "data", "--out", str(tmp_path / "t.jsonl"), "--n", "3"]) == 0
    assert len((tmp_path / "t.jsonl").read_text().splitlines()) == 3
    assert run_cli(["testbed", "data", "--out", str(tmp_path / "x.jsonl"), "--n", "2", "--traces"]) == 0
    row = json.loads((tmp_path / "x.jsonl").read_text().splitlines()[0])
    assert {"problem", "completion", "thinking", "final"} <= set(row)
    assert run_cli(["testbed", "data", "--out", str(tmp_path / "y.jsonl"), "--seed", "1000"]) == 2
    assert "data seed" in capsys.readouterr().err
    assert run_cli(["testbed", "eval", "--model", str(tmp_path / "none")]) == 2
    assert run_cli(["testbed", "train", "--out", str(tmp_path / "m"), "--p-forced-exit", "2"]) == 2
    assert "p_forced_exit must be a probability" in capsys.readouterr().err


def test_exit_probes_by_place_on_the_shipped_testbed():
    """Forced-exit probes on generator traces of held-out problems, grouped by where the break is.  The
    shipped (generator v2) model was taught to answer after a forced exit at a pass end."""
    from importlib.resources import files

    from specexit.testbed.evaluate import load_model, probe_exits

    model, tk = load_model(files("specexit") / "assets" / "testbed")
    problems = [p for p in P.make_problems(12, split="test") if P.make_trace(p).n_rechecks >= 1][:3]
    prompts = [tk.encode(prompt_text(tk, p.question, True), add_special_tokens=False) for p in problems]
    comps = [parse(tk, tk.encode(P.make_trace(p).completion), True, True) for p in problems]
    assert all(c.thinking is not None for c in comps)
    r = probe_exits(model, tk, problems, prompts, comps, EvalConfig(batch_size=8))
    places = r["probes_by_place"]
    assert set(places) == {"first_pass", "pass_end", "mid_recheck"}
    assert sum(v["n"] for v in places.values()) == r["n_probes"]
    assert places["pass_end"]["answered"] > 0.5
    assert all(0 <= v["accuracy"] <= v["answered"] <= 1 for v in places.values())
    assert "probes at pass_end" in format_report({"model": "m", "n": 3, "temperature": 0.6, "exit_probes": r})
