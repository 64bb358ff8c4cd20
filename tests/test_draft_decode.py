"""The proposer's packed draft decoder computes what the draft module computes, and follows its weights."""

from __future__ import annotations

import torch

from specexit.draft import DraftKV, init_draft
from specexit.draft_decode import decoder_for
from specexit.proposer import _causal_mask
from specexit.target import TargetModel
from specexit.tiny import make_tiny


def _draft(tmp_path):
    target = TargetModel.from_pretrained(make_tiny("qwen3", tmp_path / "t"))
    draft = init_draft(target, draft_vocab_size=200)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():  # a warm-started draft is near identity: give every weight something to do
        for p in draft.parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=g))
    return draft


def test_layer_and_logits_equal_the_draft_modules_over_a_growing_cache(tmp_path):
    draft = _draft(tmp_path)
    dec = decoder_for(draft)
    g = torch.Generator().manual_seed(1)
    kv_a, kv_b = DraftKV(), DraftKV()
    start = 0
    for t in (5, 1, 3, 300):  # the last block runs past the rotary table's first size (256 positions)
        hidden = torch.randn(t, draft.cfg.hidden_size, generator=g)
        ids = torch.randint(0, draft.cfg.vocab_size, (t,), generator=g)
        pos = torch.arange(start, start + t)
        mask = _causal_mask(start, t, torch.float32)
        with torch.inference_mode():
            ref = draft.layer(hidden, ids, pos, kv_a, mask)
            out = dec.layer(hidden, ids, pos, kv_b, mask)
            torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
            torch.testing.assert_close(dec.logits(out), draft.logits(ref), rtol=1e-4, atol=1e-4)
        kv_a.commit()
        kv_b.commit()
        start += t
    torch.testing.assert_close(kv_b.view()[0], kv_a.view()[0], rtol=1e-5, atol=1e-5)


def test_the_decoder_follows_the_drafts_weights(tmp_path):
    draft = _draft(tmp_path)
    first = decoder_for(draft)
    assert decoder_for(draft) is first  # unchanged weights: no repacking per proposer
    with torch.no_grad():
        draft.midlayer.self_attn.k_proj.weight.mul_(2.0)  # an in-place update, as an optimizer step makes
    second = decoder_for(draft)
    assert second is not first
    k_rows = slice(draft.midlayer.self_attn.q_proj.weight.shape[0], None)
    torch.testing.assert_close(second.qkv[k_rows][: draft.midlayer.self_attn.k_proj.weight.shape[0]],
                               draft.midlayer.self_attn.k_proj.weight)  # fmt: skip
    draft.to(torch.bfloat16)  # new tensors
    assert decoder_for(draft).dtype == torch.bfloat16
