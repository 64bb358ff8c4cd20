"""The engine-owned KV cache: in-place rollback and path compaction, same logits as a fresh pass,
buffers that do not move within a generation, and no deprecated transformers argument."""

from __future__ import annotations

import random
import warnings

import pytest
import torch

from specexit.engine import SpecExitGenerator
from specexit.errors import CheckpointError
from specexit.kv_cache import EngineKVCache
from specexit.target import TargetModel
from specexit.tiny import make_tiny


def _reference_keep_path(k: torch.Tensor, start: int, keep: list[int]) -> torch.Tensor:
    idx = torch.tensor(keep, dtype=torch.long) + start
    return torch.cat([k[..., :start, :], k.index_select(-2, idx)], dim=-2)


def test_keep_path_and_keep_first_match_concatenation_semantics():
    rng = random.Random(0)
    cache = EngineKVCache(num_layers=2, capacity=4)  # small: forces growth by doubling
    ref = [torch.empty(1, 2, 0, 3) for _ in range(2)]
    for _ in range(200):
        t = rng.randint(1, 9)
        for i, layer in enumerate(cache.layers):
            new = torch.randn(1, 2, t, 3)
            ref[i] = torch.cat([ref[i], new], dim=-2)
            layer.update(new, new * 2)
        start = cache.get_seq_length() - t + rng.randint(0, min(t, 2))
        if rng.random() < 0.5:  # keep an ascending path of the new block
            span = range(cache.get_seq_length() - start)
            keep = sorted(rng.sample(list(span), rng.randint(0, len(span))))
            cache.keep_path(start, keep)
            ref = [_reference_keep_path(r, start, keep) for r in ref]
        else:
            length = rng.randint(max(0, start - 3), cache.get_seq_length())
            cache.keep_first(length)
            ref = [r[..., :length, :] for r in ref]
        for layer, r in zip(cache.layers, ref, strict=True):
            assert layer.get_seq_length() == r.shape[-2]
            torch.testing.assert_close(layer.keys, r, rtol=0, atol=0)
            torch.testing.assert_close(layer.values, 2 * r, rtol=0, atol=0)


def test_keep_path_refuses_offsets_out_of_order():
    cache = EngineKVCache(num_layers=1, capacity=8)
    cache.layers[0].update(torch.randn(1, 1, 5, 2), torch.randn(1, 1, 5, 2))
    with pytest.raises(ValueError, match="ascend"):
        cache.keep_path(1, [2, 1])


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = make_tiny("qwen2", tmp_path_factory.mktemp("kv") / "tiny")
    target = TargetModel.from_pretrained(path)
    from specexit.target import load_tokenizer

    return target, load_tokenizer(path)


def test_cached_decoding_equals_one_fresh_pass_and_buffers_never_move(tiny):
    target, _ = tiny
    ids = torch.randint(0, target.vocab_size, (1, 40))
    cache = target.new_cache(capacity=64)
    target.forward(ids[:, :10], cache)
    ptrs = [layer._k.data_ptr() for layer in cache.layers]
    for t in range(10, 40, 5):
        logits, _ = target.forward(ids[:, t : t + 5], cache)
    assert [layer._k.data_ptr() for layer in cache.layers] == ptrs  # written in place, no concatenation
    fresh = target.model(input_ids=ids).logits[0, -5:].float()
    torch.testing.assert_close(logits, fresh, atol=2e-4, rtol=1e-4)


def test_generation_uses_no_deprecated_transformers_argument(tiny):
    target, tok = tiny
    from specexit.draft import init_draft

    gen = SpecExitGenerator(target, tok, init_draft(target))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        warnings.simplefilter("error", DeprecationWarning)
        for mode in ("vanilla", "spec"):
            gen.generate("What is 2 + 3?", mode=mode, max_new_tokens=12)


def test_a_sliding_window_model_is_refused_with_a_clear_error(tmp_path):
    import json

    path = make_tiny("qwen2", tmp_path / "tiny")
    cfg = json.loads((path / "config.json").read_text())
    n = cfg["num_hidden_layers"]
    cfg.update(use_sliding_window=True, sliding_window=8, max_window_layers=0, layer_types=["sliding_attention"] * n)
    (path / "config.json").write_text(json.dumps(cfg))
    target = TargetModel.from_pretrained(path)
    with pytest.raises(CheckpointError, match="sliding window"):
        target.new_cache()
