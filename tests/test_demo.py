"""The shipped testbed model and draft, and ``specexit demo`` (the README's first command)."""

from __future__ import annotations

import json

import pytest
from transformers import AutoTokenizer

from specexit.cli import main as run_cli
from specexit.demo import ASSET_DRAFT, ASSET_TARGET, MODES, asset_dir
from specexit.draft import Eagle3Draft
from specexit.target import TargetModel


def test_shipped_testbed_loads_as_a_qwen3_reasoning_model():
    target = TargetModel.from_pretrained(asset_dir(ASSET_TARGET))
    assert type(target.model).__name__ == "Qwen3ForCausalLM"
    tok = AutoTokenizer.from_pretrained(asset_dir(ASSET_TARGET))
    for marker in ("<think>", "</think>", "<|im_start|>", "<|im_end|>"):
        assert marker in tok.get_vocab(), marker
    draft = Eagle3Draft.from_pretrained(asset_dir(ASSET_DRAFT), target=target)
    assert set(draft.signals) == {"confidence", "progress", "remain"}
    weights = list(asset_dir(ASSET_TARGET).glob("*.safetensors")) + list(asset_dir(ASSET_DRAFT).glob("*.safetensors"))
    assert weights and all(w.stat().st_size < 25_000_000 for w in weights)


def test_demo_json_is_complete_and_consistent(capsys):
    assert run_cli(["--threads", "1", "demo", "--problems", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert set(res["methods"]) == set(MODES)
    for name, m in res["methods"].items():
        for key in ("accuracy", "thinking_tokens", "total_tokens", "mean_accept_length", "latency_s"):
            assert m[key] is not None, (name, key)
        assert m["latency_s"] > 0
        assert m["total_tokens"] >= m["thinking_tokens"] > 0
    spec, vanilla, sx = (res["methods"][k] for k in ("spec", "vanilla", "specexit"))
    # greedy speculative decoding is lossless, and early exit only ever removes thinking
    assert res["checks"]["spec_equals_vanilla"] is True
    assert spec["thinking_tokens"] == vanilla["thinking_tokens"] and spec["accuracy"] == vanilla["accuracy"]
    assert res["checks"]["specexit_tokens_le_spec"] is True
    assert sx["thinking_tokens"] <= spec["thinking_tokens"]
    # machine-independent cost, counted: plain decoding runs one target forward per token; the shipped
    # draft makes speculative decoding need under a quarter of that (it accepts ~5.9 tokens per round)
    assert vanilla["target_forwards_per_token"] == pytest.approx(1.0)
    assert spec["target_forwards_per_token"] < 0.25
    assert spec["target_forwards_per_token"] == pytest.approx(1 / spec["mean_accept_length"], rel=0.1)
    assert sx["target_forwards_per_token"] < 0.5
    assert res["problems"] == 3
    diff, lo, hi = sx["accuracy_diff_vs_spec"]  # paired: [difference, CI low, CI high]
    assert diff == pytest.approx(sx["accuracy"] - spec["accuracy"]) and lo <= diff <= hi
    assert spec["accuracy_diff_vs_spec"][0] == 0.0


def test_demo_rejects_bad_arguments(capsys):
    assert run_cli(["demo", "--problems", "0"]) == 2
    assert "--problems" in capsys.readouterr().err
    assert run_cli(["demo", "--tree", "16,5"]) == 2
    assert "--tree" in capsys.readouterr().err
    assert run_cli(["demo", "--target", "/nonexistent/testbed"]) == 2
    assert "/nonexistent/testbed" in capsys.readouterr().err
