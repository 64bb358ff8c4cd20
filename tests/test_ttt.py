"""Training-time test must compute exactly what the inference path computes, node by node."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from specexit.draft import DraftKV, init_draft
from specexit.target import TargetModel
from specexit.tiny import make_tiny
from specexit.train.ttt import ttt_forward


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    target = TargetModel.from_pretrained(make_tiny("qwen3", tmp_path_factory.mktemp("ttt"), layers=6))
    draft = init_draft(target, draft_vocab_size=300)
    torch.manual_seed(3)
    with torch.no_grad():  # random weights everywhere, so attention and MLP paths all matter
        for name, p in draft.named_parameters():
            if p.dim() == 2 and not name.startswith("embed"):
                nn.init.normal_(p, std=0.3 / p.shape[1] ** 0.5)
    return target, draft.eval()


@torch.no_grad()
def _chain_logits(draft, fused, ids, t, steps):
    """Inference path: commit pairs up to t, then a chain of true tokens, one depth at a time."""
    kv = DraftKV()
    mask = torch.full((t + 1, t + 1), float("-inf")).triu(1)
    feat, _ = draft.fuse(fused[: t + 1])
    h = draft.layer(feat, torch.tensor(ids[1 : t + 2]), torch.arange(t + 1), kv, mask)
    kv.commit()
    out, hidden = [draft.logits(h[-1:])[0]], h[-1:]
    for k in range(1, steps):
        hidden = draft.layer(
            hidden, torch.tensor([ids[t + 1 + k]]), torch.tensor([t + k]), kv, torch.zeros(1, kv.length + 1)
        )
        out.append(draft.logits(hidden)[0])
    return out


@pytest.mark.parametrize("t", [0, 5, 17])
def test_ttt_steps_equal_inference_chain(setup, t):
    target, draft = setup
    g = torch.Generator().manual_seed(1)
    ids_a = torch.randint(0, target.vocab_size, (30,), generator=g).tolist()
    ids_b = torch.randint(0, target.vocab_size, (24,), generator=g).tolist()
    fa, _ = target.features(ids_a)
    fb, _ = target.features(ids_b)
    steps = 4
    batch_ids = torch.zeros(2, 30, dtype=torch.long)
    batch_ids[0], batch_ids[1, :24] = torch.tensor(ids_a), torch.tensor(ids_b)
    fused = torch.zeros(2, 30, fa.shape[-1])
    fused[0], fused[1, :24] = fa, fb
    with torch.no_grad():
        ttt = ttt_forward(draft, fused, batch_ids, steps)
    for row, (ids, f) in enumerate([(ids_a, fa), (ids_b, fb)]):
        ref = _chain_logits(draft, f, ids, t, steps)
        for k in range(steps):
            torch.testing.assert_close(ttt[k][row, t], ref[k], atol=1e-4, rtol=1e-4)
