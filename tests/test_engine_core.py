"""Core engine checks on tiny random models of the three architectures (no downloads)."""

import pytest
import torch
from transformers import AutoTokenizer

from specexit.draft import Eagle3Draft, init_draft
from specexit.engine import SpecExitGenerator
from specexit.errors import CheckpointError, ConfigError
from specexit.exit_policy import ExitConfig, SignalSmoother
from specexit.proposer import TreeConfig
from specexit.target import TargetModel
from specexit.tiny import make_tiny


@pytest.fixture(scope="module", params=["llama", "qwen2", "qwen3"])
def gen(request, tmp_path_factory):
    path = make_tiny(request.param, tmp_path_factory.mktemp(request.param))
    target = TargetModel.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    return SpecExitGenerator(target, tok, init_draft(target))


@pytest.mark.parametrize("tree", [TreeConfig(), TreeConfig(chain=True, depth=4), TreeConfig(8, 3, 3)])
def test_spec_greedy_equals_vanilla(gen, tree):
    for prompt, n in [("What is 12 + 7?", 120), ("Wait, so the total", 37)]:
        ids = gen.encode_prompt(prompt)
        ref = gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=n)
        out = gen.generate(input_ids=ids, mode="spec", max_new_tokens=n, tree=tree)
        assert out.token_ids == ref.token_ids
        assert out.new_tokens == n


def test_vanilla_matches_hf_generate(gen):
    ids = gen.encode_prompt("Add 3 and 4.")
    ref = gen.target.model.generate(torch.tensor([ids]), max_new_tokens=60, do_sample=False, eos_token_id=None)
    out = gen.generate(input_ids=ids, mode="vanilla", max_new_tokens=60)
    assert ref[0, len(ids) :].tolist()[: out.new_tokens] == out.token_ids


def test_bad_inputs(gen, tmp_path):
    with pytest.raises(ConfigError, match="max_new_tokens"):
        gen.generate("hi", mode="spec", max_new_tokens=0)
    plain = init_draft(gen.target, signals=[])
    plain.save_pretrained(tmp_path / "plain")
    with pytest.raises(CheckpointError, match=r"fc.weight has shape \[64, 192\].*convert"):
        Eagle3Draft.from_pretrained(tmp_path / "plain", target=gen.target, signals=["confidence", "progress", "remain"])
    with pytest.raises(ConfigError, match="predicts only"):
        SpecExitGenerator(gen.target, gen.tokenizer, plain).generate("hi", mode="specexit", max_new_tokens=4)


def test_smoothers():
    ew = SignalSmoother("ewma", alpha=0.1)
    assert ew.update(1.0) == 1.0 and ew.update(0.0) == pytest.approx(0.9)
    mo = SignalSmoother("momentum", window=3)
    assert mo.update(0.1) is None and mo.update(0.2) is None
    assert mo.update(0.3) == pytest.approx(0.4)
    with pytest.raises(ConfigError):
        ExitConfig(thresholds={}).validate()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_grouped_attention_matches_sdpa(dtype):
    from specexit.draft import grouped_attention

    g = torch.Generator().manual_seed(0)
    q = torch.randn(6, 5, 16, generator=g).to(dtype)
    k, v = torch.randn(2, 40, 16, generator=g).to(dtype), torch.randn(2, 40, 16, generator=g).to(dtype)
    mask = torch.zeros(5, 40, dtype=dtype)
    mask[:, 35:] = torch.finfo(dtype).min
    mask[:, 35:].fill_diagonal_(0.0)
    ref = torch.nn.functional.scaled_dot_product_attention(
        q.float(), k.repeat_interleave(3, 0).float(), v.repeat_interleave(3, 0).float(), attn_mask=mask.float()
    )
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    torch.testing.assert_close(grouped_attention(q, k, v, mask).float(), ref, atol=tol, rtol=tol)


def test_stream_text_adds_up_and_close_reports_a_partial_result(gen):
    """Streamed deltas concatenate to the decoded output (random tiny models emit plenty of partial
    UTF-8 bytes), and a consumer that stops early still gets a result."""
    ids = gen.encode_prompt("What is 12 + 7?")
    stream = gen.stream(input_ids=ids, mode="spec", max_new_tokens=150)
    text = "".join(chunk.text for chunk in stream)
    assert text == gen.tokenizer.decode(stream.result.token_ids, skip_special_tokens=False)
    stream = gen.stream(input_ids=ids, mode="spec", max_new_tokens=150)
    seen = [c for _, c in zip(range(5), stream, strict=False)]
    stream.close()
    r = stream.result
    assert r is not None and r.finish_reason == "abort"
    assert r.token_ids == [t for c in seen for t in c.token_ids] and 0 < r.new_tokens < 150
