"""``--dtype auto``: float32 where bf16 is emulated; where it is native, bf16 only when a measured decode
step is >= 10% faster; the decision is cached per model shape and machine and reported."""

from __future__ import annotations

import pytest
import torch

import specexit.machine as machine
import specexit.target as target_mod
from specexit.engine import SpecExitGenerator
from specexit.target import TargetModel
from specexit.tiny import make_tiny


@pytest.fixture()
def tiny(tmp_path, monkeypatch):
    monkeypatch.setenv("SPECEXIT_CACHE", str(tmp_path / "cache"))
    return make_tiny("qwen2", tmp_path / "tiny")


def test_emulated_bf16_means_float32_without_measuring(tiny, monkeypatch):
    monkeypatch.setattr(machine, "bf16_native", lambda: False)
    monkeypatch.setattr(target_mod, "_decode_ms", lambda t: pytest.fail("no measurement without native bf16"))
    t = TargetModel.from_pretrained(tiny, dtype="auto")
    assert t.dtype == torch.float32 and "emulated" in t.dtype_choice["why"]


@pytest.mark.parametrize(("fp32_ms", "bf16_ms", "chosen"), [(10.0, 8.0, torch.bfloat16), (10.0, 9.5, torch.float32)])
def test_native_bf16_is_kept_only_when_measured_faster(tiny, monkeypatch, fp32_ms, bf16_ms, chosen):
    monkeypatch.setattr(machine, "bf16_native", lambda: True)
    calls = []

    def fake_ms(t):
        calls.append(t.dtype)
        return fp32_ms if t.dtype == torch.float32 else bf16_ms

    monkeypatch.setattr(target_mod, "_decode_ms", fake_ms)
    t = TargetModel.from_pretrained(tiny, dtype="auto")
    assert calls == [torch.float32, torch.bfloat16]
    assert t.dtype == chosen and next(t.model.parameters()).dtype == chosen
    assert t.dtype_choice["decode_ms"] == {"float32": fp32_ms, "bfloat16": bf16_ms}
    # the decision is cached: the next load measures nothing and loads straight in the chosen dtype
    again = TargetModel.from_pretrained(tiny, dtype="auto")
    assert len(calls) == 2 and again.dtype == chosen and again.dtype_choice == t.dtype_choice


def test_the_choice_is_in_the_backend_description_and_decoding_counts_start_at_zero(tiny, monkeypatch):
    monkeypatch.setattr(machine, "bf16_native", lambda: True)
    gen = SpecExitGenerator.from_pretrained(tiny, dtype="auto")
    about = gen.describe()
    assert about["dtype_choice"]["dtype"] == about["models"]["target"]["dtype"]
    assert set(about["dtype_choice"]["decode_ms"]) == {"float32", "bfloat16"}
    assert gen.target.forward_calls == 0  # measuring is not decoding
