"""The target's short-query attention (``attention.py``): the same result as SDPA for every mask the
engine and transformers give it, SDPA itself for long queries, and the attention every target runs."""

from __future__ import annotations

import pytest
import torch

from specexit.attention import ENGINE_ATTENTION, MIN_KEYS, SHORT_QUERY, engine_attention, grouped_attention
from specexit.target import TargetModel
from specexit.tiny import make_tiny


def _sdpa(q, k, v, mask):  # float64 reference: [Hq, T, d] over [Hk, L, d] (KV heads repeated)
    rep = q.shape[0] // k.shape[0]
    kr, vr = k.double().repeat_interleave(rep, 0), v.double().repeat_interleave(rep, 0)
    return torch.nn.functional.scaled_dot_product_attention(q.double(), kr, vr, attn_mask=mask)


@pytest.mark.parametrize("t", [1, 3, SHORT_QUERY])
@pytest.mark.parametrize("kind", ["none", "bool", "float"])
def test_grouped_attention_equals_sdpa_for_each_kind_of_mask(t, kind):
    g = torch.Generator().manual_seed(t)
    hq, hk, d, past = 6, 2, 16, 37
    q, k, v = (torch.randn(h, n, d, generator=g) for h, n in ((hq, t), (hk, past + t), (hk, past + t)))
    causal = torch.cat([torch.ones(t, past, dtype=torch.bool), torch.ones(t, t, dtype=torch.bool).tril()], dim=1)
    allowed = causal.clone()
    allowed[-1, 3:9] = False  # a tree-like hole: the reference must see it too
    if kind == "none":  # transformers' SDPA mask for a causal step over a cache: no mask at all
        mask, ref_mask = None, causal
    elif kind == "bool":
        mask, ref_mask = allowed, allowed
    else:  # the engine's additive tree mask
        mask = torch.zeros(t, past + t).masked_fill(~allowed, torch.finfo(torch.float32).min)
        ref_mask = allowed
    out = grouped_attention(q, k, v, mask, d**-0.5, float32_inputs=True)
    torch.testing.assert_close(out.double(), _sdpa(q, k, v, ref_mask), rtol=1e-5, atol=1e-5)


def test_bf16_inputs_are_computed_in_float32():
    g = torch.Generator().manual_seed(0)
    q, k, v = (
        torch.randn(4, 1, 64, generator=g),
        torch.randn(2, 3000, 64, generator=g),
        torch.randn(2, 3000, 64, generator=g),
    )
    ref = _sdpa(q.bfloat16().float(), k.bfloat16().float(), v.bfloat16().float(), None)
    out = grouped_attention(q.bfloat16(), k.bfloat16(), v.bfloat16(), None, 64**-0.5, float32_inputs=True)
    assert out.dtype == torch.bfloat16
    # only the output's own rounding to bf16 (2^-8 relative) is left
    torch.testing.assert_close(out.double(), ref, rtol=2**-7, atol=1e-3)


@pytest.mark.parametrize(("t", "keys"), [(SHORT_QUERY + 1, MIN_KEYS + 100), (1, MIN_KEYS - 1)])
def test_long_queries_and_short_caches_go_to_sdpa_unchanged(t, keys):
    module = torch.nn.Module()
    module.is_causal = True
    g = torch.Generator().manual_seed(1)
    q, k, v = (
        torch.randn(1, 4, t, 8, generator=g),
        torch.randn(1, 4, keys, 8, generator=g),
        torch.randn(1, 4, keys, 8, generator=g),
    )
    mask = torch.ones(1, 1, t, keys, dtype=torch.bool).tril(keys - t)
    out, _ = engine_attention(module, q, k, v, mask, scaling=8**-0.5)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    # the matmul path is not bit-identical to SDPA: the equality above shows which path ran
    if t == 1:
        mine = grouped_attention(q[0], k[0], v[0], mask[0, 0], 8**-0.5, float32_inputs=True).transpose(0, 1)[None]
        assert not torch.equal(mine, ref)


@pytest.mark.parametrize("arch", ["llama", "qwen2", "qwen3"])
def test_targets_decode_with_it_and_get_the_logits_sdpa_gives(arch, tmp_path):
    path = make_tiny(arch, tmp_path / arch)
    target = TargetModel.from_pretrained(path)
    assert target.model.config._attn_implementation == ENGINE_ATTENTION
    n = MIN_KEYS + 10  # a cache long enough for the matmul path
    ids = torch.randint(0, target.vocab_size, (1, n + 10), generator=torch.Generator().manual_seed(2))
    logits = []
    for impl in (ENGINE_ATTENTION, "sdpa"):
        target.model.set_attn_implementation(impl)
        cache = target.new_cache(n + 16)
        target.forward(ids[:, :n], cache)
        step, _ = target.forward(ids[:, n : n + 1], cache)  # a decoding step
        chain, _ = target.forward(ids[:, n + 1 : n + 10], cache)  # 9 causal tokens over the cache
        logits.append(torch.cat([step, chain]))
    torch.testing.assert_close(logits[0], logits[1], rtol=1e-5, atol=1e-5)
