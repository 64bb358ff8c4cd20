"""The training pipeline: prompts -> traces -> labels -> vocab -> (hidden) -> draft, on a tiny model."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import torch
from conftest import QUESTIONS, write_prompts
from transformers import AutoTokenizer

from specexit.cli import main as cli_main
from specexit.draft import Eagle3Draft
from specexit.engine import SpecExitGenerator
from specexit.errors import ConfigError, SpecExitError
from specexit.prompts import DataError, load_prompts
from specexit.target import TargetModel
from specexit.train import labels as labels_mod
from specexit.train.data import OfflineFeatures, OnlineFeatures, build_examples, extract_hidden
from specexit.train.labels import (
    LabelConfig,
    boundary_cuts,
    confirmed,
    count_mentions,
    label_trace,
    position_labels,
    probe_answers,
)
from specexit.train.pipeline import _examples, stage_draft, stage_labels, stage_traces
from specexit.train.traces import TraceConfig, load_traces, thinking_span
from specexit.train.trainer import (
    TrainConfig,
    Trainer,
    epoch_generator,
    optimizer_step,
    split_examples,
    warmup_schedule,
)
from specexit.train.vocab import choose_vocab


def _write_prompts(path: Path, n: int = 5) -> Path:
    return write_prompts(path, QUESTIONS[:n])


@pytest.fixture(scope="module")
def model_dir(thinking_tiny_dir):
    return thinking_tiny_dir


@pytest.fixture(scope="module")
def gen(model_dir):
    return SpecExitGenerator(TargetModel.from_pretrained(model_dir), AutoTokenizer.from_pretrained(model_dir))


@pytest.fixture(scope="module")
def pipe(tiny_pipeline):
    return tiny_pipeline


# --- prompts and traces -------------------------------------------------------------------------
def test_prompt_file_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "p.jsonl"
    for content, match in [
        ("", r"p.jsonl: no prompts \(the file is empty\)"),
        ('{"question": "a"}\n{"question": "b"\n', r"p.jsonl:2: not valid JSON"),
        ('{"question": "a"}\n\n{"q": "b"}\n', r"p.jsonl:3: needs a non-empty string field 'question'"),
        ('["a"]\n', r"p.jsonl:1: expected a JSON object, got list"),
        ('{"question": "a", "answer": [1]}\n', r"p.jsonl:1: 'answer' must be a string or a number"),
    ]:
        bad.write_text(content)
        with pytest.raises(DataError, match=match):
            load_prompts(bad)
    with pytest.raises(DataError, match="file not found"):
        load_prompts(tmp_path / "missing.jsonl")


def test_jsonl_append_cut_torn_tail_and_read(tmp_path):
    from specexit.jsonl import append_jsonl, drop_torn_tail, iter_jsonl

    path = tmp_path / "log.jsonl"
    append_jsonl(path, [{"step": 1}, {"step": 2}])
    append_jsonl(path, [{"step": 3}])
    with path.open("a") as f:
        f.write('{"step": 4, "lo')  # killed mid-write
    with pytest.raises(DataError, match=r"log.jsonl:4: not valid JSON"):
        list(iter_jsonl(path))
    drop_torn_tail(path)
    assert [(n, obj["step"]) for n, obj in iter_jsonl(path)] == [(1, 1), (2, 2), (3, 3)]
    drop_torn_tail(tmp_path / "absent.jsonl")  # nothing to cut
    with pytest.raises(DataError, match="file not found"):
        list(iter_jsonl(tmp_path / "absent.jsonl"))


def test_thinking_span():
    # prompt opens thinking (template ends with <think>=3); output closes it with </think>=4
    assert thinking_span([1, 3], [7, 8, 4, 9], 3, 4) == (0, 2)
    assert thinking_span([1], [3, 7, 8, 4, 9], 3, 4) == (1, 3)  # generated <think>
    assert thinking_span([1, 3], [7, 8, 9], 3, 4) is None  # never closed
    assert thinking_span([1, 3, 4], [7, 4], 3, 4) is None  # prompt's span already closed, none generated


def test_traces_resume_after_a_torn_write(gen, tmp_path):
    prompts = _write_prompts(tmp_path / "prompts.jsonl", 4)
    cfg = TraceConfig(max_new_tokens=24, samples=2, backend="engine")
    path = stage_traces(gen, prompts, tmp_path, cfg, progress=False)
    full = [json.loads(line) for line in path.read_text().splitlines()]
    # simulate a kill: the last two traces lost, the one before torn in the middle of its line
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(lines[:5]) + lines[5][: len(lines[5]) // 2])
    stage_traces(gen, prompts, tmp_path, cfg, progress=False)
    again = [tr for _, tr in load_traces(path)]
    keys = [(t["prompt_id"], t["sample"]) for t in again]
    assert sorted(keys) == sorted((p, s) for p in range(4) for s in range(2)) and len(set(keys)) == 8
    # engine backend: per-trace seeds make a redone trace identical to the original
    by_key = {(t["prompt_id"], t["sample"]): t["output_ids"] for t in again}
    assert all(by_key[(t["prompt_id"], t["sample"])] == t["output_ids"] for t in full)


def test_no_thinking_traces_start_after_the_templates_empty_span(gen, tmp_path):
    prompts = _write_prompts(tmp_path / "prompts.jsonl", 2)
    think = stage_traces(gen, prompts, tmp_path / "think", TraceConfig(max_new_tokens=16, backend="engine"), False)
    cfg = TraceConfig(max_new_tokens=16, backend="engine", enable_thinking=False)
    path = stage_traces(gen, prompts, tmp_path / "nothink", cfg, progress=False)
    on = {t["prompt_id"]: t for _, t in load_traces(think)}
    for _, t in load_traces(path):
        # the template wrote the closed span into the prompt, so the output is all answer: no span to learn
        assert len(t["prompt_ids"]) > len(on[t["prompt_id"]]["prompt_ids"])
        assert gen.think_end_id not in on[t["prompt_id"]]["prompt_ids"]
        assert gen.think_end_id in t["prompt_ids"] and t["think_start"] is None and t["think_end"] is None
    run = json.loads((tmp_path / "nothink" / "pipeline.json").read_text())
    assert run["stages"]["traces"][-1]["sampling"]["enable_thinking"] is False


# --- labels ---------------------------------------------------------------------------------------
def test_position_labels_exact():
    prog, rem, conf, mask = position_labels(5, cuts=[2, 4], correct=[False, True], fill="hold")
    assert prog == [0.2, 0.4, 0.6, 0.8, 1.0]
    assert rem == [4.0, 3.0, 2.0, 1.0, 0.0]
    assert conf == [0.0, 0.0, 0.0, 1.0, 1.0] and all(mask)
    _, _, conf, mask = position_labels(5, cuts=[2, 4], correct=[True, False], fill="boundary")
    assert conf == [0.0, 1.0, 0.0, 0.0, 0.0] and mask == [False, True, False, True, False]
    with pytest.raises(ValueError):
        position_labels(5, [2], [True, False])


def test_confirmed_labels_need_the_answer_re_derived():
    correct = [False, True, False, True, True]
    mentions = [1, 1, 1, 2, 3]  # first pass states 78 once, the re-check a second and third time
    assert confirmed(correct, mentions, 0) == correct
    assert confirmed(correct, mentions, 1) == [False, False, False, True, True]
    assert confirmed(correct, mentions, 2) == [False, False, False, False, True]
    with pytest.raises(ConfigError, match="confirm"):
        confirmed([True], [1], -1)
    with pytest.raises(ValueError):
        confirmed([True, False], [1], 1)


def test_count_mentions_counts_whole_numbers_only():
    text = "4 * 18 = 72 stickers.\n\n72 + 6 = 78 stickers.\n\n178 - 100 = 78. Not 7.8 or 780."
    assert count_mentions(text, "78") == 2
    assert count_mentions(text, "72") == 2
    assert count_mentions(text, "7") == 0
    assert count_mentions("x = -5, y = 5", "-5") == 1
    assert count_mentions("the answer is B, B again", "B") == 2
    assert count_mentions(text, None) == 0


def test_build_examples_applies_confirm():
    trace = {"prompt_id": 3, "sample": 0, "prompt_ids": [1, 2], "output_ids": list(range(10, 22))}
    lab = {"prompt_id": 3, "sample": 0, "span": [0, 10], "cuts": [3, 6, 9], "probe_correct": [True, False, True],
           "probe_mentions": [1, 1, 2]}  # fmt: skip
    (plain,) = build_examples([(1, trace)], {(3, 0): lab}, max_len=64)
    (checked,) = build_examples([(1, trace)], {(3, 0): lab}, max_len=64, confirm=1)
    assert plain.correct == [True, False, True] and checked.correct == [False, False, True]
    assert checked.signal_targets("hold")["confidence"][2:12].tolist() == [0] * 8 + [1, 1]
    old = {k: v for k, v in lab.items() if k != "probe_mentions"}
    assert build_examples([(1, trace)], {(3, 0): old}, max_len=64)[0].correct == [True, False, True]
    with pytest.raises(DataError, match="probe_mentions"):
        build_examples([(1, trace)], {(3, 0): old}, max_len=64, confirm=1)


def test_confidence_confirm_option_reaches_the_trained_labels(gen, pipe, tmp_path, monkeypatch):
    """`specexit train draft|all --confidence-confirm N` (docs/training.md): parsed into TrainConfig, off by
    default, validated, and applied to the labels of the examples the draft is trained on."""
    import argparse

    from specexit.train import cli as train_cli
    from specexit.train import pipeline

    ap = argparse.ArgumentParser()
    train_cli.register(ap.add_subparsers(dest="cmd"))
    base = ["train", "draft", "--target", "T", "--out", "O"]
    assert train_cli._configs(ap.parse_args([*base, "--confidence-confirm", "2"]))[2].confidence_confirm == 2
    assert train_cli._configs(ap.parse_args(base))[2].confidence_confirm == 0  # default: "right" is enough
    with pytest.raises(ConfigError, match="confidence confirm must be >= 0"):
        TrainConfig(confidence_confirm=-1).validate()

    out = tmp_path / "run"
    out.mkdir()
    for name in ("traces.jsonl", "vocab.json"):
        (out / name).write_bytes((pipe / name).read_bytes())
    # every probe right, the k-th cut's answer stated k + 1 times so far: confirm 1 turns the first cut negative
    records = [json.loads(line) for line in (pipe / "labels.jsonl").read_text().splitlines()]
    for r in records:
        r["probe_correct"], r["probe_mentions"] = [True] * len(r["cuts"]), list(range(1, len(r["cuts"]) + 1))
    assert any(r["cuts"] for r in records)
    (out / "labels.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    by_key = {(r["prompt_id"], r["sample"]): r for r in records}

    class Capture:  # stands in for the Trainer: what matters here is the examples it is given
        def __init__(self, draft, train_ex, val_ex, *args, **kwargs) -> None:
            self.examples = train_ex + val_ex

        def train(self) -> dict:
            return {"examples": self.examples}

    monkeypatch.setattr(pipeline, "Trainer", Capture)
    seen = {}
    for n in (0, 1):
        cfg = TrainConfig(max_steps=1, batch_size=2, val_fraction=0.2, confidence_confirm=n)
        seen[n] = {ex.key: ex.correct for ex in stage_draft(gen, out, cfg, progress=False)["examples"]}
        for key, correct in seen[n].items():
            r = by_key.get(key)
            assert correct == ([] if r is None else confirmed(r["probe_correct"], r["probe_mentions"], n))
    assert seen[0] != seen[1] and sum(map(sum, seen[1].values())) < sum(map(sum, seen[0].values()))


def test_boundary_cuts_on_hand_made_tokens():
    from specexit.boundaries import BoundaryDetector

    text = {0: "A", 1: "\n\n", 2: "B", 3: "Wait", 4: ".\n\n"}
    det = BoundaryDetector(text.__getitem__, paragraph=True, connectors=("Wait",))
    # A \n\n Wait B .\n\n  -> paragraph after index 1 (keep 2), connector at 2 (keep 2), paragraph at 4 (keep 5)
    assert boundary_cuts(det, [0, 1, 3, 2, 4]) == [2, 5]
    assert boundary_cuts(det, [0, 2]) == []


def test_batched_probes_equal_one_greedy_decode_per_probe(gen):
    tok_ids = gen.encode_prompt("What is 12 + 7?")
    prefix = tok_ids + gen.generate(input_ids=tok_ids, mode="vanilla", max_new_tokens=40).token_ids
    cuts = [len(tok_ids) + c for c in (3, 11, 12, 30)]
    probs: list[list[float]] = []
    batched = probe_answers(gen.target, prefix, cuts, [gen.think_end_id], gen.stop_ids, max_tokens=10, probs_out=probs)
    for cut, got, got_p in zip(cuts, batched, probs, strict=True):
        ref = gen.generate(input_ids=[*prefix[:cut], gen.think_end_id], mode="vanilla", max_new_tokens=10).token_ids
        assert got == ref
        # each answer token's probability, as one full forward over the probe's own sequence gives it
        seq = torch.tensor([[*prefix[:cut], gen.think_end_id, *ref]])
        with torch.no_grad():
            p = torch.softmax(gen.target.model(input_ids=seq).logits[0].float(), -1)
        start = cut  # logits at position cut (the forced think-end) predict the first answer token
        want = [float(p[start + i, t]) for i, t in enumerate(ref)]
        assert got_p == pytest.approx(want, abs=1e-4)


def _scripted(encoded: list[list[int]], probs: list[list[float]] | None = None):
    """A stand-in for probe_answers that returns fixed answers (and fills the probabilities)."""

    def run(*args, **kw):
        out = kw.get("probs_out", args[6] if len(args) > 6 else None)
        answers = encoded if len(encoded) == len(args[2]) else [encoded[0]] * len(args[2])
        if out is not None:
            out[:] = probs if probs is not None else [[1.0] * len(a) for a in answers]
        return answers

    return run


def test_probe_confidence_is_the_mean_probability_of_the_boxed_value(gen):
    from specexit.probe import answer_confidence

    tok = gen.tokenizer
    ids = tok.encode("The answer is \\boxed{12}.", add_special_tokens=False)
    pieces = [tok.decode([t]) for t in ids]
    # value tokens (digits, the closing brace) at 0.5, the rest at 0.99: the score reads only the value
    probs = [0.5 if any(c.isdigit() or c == "}" for c in x) else 0.99 for x in pieces]
    assert answer_confidence(tok, ids, probs) == pytest.approx(0.5)
    plain = tok.encode("12", add_special_tokens=False)  # no box (a judge's trial starts inside it): all tokens
    assert answer_confidence(tok, plain, [0.2] * len(plain)) == pytest.approx(0.2)


def test_confidence_from_scripted_probes(gen, monkeypatch):
    """Probe answers are scripted: the label is whether the forced answer matches gold (or, without
    gold, the trace's own final answer), and positions hold the last boundary's value."""
    para = gen.tokenizer.get_vocab()["ĊĊ"]
    a = gen.tokenizer.encode("x", add_special_tokens=False)[0]
    output = [a, para, a, a, para, a, para, gen.think_end_id, a]
    trace = {"prompt_id": 0, "sample": 0, "prompt_ids": gen.encode_prompt("q"), "output_ids": output,
             "think_start": 0, "think_end": 7, "gold": "42", "final_answer": "7"}  # fmt: skip
    scripted = ["The answer is \\boxed{41}.", "So \\boxed{42}", "I think 7"]
    encoded = [gen.tokenizer.encode(s, add_special_tokens=False) for s in scripted]
    monkeypatch.setattr(labels_mod, "probe_answers", _scripted(encoded, [[0.9] * len(e) for e in encoded]))
    lab = label_trace(gen, trace, LabelConfig())
    assert lab["probe_confidence"] == [0.9, 0.9, 0.9]
    assert lab["cuts"] == [2, 5, 7] and lab["span"] == [0, 7]
    assert lab["probe_answers"] == ["41", "42", "7"] and lab["probe_correct"] == [False, True, False]
    assert lab["probe_mentions"] == [0, 0, 0]  # the thinking text never states an answer
    _, _, conf, _ = position_labels(7, lab["cuts"], lab["probe_correct"])
    assert conf == [0, 0, 0, 0, 1, 1, 0]
    # reference "trace": a probe is right when it gives the trace's own final answer, even with gold known
    lab = label_trace(gen, trace, LabelConfig(reference="trace"))
    assert lab["probe_correct"] == [False, False, True] and lab["reference_kind"] == "trace"
    with pytest.raises(ConfigError, match="label reference"):
        LabelConfig(reference="oracle").validate()
    lab = label_trace(gen, {**trace, "gold": None}, LabelConfig())  # no gold: compare with the trace's answer
    assert lab["reference_kind"] == "trace" and lab["probe_correct"] == [False, False, True]
    # mentions: how often the thinking up to each cut states that cut's probe answer
    t42 = gen.tokenizer.encode(" 42", add_special_tokens=False)
    output = [*t42, para, a, para, *t42, para, gen.think_end_id, a]
    end = len(output) - 2
    monkeypatch.setattr(labels_mod, "probe_answers", _scripted([encoded[1]]))
    lab = label_trace(gen, {**trace, "output_ids": output, "think_end": end}, LabelConfig())
    assert lab["probe_correct"] == [True, True, True] and lab["probe_mentions"] == [1, 1, 2]


def test_traces_without_thinking_span_are_a_clear_error(gen, tmp_path):
    rec = {"prompt_id": 0, "sample": 0, "prompt_ids": [1], "output_ids": [5, 6], "think_start": None,
           "think_end": None, "finish_reason": "stop"}  # fmt: skip
    (tmp_path / "traces.jsonl").write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "prompt_id": 1}) + "\n")
    with pytest.raises(DataError, match=r"traces.jsonl:1: no usable trace among 2: none has a thinking span"):
        stage_labels(gen, tmp_path, LabelConfig(), progress=False)
    (tmp_path / "traces.jsonl").write_text('{"prompt_id": 0}\n')
    with pytest.raises(DataError, match=r"traces.jsonl:1: trace lacks field"):
        stage_labels(gen, tmp_path, LabelConfig(), progress=False)


def test_target_without_think_end_token(model_dir, tmp_path):
    g = SpecExitGenerator.from_pretrained(model_dir, think_end="</reasoning>")
    with pytest.raises(ConfigError, match="no '</reasoning>' token"):
        stage_traces(g, _write_prompts(tmp_path / "p.jsonl"), tmp_path, TraceConfig(), progress=False)


def test_choose_vocab():
    counts = Counter({5: 10, 9: 10, 2: 3, 7: 1})
    assert choose_vocab(counts, 3, 20, always=[0]) == [0, 5, 9]  # ties broken by lower id
    assert choose_vocab(counts, 6, 20) == [0, 1, 2, 5, 7, 9]  # filler: lowest unused ids
    assert choose_vocab(counts, 50, 8) == list(range(8))


# --- trainer ----------------------------------------------------------------------------------------
def _trainer(gen, pipe, out, steps, features=None, **kw):
    from specexit.draft import init_draft
    from specexit.train.vocab import load_vocab

    draft = init_draft(gen.target, used_ids=load_vocab(pipe / "vocab.json"))
    train, val = split_examples(_examples(pipe, 2048), 0.2)
    cfg = TrainConfig(max_steps=steps, batch_size=2, lr=1e-3, ckpt_every=4, eval_every=100, **kw)
    feats = features or OnlineFeatures(gen.target, draft.draft_to_target)
    return Trainer(draft, train, val, feats, cfg, out, progress=False)


def test_rules_shared_with_the_testbed_trainer():
    """warm-up / cosine schedule, seeded epoch order and the update step (testbed/train.py uses them too)."""
    constant = warmup_schedule(4)
    assert [constant(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert warmup_schedule(0)(0) == 1.0  # at least one warm-up step
    cosine = warmup_schedule(2, total=10, min_ratio=0.1)
    assert [cosine(0), cosine(1)] == [0.5, 1.0] and cosine(2) == pytest.approx(1.0)
    assert cosine(6) == pytest.approx(0.55) and cosine(10) == pytest.approx(0.1) and cosine(99) == pytest.approx(0.1)
    order = [torch.randperm(9, generator=epoch_generator(3, e)).tolist() for e in (1, 1, 2)]
    assert order[0] == order[1] != order[2]

    w = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.SGD([w], lr=1.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, warmup_schedule(2))
    gnorm = optimizer_step((3.0 * w).sum(), opt, sched, [w], grad_clip=1.0)
    assert float(gnorm) == pytest.approx(6.0)  # the norm before clipping
    assert torch.allclose(w.detach(), torch.full((4,), 1.0 - 0.5 * 0.5))  # lr 1 x warm-up 0.5 x clipped grad 0.5
    assert sched.get_last_lr() == [1.0]


def _curve(out: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (out / "metrics.jsonl").read_text().splitlines() if "loss" in line]


def test_resume_after_a_crash_continues_the_same_loss_curve(gen, pipe, tmp_path):
    _trainer(gen, pipe, tmp_path / "full", 10).train()
    full = _curve(tmp_path / "full")

    crashed = _trainer(gen, pipe, tmp_path / "crash", 10)
    calls = {"n": 0}
    real = crashed.features

    def dies_at_step_7(ex):
        calls["n"] += 1
        if calls["n"] > 6 * 2:  # batch of 2: the 7th step's features -> killed after checkpoint 4
            raise KeyboardInterrupt
        return real(ex)

    crashed.features = dies_at_step_7
    with pytest.raises(KeyboardInterrupt):
        crashed.train()
    assert len(_curve(tmp_path / "crash")) == 6
    (tmp_path / "crash" / "checkpoints" / "step_0000009.partial").mkdir()  # a torn save is ignored
    resumed = _trainer(gen, pipe, tmp_path / "crash", 10)
    summary = resumed.train()
    assert summary["resumed"] and summary["steps"] == 10
    assert _curve(tmp_path / "crash") == pytest.approx(full, rel=1e-5)


def test_training_learns_and_offline_features_match_online(gen, pipe, tmp_path):
    online = _trainer(gen, pipe, tmp_path / "online", 1)
    used = online.draft.draft_to_target
    extract_hidden(gen.target, online.train_ex + online.val_ex, tmp_path / "hidden", used, shard_size=3, progress=False)
    offline = OfflineFeatures(tmp_path / "hidden")
    ex = online.train_ex[0]
    a, b = online.features(ex), offline(ex)
    torch.testing.assert_close(b[0], a[0], atol=2e-2, rtol=1e-2)  # float16 storage
    torch.testing.assert_close(b[1], a[1], atol=5e-2, rtol=1e-2)
    assert torch.equal(a[2], b[2])
    _trainer(gen, pipe, tmp_path / "learn", 60, features=offline).train()
    curve = _curve(tmp_path / "learn")
    assert sum(curve[-5:]) / 5 < 0.7 * sum(curve[:5]) / 5, "the loss should fall on the training set"


def test_freeze_token_head_trains_only_the_signal_rows(gen, pipe, tmp_path):
    from specexit.draft import init_draft
    from specexit.train.vocab import load_vocab

    plain = init_draft(gen.target, signals=[], used_ids=load_vocab(pipe / "vocab.json"))
    plain.save_pretrained(tmp_path / "eagle3")
    assert cli_main(["convert", "--eagle3", str(tmp_path / "eagle3"), "--out", str(tmp_path / "se"),
                     "--target", str(gen.target.model.name_or_path)]) == 0  # fmt: skip
    before = Eagle3Draft.from_pretrained(tmp_path / "se", target=gen.target)
    cfg = TrainConfig(max_steps=5, batch_size=2, lr=1e-2, freeze_token_head=True, val_fraction=0.2)
    out = tmp_path / "run"
    for name in ("traces.jsonl", "labels.jsonl", "vocab.json"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes((pipe / name).read_bytes())
    stage_draft(gen, out, cfg, init=tmp_path / "se", progress=False)
    after = Eagle3Draft.from_pretrained(out / "draft", target=gen.target)
    h = before.cfg.hidden_size
    sb, sa = before.state_dict(), after.state_dict()
    for name in sb:
        if name == "fc.weight":
            assert torch.equal(sa[name][:h], sb[name][:h])
            assert not torch.equal(sa[name][h:], sb[name][h:])
        else:
            assert torch.equal(sa[name], sb[name]), name
    with pytest.raises(ConfigError, match="give a trained draft with --init"):
        stage_draft(gen, out, cfg, progress=False)


def test_narrow_draft_saved_in_bfloat16_loads_and_proposes(gen, pipe, tmp_path):
    """--draft-intermediate + --save-dtype bfloat16: the shippable-size draft of docs/zoo.md."""
    out = tmp_path / "run"
    for name in ("traces.jsonl", "labels.jsonl", "vocab.json"):
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes((pipe / name).read_bytes())
    cfg = TrainConfig(max_steps=3, batch_size=2, val_fraction=0.2, draft_intermediate=24, save_dtype="bfloat16")
    stage_draft(gen, out, cfg, progress=False)
    from safetensors.torch import load_file

    state = load_file(str(out / "draft" / "model.safetensors"))
    assert state["midlayer.mlp.up_proj.weight"].shape[0] == 24
    assert state["fc.weight"].dtype == torch.bfloat16 and state["d2t"].dtype == torch.long
    draft = Eagle3Draft.from_pretrained(out / "draft", target=gen.target)
    assert draft.cfg.intermediate_size == 24 and draft.fc.weight.dtype == torch.float32
    spec = SpecExitGenerator(gen.target, gen.tokenizer, draft)
    ids = spec.encode_prompt("What is 2 + 2?")
    ref = spec.generate(input_ids=ids, mode="vanilla", max_new_tokens=30)
    assert spec.generate(input_ids=ids, mode="spec", max_new_tokens=30).token_ids == ref.token_ids
    with pytest.raises(ConfigError, match="save dtype"):
        TrainConfig(save_dtype="int8").validate()
    with pytest.raises(ConfigError, match="intermediate size must be positive"):
        TrainConfig(draft_intermediate=0).validate()


# --- the one command ----------------------------------------------------------------------------------
def test_train_all_cli_produces_a_draft_that_specexit_loads(model_dir, tmp_path, capsys):
    prompts = _write_prompts(tmp_path / "prompts.jsonl")
    out = tmp_path / "pipeline"
    argv = ["train", "all", "--target", str(model_dir), "--prompts", str(prompts), "--out", str(out),
            "--max-new-tokens", "96", "--max-steps", "8", "--batch", "2", "--samples", "2",
            "--no-progress"]  # fmt: skip
    assert cli_main(argv) == 0
    report = json.loads((out / "pipeline.json").read_text())
    assert report["train"]["steps"] == 8 and report["labels"]["labelled"] > 0
    assert set(report["timings"]) == {"traces_s", "labels_s", "vocab_hidden_s", "train_s"}
    capsys.readouterr()
    gen_argv = ["generate", "--target", str(model_dir), "--draft", str(out / "draft"), "--prompt", "What is 2 + 2?",
                "--mode", "specexit", "--max-new-tokens", "40", "--json"]  # fmt: skip
    assert cli_main(gen_argv) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert result["mode"] == "specexit" and result["new_tokens"] > 0
    assert cli_main([*argv[:-1], "--no-progress"]) == 0  # rerun: every stage resumes, nothing is redone
    assert len((out / "traces.jsonl").read_text().splitlines()) == 10
    # pipeline.json keeps both runs of each stage: the rerun is a no-op and does not replace the first's time
    again = json.loads((out / "pipeline.json").read_text())
    stages = again["stages"]
    assert [r["new_traces"] for r in stages["traces"]] == [10, 0] and stages["traces"][1]["resumed_noop"]
    assert [r["new_steps"] for r in stages["draft"]] == [8, 0] and stages["draft"][1]["resumed_noop"]
    assert stages["traces"][0] == report["stages"]["traces"][0]
    assert report["timings"]["train_s"] == pytest.approx(stages["draft"][0]["wall_s"], abs=0.01)
    assert again["timings"]["train_s"] >= report["timings"]["train_s"] > 0
    with pytest.raises(SystemExit):
        cli_main(["train", "all", "--target", str(model_dir)])  # argparse: --out and --prompts required
    assert issubclass(DataError, SpecExitError)
