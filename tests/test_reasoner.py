"""The reasoner recipe's problems: a training mix and held-out problems that never touch GSM8K's test set."""

from __future__ import annotations

import json

import pytest

from specexit.bench.datasets import load_dataset
from specexit.cli import main
from specexit.errors import ConfigError
from specexit.reasoner.problems import REASONING_GYM_TASKS, make_mix
from specexit.scoring import answers_equal, extract_answer

pytest.importorskip("reasoning_gym")


def test_mix_is_deterministic_disjoint_and_free_of_gsm8k():
    train, heldout = make_mix(60, 8, "train"), make_mix(40, 8, "heldout")
    assert [p.question for p in train] == [p.question for p in make_mix(60, 8, "train")]
    assert {p.source for p in train} == {"testbed", *(f"reasoning-gym:{t}" for t in REASONING_GYM_TASKS)}
    assert not {p.question for p in train} & {p.question for p in heldout}
    # every reasoning-gym task keeps (nearly) all its held-out problems: the two seed ranges do not overlap
    for task in REASONING_GYM_TASKS:
        assert sum(p.source == f"reasoning-gym:{task}" for p in heldout) >= 6, task
    gsm8k = {p.question for p in load_dataset("gsm8k100")}
    assert not gsm8k & {p.question for p in train + heldout}


def test_answers_are_scorable():
    for p in make_mix(20, 5, "train"):
        assert answers_equal(extract_answer(f"\\boxed{{{p.answer}}}"), p.answer), p


def test_gsm_symbolic_is_refused():
    with pytest.raises(ConfigError, match="GSM8K"):
        make_mix(0, 5, "train", tasks=("gsm_symbolic",))


def test_cli_writes_a_prompt_file(tmp_path, capsys):
    out = tmp_path / "p.jsonl"
    assert main(["reasoner", "problems", "--out", str(out), "--n-testbed", "5", "--n-per-task", "2"]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 5 + 2 * len(REASONING_GYM_TASKS) and all({"question", "answer"} <= set(r) for r in rows)
    empty = ["reasoner", "problems", "--out", str(tmp_path / "x.jsonl"), "--n-testbed", "0", "--n-per-task", "0"]
    assert main(empty) == 2
    assert not (tmp_path / "x.jsonl").exists()


def _records(answers_by_problem: dict[int, list[str]], gold: str = "7") -> list[dict]:
    rows = []
    for pid, answers in answers_by_problem.items():
        for k, a in enumerate(answers):
            text = f"Step one for {pid}, way {k}.\n\nStep two gives {a}.\n\nSo the answer is \\boxed{{{a}}}.<|im_end|>"
            rows.append({"prompt_id": pid, "sample": k, "question": f"Q{pid}?", "gold": gold, "text": text,
                         "final_answer": a, "finish_reason": "stop", "output_ids": [0] * 30})  # fmt: skip
    return rows


def test_composed_traces_end_right_and_keep_wrong_first_passes():
    from specexit.reasoner.compose import RECHECK_OPENERS, ComposeConfig, compose

    records = _records({i: ["7", "7", "3", "7"] * 2 for i in range(200)} | {999: ["3", "4"]})
    records.append({**records[0], "sample": 9, "text": "```python\nprint(7)\n```", "final_answer": "7"})  # code
    cfg = ComposeConfig(traces_per_problem=2, seed=0)
    traces = compose(records, cfg)
    assert traces == compose(records, cfg)  # deterministic
    assert len(traces) == 400 and not any(t.prompt_id == 999 for t in traces)  # never right: no trace
    assert all(t.pass_answers[-1] == "7" and t.answer == "The answer is \\boxed{7}." for t in traces)
    wrong_first = [t for t in traces if not t.first_pass_right]
    # the model's own error rate among its samples is 1/4: wrong first passes appear about that often
    assert 0.15 < len(wrong_first) / len(traces) < 0.35
    assert all(t.n_rechecks >= 1 and "So the answer is 7, not 3." in t.thinking for t in wrong_first)
    counts = [t.n_rechecks for t in traces]
    assert min(counts) == 0 and max(counts) <= cfg.max_rechecks and 1.5 < sum(counts) / len(counts) < 2.8
    # a falling hazard: of the traces that reach n re-checks, fewer go on to another as n grows
    reach = [sum(c >= n for c in counts) for n in range(1, 4)]
    go_on = [reach[i + 1] / reach[i] for i in range(2)]
    assert go_on[0] > 0.5 > go_on[1], go_on
    for t in traces:  # one opener per re-check, paragraphs separated by blank lines, no code, no specials
        assert sum(t.thinking.count(o) for o in RECHECK_OPENERS) == t.n_rechecks
        assert "```" not in t.thinking and "<|im_end|>" not in t.thinking and "\n\n" in t.thinking


def test_a_trace_never_repeats_a_derivation_word_for_word():
    from specexit.reasoner.compose import ComposeConfig, compose

    # problem 0: the model wrote the same right derivation three times (and one wrong one)
    records = _records({0: ["7", "7", "3", "7"]})
    for r in records:
        r["text"] = r["text"].replace(f", way {r['sample']}", "") if r["final_answer"] == "7" else r["text"]
    traces = compose(records, ComposeConfig(traces_per_problem=300, seed=1, p_no_recheck=0.0))
    for t in traces:
        passes = [p for p in t.thinking.split("\n\n") if p.startswith("Step one")]
        assert len(passes) == len(set(passes)) == t.n_rechecks + 1
    # wrong first passes still come at the model's own rate (1 sample in 4), not the distinct texts' (1 in 2)
    wrong = sum(not t.first_pass_right for t in traces) / len(traces)
    assert 0.15 < wrong < 0.35
    # two distinct derivations: at most one re-check, and a right first pass has no other right one to use
    assert {t.n_rechecks for t in traces} == {0, 1}
    assert all(t.n_rechecks == (0 if t.first_pass_right else 1) for t in traces)


def test_middle_passes_are_wrong_at_the_models_own_rate():
    from specexit.reasoner.compose import ComposeConfig, compose

    # 12 samples, 3 wrong (25%); the right ones: one derivation written 6 times and 3 others
    records = _records({0: ["7"] * 9 + ["3", "4", "5"]})
    for r in records[:6]:
        r["text"] = r["text"].replace(f", way {r['sample']}", "")
    cfg = ComposeConfig(traces_per_problem=2000, seed=2, p_no_recheck=0.0, p_more=0.9, more_decay=1.0)
    middle = [a for t in compose(records, cfg) for a in t.pass_answers[1:-1]]
    wrong = sum(a != "7" for a in middle) / len(middle)
    # among the 7 distinct texts 3 are wrong (43%); the samples say 25%
    assert len(middle) > 1000 and 0.2 < wrong < 0.35, wrong


def test_cli_compose_writes_examples_and_stats(tmp_path, capsys):
    samples = tmp_path / "traces.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in _records({0: ["7", "3"], 1: ["7", "7"], 2: ["1"]})))
    out = tmp_path / "sft.jsonl"
    assert main(["reasoner", "compose", "--samples", str(samples), "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    stats = json.loads(out.with_suffix(".stats.json").read_text())
    assert len(rows) == 4 == stats["traces"] and stats["problems"] == 3 and stats["problems_with_a_right_sample"] == 2
    assert all(r["answer"] == "The answer is \\boxed{7}." for r in rows)
    none = tmp_path / "none.jsonl"
    none.write_text(json.dumps(_records({5: ["1"]})[0]) + "\n")
    assert main(["reasoner", "compose", "--samples", str(none), "--out", str(tmp_path / "x.jsonl")]) == 2
    assert not (tmp_path / "x.jsonl").exists()


def _sft_examples(path, n: int = 6):
    rows = [{"question": f"What is {i} + {i}?", "thinking": f"{i} + {i} = {2 * i}.\n\nLet me verify that.\n\n"
             f"Yes, {2 * i}.", "answer": f"The answer is \\boxed{{{2 * i}}}."} for i in range(n)]  # fmt: skip
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_tune_learns_resumes_to_the_same_curve_and_trains_the_think_rows(thinking_tiny_dir, tmp_path):
    pytest.importorskip("peft")
    from safetensors.torch import load_file

    from specexit.reasoner.tune import TuneConfig, tune

    data = _sft_examples(tmp_path / "sft.jsonl")
    cfg = TuneConfig(lr=5e-3, warmup=1, epochs=4, grad_accum=2, ckpt_every=2, max_len=128)
    straight = tmp_path / "straight"
    tune(thinking_tiny_dir, thinking_tiny_dir, data, straight, cfg, progress=False)
    losses = [json.loads(line)["loss"] for line in (straight / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 12 and losses[-1] < 0.7 * losses[0], losses  # it learns the traces
    # interrupted after 4 steps, then resumed: the same loss curve
    part = tmp_path / "part"
    tune(thinking_tiny_dir, thinking_tiny_dir, data, part, TuneConfig(**{**cfg.__dict__, "max_steps": 4}), False)
    tune(thinking_tiny_dir, thinking_tiny_dir, data, part, cfg, progress=False)
    resumed = [json.loads(line)["loss"] for line in (part / "metrics.jsonl").read_text().splitlines()]
    assert resumed == pytest.approx(losses, rel=1e-4, abs=1e-5)
    adapter = load_file(str(straight / "adapter" / "adapter_model.safetensors"))
    assert any("lora_A" in k for k in adapter) and any("token_adapter" in k or "trainable_tokens" in k for k in adapter)


def test_merge_gives_the_tuned_model_as_a_plain_folder(thinking_tiny_dir, tmp_path):
    pytest.importorskip("peft")
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from specexit.engine import SpecExitGenerator
    from specexit.reasoner.merge import merge_adapter
    from specexit.reasoner.tune import TuneConfig, peft_wrapping, tune

    data = _sft_examples(tmp_path / "sft.jsonl", n=4)
    run = tmp_path / "run"
    tune(thinking_tiny_dir, thinking_tiny_dir, data, run, TuneConfig(lr=5e-3, warmup=1, grad_accum=2), progress=False)
    merged = merge_adapter(thinking_tiny_dir, run / "adapter", thinking_tiny_dir, tmp_path / "merged")
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    with torch.no_grad():
        with peft_wrapping():
            tuned = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(thinking_tiny_dir), run / "adapter")
        want = tuned(input_ids=ids).logits
        got = AutoModelForCausalLM.from_pretrained(merged)(input_ids=ids).logits
        base = AutoModelForCausalLM.from_pretrained(thinking_tiny_dir)(input_ids=ids).logits
    assert torch.allclose(got, want, atol=1e-4) and not torch.allclose(got, base, atol=1e-4)
    gen = SpecExitGenerator.from_pretrained(merged)  # the package loads it as a thinking target
    assert gen.think_end_id is not None and not (tmp_path / "merged.tmp").exists()


def test_wrapping_and_merging_with_peft_raise_no_deprecation_warning(thinking_tiny_dir, tmp_path):
    """peft reads a property transformers deprecated; the test run (and a user's run) shows no FutureWarning."""
    pytest.importorskip("peft")
    import warnings

    from specexit.reasoner.merge import merge_adapter
    from specexit.reasoner.tokenizer import load_thinking_tokenizer
    from specexit.reasoner.tune import TuneConfig, build_model

    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        model = build_model(thinking_tiny_dir, load_thinking_tokenizer(thinking_tiny_dir), TuneConfig())
        model.save_pretrained(str(tmp_path / "adapter"))
        merge_adapter(thinking_tiny_dir, tmp_path / "adapter", thinking_tiny_dir, tmp_path / "merged")
    with pytest.warns(FutureWarning, match="is_gradient_checkpointing"):  # the silenced warning is still there
        from peft import get_peft_model

        get_peft_model(model.merge_and_unload(), model.peft_config["default"])


def test_a_trace_longer_than_max_len_is_left_out_not_cut(thinking_tiny_dir):
    from transformers import AutoTokenizer

    from specexit.reasoner.tune import encode_example

    tok = AutoTokenizer.from_pretrained(thinking_tiny_dir)
    ex = {"question": "What is 2 + 2?", "thinking": "2 + 2 = 4. " * 40, "answer": "The answer is \\boxed{4}."}
    ids, start = encode_example(tok, ex, 10_000)
    assert ids[-2:] == tok.encode("<|im_end|>\n", add_special_tokens=False)[-2:] and 0 < start < len(ids)
    assert encode_example(tok, ex, len(ids) - 1) is None  # cutting it would drop </think> and the answer


_QWEN3_TAIL = """{%- for m in messages %}{{ '<|im_start|>' + m.role + '\\n' + m.content + '<|im_end|>\\n' }}{% endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""


def _render(template: str, **kw) -> str:
    import jinja2

    msgs = [{"role": "user", "content": "1 + 1?"}]
    return jinja2.Environment().from_string(template).render(messages=msgs, add_generation_prompt=True, **kw)


def test_the_thinking_template_opens_think_and_keeps_nothink_an_empty_span():
    from specexit.reasoner.tokenizer import opening_template

    assert not _render(_QWEN3_TAIL, enable_thinking=True).endswith("<think>\n")  # Qwen3 leaves it to the model
    t = opening_template(_QWEN3_TAIL)
    assert _render(t, enable_thinking=True).endswith("assistant\n<think>\n")
    assert _render(t).endswith("assistant\n<think>\n")
    assert _render(t, enable_thinking=False).endswith("assistant\n<think>\n\n</think>\n\n")


def test_the_real_qwen3_template_is_rewritten():
    from specexit.reasoner.tokenizer import default_tokenizer_dir, is_complete, load_thinking_tokenizer

    folder = default_tokenizer_dir()
    if not is_complete(folder):
        pytest.skip("the Qwen3 tokenizer is not cached (specexit reasoner tokenizer)")
    tok = load_thinking_tokenizer(folder)
    ids = tok.apply_chat_template([{"role": "user", "content": "2 + 2?"}], add_generation_prompt=True,
                                  enable_thinking=True, tokenize=False)  # fmt: skip
    assert ids.endswith("<|im_start|>assistant\n<think>\n")


def test_a_tokenizer_whose_template_cannot_open_think_is_refused(tmp_path, thinking_tiny_dir):
    from transformers import AutoTokenizer

    from specexit.errors import SpecExitError
    from specexit.reasoner.tokenizer import load_thinking_tokenizer

    tok = AutoTokenizer.from_pretrained(thinking_tiny_dir)
    tok.chat_template = "{%- for m in messages %}{{ m.content }}{%- endfor %}{{ 'assistant:' }}"
    tok.save_pretrained(tmp_path)
    with pytest.raises(SpecExitError, match="opens <think>"):
        load_thinking_tokenizer(tmp_path)


def test_compose_pools_the_samples_of_a_question_over_several_files(tmp_path, capsys):
    a, b = _records({0: ["7"], 1: ["3"]}), _records({0: ["3", "3"]})  # b's line 0 is a's question 1
    for r in b:
        r["question"] = a[1]["question"]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in a))
    (tmp_path / "b.jsonl").write_text("".join(json.dumps(r) + "\n" for r in b))
    out = tmp_path / "sft.jsonl"
    argv = ["reasoner", "compose", "--samples", str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl"), "--out", str(out)]
    assert main(argv) == 0
    stats = json.loads(out.with_suffix(".stats.json").read_text())
    assert stats["problems"] == 2 and stats["usable_samples"] == 4


def test_a_zoo_thinking_model_is_built_from_a_checked_adapter(thinking_tiny_dir, tmp_path):
    import hashlib

    from specexit.reasoner.tune import TuneConfig, tune
    from specexit.zoo.registry import ChecksumError
    from specexit.zoo.thinking import ThinkSpec, build, is_built

    run = tmp_path / "run"
    tune(thinking_tiny_dir, thinking_tiny_dir, _sft_examples(tmp_path / "sft.jsonl", n=2), run,
         TuneConfig(max_steps=1, grad_accum=1), progress=False)  # fmt: skip
    files = ("adapter_config.json", "adapter_model.safetensors")
    sums = tuple((f, hashlib.sha256((run / "adapter" / f).read_bytes()).hexdigest()) for f in files)
    spec = ThinkSpec("tiny-think", "tiny", "tiny-adapter", sums, "test")
    out = build(spec, thinking_tiny_dir, run / "adapter", thinking_tiny_dir, tmp_path / "models" / "tiny-think")
    assert is_built(spec, out) and (out / "model.safetensors").is_file()
    wrong = ThinkSpec("tiny-think", "tiny", "tiny-adapter", ((files[1], "0" * 64),), "test")
    assert not is_built(wrong, out)
    with pytest.raises(ChecksumError, match=r"adapter_model\.safetensors: sha256"):
        build(wrong, thinking_tiny_dir, run / "adapter", thinking_tiny_dir, tmp_path / "models" / "other")
    assert not (tmp_path / "models" / "other").exists() and not (tmp_path / "models" / ".other.partial").exists()


def test_the_shipped_thinking_adapter_matches_its_recorded_sha256():
    from specexit.zoo.thinking import THINK_MODELS, adapter_dir, check_adapter

    spec = THINK_MODELS["qwen2.5-coder-0.5b-think"]
    check_adapter(spec, adapter_dir(spec))  # raises on a missing or changed file
    assert (adapter_dir(spec) / "adapter_model.safetensors").stat().st_size < 25_000_000  # the 25 MB rule


def test_the_thinking_model_builds_and_opens_its_span_where_the_base_is_installed(tmp_path):
    from specexit.reasoner.tokenizer import default_tokenizer_dir, is_complete
    from specexit.zoo import get_spec, is_converted, models_dir
    from specexit.zoo.thinking import THINK_MODELS, adapter_dir, build

    spec = THINK_MODELS["qwen2.5-coder-0.5b-think"]
    base = models_dir() / spec.base
    if not (is_converted(get_spec(spec.base), base) and is_complete(default_tokenizer_dir())):
        pytest.skip("the base model or the Qwen3 tokenizer is not installed (specexit models get ...-think)")
    out = build(spec, base, adapter_dir(spec), default_tokenizer_dir(), tmp_path / spec.name)
    from specexit.engine import SpecExitGenerator

    gen = SpecExitGenerator.from_pretrained(out, dtype="bfloat16")
    ids = gen.encode_prompt("What is 17 + 25?")
    assert ids[-2:] == gen.tokenizer.encode("<think>\n", add_special_tokens=False)[-2:]
    assert gen.think_end_id == 151668 and gen.encode_prompt("x", enable_thinking=False)[-1] != ids[-1]
