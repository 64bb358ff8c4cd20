"""The implicit reasoning span of chat models without think tokens: answer markers end it, an exit
forces the (multi-token) answer trigger, and every path stays exact plain decoding of what it kept."""

from __future__ import annotations

import pytest
import torch
from _oracles import GreedyOracleProposer
from conftest import PARAGRAPH_PROMPT

from specexit.answer_trigger import MarkerScanner, find_marker, last_paragraph, reasoning_length
from specexit.boundaries import BoundaryDetector
from specexit.engine import SpecExitGenerator
from specexit.errors import ConfigError
from specexit.exit_policy import ExitConfig, ExitPolicy
from specexit.probe import ProbeConfig
from specexit.train.labels import probe_answers

TRIGGER = "The final answer is \\boxed{"
NEVER = ("@@no-such-marker@@",)  # random tiny models never write it: the span only ends by an exit


# --- pure parts ------------------------------------------------------------------------------------
def test_find_marker_is_case_insensitive_and_earliest():
    assert find_marker("So the Final Answer: 3, i.e. \\boxed{3}", ("\\boxed", "final answer")) == 7
    assert find_marker("no answer here", ("\\boxed",)) is None
    assert find_marker("#### 5 and #### 6", ("####",), start=3) == 11


@pytest.mark.parametrize(
    "pieces, expected",
    [
        (["Step 1", ".\n\n", "So", " \\", "boxed", "{3}"], 3),  # marker split over two tokens
        (["a", "b", " #", "###", " 7"], 2),
        (["x" * 40, "y" * 40, " \\boxed{1}"], 2),  # long tokens: the window still holds the marker
        (["The", " final", " answer", " is", " 4"], 1),  # case-insensitive, begins in the 2nd token
        (["no", " marker", " at", " all"], None),
    ],
)
def test_reasoning_length_counts_tokens_before_the_marker(pieces, expected):
    assert reasoning_length(pieces, ("\\boxed", "####", "final answer")) == expected


def test_marker_scanner_reports_tokens_reaching_into_the_marker():
    scan = MarkerScanner(("\\boxed",))
    assert [scan.push(t) for t in ["ab", "c \\", "bo", "xed"]] == [None, None, None, 3]
    assert scan.push("\\boxed") is None  # only the first marker counts


def test_last_paragraph():
    assert last_paragraph("Step one.\n\nStep two.\n\n  So it is 7.  \n") == "So it is 7."
    assert last_paragraph("   ") == ""


def _policy(markers=("\\boxed",), **cfg) -> ExitPolicy:
    texts = {1: "Step", 2: " one", 3: "\n\n", 4: " \\", 5: "boxed", 6: "{5}"}
    det = BoundaryDetector(lambda i: texts[i])
    return ExitPolicy(ExitConfig(**cfg), det, None, -1, answer_markers=markers)


def test_policy_implicit_span_ends_at_the_answer_marker():
    p = _policy(thresholds={"confidence": 0.99})
    p.start([9, 9], "", opened=True)
    assert p.in_thinking
    p.step([1, 2, 3, 4], {"confidence": 0.1})
    assert p.thinking_tokens == 4 and p.in_thinking
    p.step([5, 6], {"confidence": 0.1})
    assert p.thinking_tokens == 3 and p.finished and not p.in_thinking  # " \\" belongs to the answer
    assert p.new_tokens == 6


def test_policy_implicit_span_exits_at_a_boundary_when_signals_pass():
    p = _policy(thresholds={"confidence": 0.5}, smoothing="none")
    p.start([9], "", opened=True)
    d = p.step([1, 2, 3, 1], {"confidence": 0.9})
    assert d.exit and d.keep == 3 and p.thinking_tokens == 3 and p.record.boundary == "paragraph"


def test_policy_prompt_that_asks_for_the_answer_has_no_span():
    p = _policy(thresholds={"confidence": 0.5})
    p.start([9], "", opened=False)
    assert not p.step([1, 2, 3], {"confidence": 0.9}).exit and p.thinking_tokens == 0


# --- the engine on a tiny target that writes paragraphs --------------------------------------------
def _trigger_gen(gen: SpecExitGenerator, markers=NEVER, holder: dict | None = None) -> SpecExitGenerator:
    """The same target and draft as a model without think tokens (optionally drafting with an exact
    oracle, so that rounds accept several tokens past the boundary an exit cuts at)."""
    factory = None
    if holder is not None:

        def factory(draft, tree_cfg, sampling):
            return GreedyOracleProposer(gen.target, holder["prompt"], seed=1, error_rate=0.0)

    return SpecExitGenerator(
        gen.target, gen.tokenizer, gen.draft, proposer_factory=factory, answer_trigger=TRIGGER, answer_markers=markers
    )


@pytest.mark.parametrize("readout", ["round", "boundary"])
@pytest.mark.parametrize("oracle", [False, True], ids=["draft", "oracle"])
def test_exit_forces_the_whole_trigger_right_after_the_boundary(paragraph_gen, oracle, readout):
    base, para = paragraph_gen
    holder: dict = {}
    gen = _trigger_gen(base, holder=holder if oracle else None)
    trig = gen.tokenizer.encode(TRIGGER, add_special_tokens=False)
    assert len(trig) > 3 and gen.exit_ids == trig and gen.think_end_id is None
    ids = holder["prompt"] = gen.encode_prompt(PARAGRAPH_PROMPT)
    n, min_think = 120, 30
    ref = gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=n)
    assert ref.thinking_tokens == n and not ref.exited_early  # no marker: all of it is reasoning
    cut = next(i for i, t in enumerate(ref.token_ids) if t == para and i + 1 >= min_think) + 1
    cfg = ExitConfig(thresholds={"confidence": 0.4, "remain": 5.0}, min_thinking_tokens=min_think, readout=readout)
    out = gen.generate(input_ids=ids, mode="specexit", max_new_tokens=n, exit_config=cfg)
    prefix = [*ref.token_ids[:cut], *trig]
    rest = gen.generate(input_ids=ids + prefix, mode="vanilla", max_new_tokens=n - len(prefix))
    # the continuation after the forced trigger is exact plain decoding: no stale KV / draft state
    assert out.token_ids == prefix + rest.token_ids
    assert out.exited_early and out.thinking_tokens == cut and out.exit["thinking_tokens"] == cut
    assert out.reasoning == gen.tokenizer.decode(ref.token_ids[:cut], skip_special_tokens=True).strip()
    assert out.answer.startswith(TRIGGER)
    spec = gen.generate(input_ids=ids, mode="spec", max_new_tokens=n, exit_config=cfg)
    assert spec.token_ids == ref.token_ids and not spec.exited_early


def test_natural_answer_marker_ends_the_span(paragraph_gen):
    """A marker taken from the model's own output: the span ends at the token where it begins, in
    every mode, and the answer is the text from there."""
    base, _ = paragraph_gen
    ids = base.encode_prompt(PARAGRAPH_PROMPT)
    ref = base.generate(input_ids=ids, mode="vanilla", max_new_tokens=80).token_ids
    texts = [base.tokenizer.decode([t]) for t in ref]
    at = next(i for i in range(40, 70) if len(texts[i].strip()) >= 3)
    marker = texts[at].strip()
    text = "".join(texts)
    start = text.lower().find(marker.lower())
    expected = next(i for i in range(len(texts)) if len("".join(texts[: i + 1])) > start)
    gen = _trigger_gen(base, markers=(marker,))
    for mode in ("vanilla", "spec", "specexit"):
        cfg = ExitConfig(thresholds={"confidence": 0.99})
        out = gen.generate(input_ids=ids, mode=mode, max_new_tokens=80, exit_config=cfg)
        assert out.token_ids == ref and out.thinking_tokens == expected and not out.exited_early, mode
        assert marker.lower() in out.answer.lower()[: len(marker) + len(texts[expected])]


def test_budget_and_nothink_with_a_trigger(paragraph_gen):
    base, _ = paragraph_gen
    gen = _trigger_gen(base)
    trig = gen.exit_ids
    ids = gen.encode_prompt(PARAGRAPH_PROMPT)
    n, budget = 80, 23
    ref = gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=n).token_ids
    cfg = ExitConfig(thresholds={"confidence": 0.99}, thinking_budget=budget)
    out = gen.generate(input_ids=ids, mode="spec", max_new_tokens=n, exit_config=cfg)
    prefix = [*ref[:budget], *trig]
    rest = gen.generate(input_ids=ids + prefix, mode="vanilla", max_new_tokens=n - len(prefix))
    assert out.token_ids == prefix + rest.token_ids and out.thinking_tokens == budget
    # nothink: the prompt itself ends with the trigger; nothing is reasoning, all of it is the answer
    no = gen.encode_prompt(PARAGRAPH_PROMPT, enable_thinking=False)
    assert no[-len(trig) :] == trig
    out = gen.generate(input_ids=no, mode="spec", max_new_tokens=30)
    assert out.thinking_tokens == 0 and out.reasoning == "" and out.answer


def test_no_exit_without_room_for_the_whole_trigger(paragraph_gen):
    base, para = paragraph_gen
    gen = _trigger_gen(base)
    ids = gen.encode_prompt(PARAGRAPH_PROMPT)
    ref = gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=120).token_ids
    cut = next(i for i, t in enumerate(ref) if t == para and i + 1 >= 30) + 1
    cfg = ExitConfig(thresholds={"confidence": 0.4}, min_thinking_tokens=30)
    n = cut + len(gen.exit_ids) - 1  # one token short of boundary + trigger
    out = gen.generate(input_ids=ids, mode="specexit", max_new_tokens=n, exit_config=cfg)
    assert not out.exited_early and out.token_ids == ref[:n]


def test_probe_baseline_with_a_trigger_probes_after_the_trigger(paragraph_gen):
    base, para = paragraph_gen
    gen = _trigger_gen(base)
    ids = gen.encode_prompt(PARAGRAPH_PROMPT)
    ref = gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=100).token_ids
    cfg = ExitConfig(min_thinking_tokens=30)
    out = gen.generate(
        input_ids=ids, mode="spec", max_new_tokens=100, exit_config=cfg, probe=ProbeConfig(threshold=-1.0)
    )
    cut = next(i for i, t in enumerate(ref) if t == para and i + 1 >= 30) + 1
    assert out.token_ids[: cut + len(gen.exit_ids)] == [*ref[:cut], *gen.exit_ids] and out.probe_calls == 1


def test_label_probes_force_every_trigger_token(paragraph_gen):
    """Batched label probes with a multi-token exit equal greedy decoding after prefix[:cut] + trigger."""
    base, _ = paragraph_gen
    gen = _trigger_gen(base)
    ids = gen.encode_prompt(PARAGRAPH_PROMPT)
    prefix = ids + gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=60).token_ids
    cuts = [len(ids) + 10, len(ids) + 35, len(prefix)]
    got = probe_answers(gen.target, prefix, cuts, gen.exit_ids, set(), max_tokens=5)
    for cut, answer in zip(cuts, got, strict=True):
        feed = prefix[:cut] + gen.exit_ids
        want = []
        for _ in range(5):
            with torch.no_grad():
                tok = int(gen.target.model(input_ids=torch.tensor([feed])).logits[0, -1].argmax())
            want.append(tok)
            feed.append(tok)
        assert answer == want


def test_bad_trigger_settings_are_clear_errors(paragraph_gen):
    base, _ = paragraph_gen
    with pytest.raises(ConfigError, match="answer trigger is empty"):
        SpecExitGenerator(base.target, base.tokenizer, base.draft, answer_trigger="  ")
    with pytest.raises(ConfigError, match="at least one answer marker"):
        SpecExitGenerator(base.target, base.tokenizer, base.draft, answer_trigger=TRIGGER, answer_markers=())


def test_cli_trigger_is_a_torch_backend_option(paragraph_gen, tmp_path, capsys):
    from specexit.cli import main

    rc = main(["generate", "--target", str(tmp_path), "--prompt", "x", "--backend", "vllm", "--answer-trigger", "A:"])
    assert rc != 0 and "--answer-trigger" in capsys.readouterr().err


def test_traces_and_labels_of_an_implicit_span(thinking_tiny_dir, tmp_path):
    """The training pipeline on a model without think tokens: the trace's span runs from the first
    generated token to where the answer marker begins, and each label probe forces the whole trigger."""
    from conftest import QUESTIONS, write_prompts

    from specexit.train.labels import LabelConfig
    from specexit.train.pipeline import stage_labels, stage_traces
    from specexit.train.traces import TraceConfig, load_traces

    plain = SpecExitGenerator.from_pretrained(thinking_tiny_dir)
    ids = plain.encode_prompt(QUESTIONS[0])
    texts = [plain.tokenizer.decode([t]) for t in plain.generate(input_ids=ids, mode="vanilla").token_ids]
    marker = next(t.strip() for t in texts[20:] if len(t.strip()) >= 3 and t.strip().isalpha())
    gen = SpecExitGenerator.from_pretrained(thinking_tiny_dir, answer_trigger=TRIGGER, answer_markers=(marker,))
    prompts = write_prompts(tmp_path / "p.jsonl", QUESTIONS)
    stage_traces(gen, prompts, tmp_path, TraceConfig(max_new_tokens=96, temperature=0.0), progress=False)
    traces = [tr for _, tr in load_traces(tmp_path / "traces.jsonl")]
    with_span = [tr for tr in traces if tr["think_end"] is not None]
    assert with_span, "the chosen marker occurs in at least the first trace"
    for tr in with_span:
        body = [gen.tokenizer.decode([t]) for t in tr["output_ids"]]
        assert tr["think_start"] == 0 and reasoning_length(body, (marker,)) == tr["think_end"]
        assert marker.lower() not in "".join(body[: tr["think_end"]]).lower()
    stats = stage_labels(gen, tmp_path, LabelConfig(probe_tokens=4, reference="trace"), progress=False)
    assert stats["labelled"] == len(with_span)
