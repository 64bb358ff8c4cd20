"""The offline replay of exit rules (specexit.calibration.replay) against the engine itself."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from specexit.boundaries import BoundaryDetector
from specexit.calibration.record import load_signals, record_signals
from specexit.calibration.replay import TraceSignals, outcome, replay_exit
from specexit.exit_policy import ExitConfig, ExitPolicy
from specexit.sampling import SamplingParams
from specexit.scoring import answers_equal, extract_answer

ASSETS = Path(__file__).resolve().parents[1] / "src" / "specexit" / "assets"


@pytest.fixture(scope="module")
def testbed_calibration(tmp_path_factory):
    """Greedy traces of 10 held-out testbed problems, their gold-referenced labels and signals."""
    from specexit.engine import SpecExitGenerator
    from specexit.testbed.problems import write_jsonl
    from specexit.train.labels import LabelConfig
    from specexit.train.pipeline import stage_labels, stage_traces
    from specexit.train.traces import TraceConfig

    gen = SpecExitGenerator.from_pretrained(ASSETS / "testbed", draft_dir=ASSETS / "testbed-draft")
    out = tmp_path_factory.mktemp("calib")
    prompts = write_jsonl(out / "prompts.jsonl", 10, seed=7, split="test")
    stage_traces(gen, prompts, out, TraceConfig(max_new_tokens=768, temperature=0.0, batch_size=10), progress=False)
    stage_labels(gen, out, LabelConfig(reference="gold"), progress=False)
    stats = record_signals(gen, out, out / "signals.jsonl", progress=False)
    assert record_signals(gen, out, out / "signals.jsonl", progress=False)["recorded_now"] == 0  # resumes
    return gen, out, load_signals(out / "signals.jsonl"), stats


def _rules() -> list[ExitConfig]:
    grid = [(0.5, 0.2, "none", 0), (0.3, 0.0, "ewma", 0), (0.7, 0.1, "window", 40), (0.9, 0.5, "none", 0)]
    return [
        ExitConfig(
            thresholds={"confidence": c, "progress": p},
            smoothing=s,
            alpha=0.5,
            readout="boundary",
            min_thinking_tokens=m,
        )
        for c, p, s, m in grid
    ]


def test_replay_matches_the_policy_fed_token_by_token(testbed_calibration):
    """The fast replay over recorded boundary signals exits where ExitPolicy, fed the trace's tokens and
    per-token states exactly as the engine feeds them, exits."""
    gen, folder, traces, _ = testbed_calibration
    from specexit.train.traces import load_traces, trace_key

    by_key = {(t.prompt_id, t.sample): t for t in traces}
    tok = gen.tokenizer
    checked = 0
    for _, tr in load_traces(folder / "traces.jsonl"):
        t = by_key.get(trace_key(tr))
        if t is None or not t.cuts:
            continue
        prompt, output = list(tr["prompt_ids"]), list(tr["output_ids"])
        with torch.inference_mode():
            fused, _ = gen.target.features(prompt + output)
            _, sig = gen.draft.fuse(fused[len(prompt) :])  # the state at each output token
        for rule in _rules():
            pol = ExitPolicy(rule, BoundaryDetector(lambda i: tok.decode([i])), gen.think_start_id, gen.think_end_id,
                             available_signals=gen.draft.signals)  # fmt: skip
            pol.start(prompt, tok.decode(prompt[-8:], skip_special_tokens=False))
            reads = [None] + [{n: float(v[j]) for n, v in sig.items()} for j in range(len(output))]
            d = pol.step(output, None, token_signals=reads)
            k = replay_exit(rule, t)
            assert (d.record is None) == (k is None), (rule, d.record, k)
            if k is not None:
                assert d.record.thinking_tokens == t.cuts[k]
            checked += 1
    assert checked >= 12


def test_replay_equals_real_greedy_generation(testbed_calibration):
    """For every trace and rule: the engine's own specexit run (greedy, speculative) exits at the
    replayed boundary and its answer is right exactly when the replay says so."""
    gen, folder, traces, _ = testbed_calibration
    from specexit.train.traces import load_traces, trace_key

    by_key = {(t.prompt_id, t.sample): t for t in traces}
    fired = 0
    for _, tr in load_traces(folder / "traces.jsonl"):
        t = by_key.get(trace_key(tr))
        if t is None:
            continue
        for rule in _rules()[:3]:
            r = gen.generate(input_ids=list(tr["prompt_ids"]), mode="specexit", exit_config=rule,
                             max_new_tokens=768, sampling=SamplingParams(temperature=0.0))  # fmt: skip
            o = outcome(rule, t)
            if o.exit_at is None:
                assert r.exit is None
            else:
                fired += 1
                assert r.exit is not None and r.exit["thinking_tokens"] == o.thinking
            assert answers_equal(extract_answer(r.answer), tr["gold"]) == o.right, (rule, r.answer, tr["gold"])
    assert fired >= 3  # the rules do exit (the test is not vacuous)


def test_signals_record_lines_up_with_the_labels(testbed_calibration):
    _, _, traces, stats = testbed_calibration
    assert stats["traces"] == len(traces) >= 4
    for t in traces:
        assert set(t.signals) == {"confidence", "progress", "remain"}
        assert all(len(v) == len(t.cuts) == len(t.cut_right) for v in t.signals.values())
        assert list(t.cuts) == sorted(t.cuts) and (not t.cuts or t.cuts[-1] <= t.thinking)
        assert TraceSignals.from_dict(t.to_dict()) == t


def test_a_round_readout_rule_is_refused():
    t = TraceSignals(0, 0, 10, True, (5,), (True,), {"confidence": (0.9,)})
    with pytest.raises(ValueError, match="boundary read-out"):
        replay_exit(ExitConfig(thresholds={"confidence": 0.5}), t)


def test_replay_of_an_agreement_rule_counts_answers_where_the_signal_passes():
    t = TraceSignals(0, 0, 100, True, (10, 20, 30, 40), (False, False, True, True),
                     {"confidence": (0.9, 0.1, 0.9, 0.9)}, ("6", "30", "30", "30"))  # fmt: skip
    rule = ExitConfig(thresholds={"confidence": 0.5}, smoothing="none", readout="boundary", agree=2)
    assert replay_exit(rule, t) == 3  # "30" at index 1 was never asked: the signal failed there
    assert replay_exit(ExitConfig(thresholds={"confidence": 0.5}, smoothing="none", readout="boundary"), t) == 0
    with pytest.raises(ValueError, match="forced answers"):
        replay_exit(rule, TraceSignals(0, 0, 100, True, (10,), (True,), {"confidence": (0.9,)}))


def test_agreement_replay_equals_real_greedy_generation(testbed_calibration):
    """A rule confirmed by trial answers: the engine writes them where the signals pass and exits where
    the replay over the labels' forced answers says (greedy, speculative)."""
    gen, folder, traces, _ = testbed_calibration
    from specexit.train.traces import load_traces, trace_key

    by_key = {(t.prompt_id, t.sample): t for t in traces}
    rules = [ExitConfig(thresholds={"confidence": c}, smoothing="none", readout="boundary", agree=k)
             for c, k in ((0.3, 1), (0.3, 2))]  # fmt: skip
    fired = asked = 0
    for _, tr in load_traces(folder / "traces.jsonl"):
        t = by_key.get(trace_key(tr))
        if t is None:
            continue
        assert len(t.answers) == len(t.cuts)
        for rule in rules:
            r = gen.generate(input_ids=list(tr["prompt_ids"]), mode="specexit", exit_config=rule,
                             max_new_tokens=768, sampling=SamplingParams(temperature=0.0))  # fmt: skip
            o = outcome(rule, t)
            asked += r.probe_calls
            if o.exit_at is None:
                assert r.exit is None
            else:
                fired += 1
                assert r.exit is not None and r.exit["thinking_tokens"] == o.thinking
                assert r.exit["raw"]["agree"] >= rule.agree
            assert answers_equal(extract_answer(r.answer), tr["gold"]) == o.right, (rule, r.answer, tr["gold"])
    assert fired >= 3 and asked > fired  # exits happen, and some trial answers did not agree
