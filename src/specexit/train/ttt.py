"""EAGLE-3 training-time test (TTT): the draft unrolled on its own predictions, all positions at once.

Inference (``proposer.py``) commits pairs (target feature at position t, token t+1) to the draft's KV
cache, then grows a tree: a node at depth d takes (its parent's draft output, its own token) at
position ``t + d`` and attends to the committed cache up to t, its ancestors and itself.  TTT
reproduces exactly that for every chain start t in parallel:

    step 0:  input (fc(target features)_t, x_{t+1}) at position t       -> predicts x_{t+2}
    step k:  input (draft output of step k-1 at t, x_{t+1+k}) at t + k  -> predicts x_{t+2+k}

Step k's query at t attends to the step-0 keys at positions <= t (causal) and to the keys of steps
1..k of the same chain t (the "diagonal").  Tokens are teacher-forced (the true continuation); the
hidden input is the draft's own output, which is what makes the draft robust to its own errors.
``tests/test_ttt.py`` checks that step k equals the inference path node by node.
"""

from __future__ import annotations

import math

import torch

from ..draft import Eagle3Draft, apply_rotary


def _heads(x: torch.Tensor, n: int, d: int) -> torch.Tensor:
    b, t, _ = x.shape
    return x.view(b, t, n, d).transpose(1, 2)  # [B, n, T, d]


def ttt_forward(draft: Eagle3Draft, fused: torch.Tensor, input_ids: torch.Tensor, steps: int) -> list[torch.Tensor]:
    """Draft logits [B, T, Vd] for each TTT step.  ``fused``: target features [B, T, 3Ht];
    ``input_ids``: the sequences [B, T] (right-padded).  At step k, row t predicts token t + 2 + k;
    rows whose input token lies beyond the sequence carry garbage and must be masked by the caller."""
    b, t, _ = fused.shape
    m = draft.midlayer
    attn = m.self_attn
    hq, hk, d = attn.heads, attn.kv_heads, attn.head_dim
    rep = hq // hk
    scale = 1.0 / math.sqrt(d)
    pad = torch.zeros(b, steps + 1, dtype=input_ids.dtype)
    ids = torch.cat([input_ids, pad], dim=1)
    causal = torch.ones(t, t, dtype=torch.bool).tril()

    hidden = draft.fc(fused.to(draft.fc.weight.dtype))[..., : draft.cfg.hidden_size]
    keys0 = vals0 = None
    diag_k: list[torch.Tensor] = []
    diag_v: list[torch.Tensor] = []
    out = []
    base_pos = torch.arange(t)
    for k in range(steps):
        tok = ids[:, 1 + k : 1 + k + t]
        emb = draft.embed_tokens(tok).to(hidden.dtype)
        x = torch.cat([m.input_layernorm(emb), m.hidden_norm(hidden)], dim=-1)
        q = _heads(attn.q_proj(x), hq, d)
        key = _heads(attn.k_proj(x), hk, d)
        val = _heads(attn.v_proj(x), hk, d)
        q, key = apply_rotary(draft.rotary, q, key, base_pos + k)
        if k == 0:
            keys0, vals0 = key, val
        else:
            diag_k.append(key)
            diag_v.append(val)
        qg = q.reshape(b, hk, rep * t, d)
        s0 = torch.matmul(qg, keys0.transpose(-1, -2)).view(b, hk, rep, t, t).float() * scale
        s0 = s0.masked_fill(~causal, float("-inf"))
        parts = [s0]
        qd = q.view(b, hk, rep, t, d)
        for dk in diag_k:  # each chain's own step-1..k keys
            parts.append(((qd * dk[:, :, None]).sum(-1).float() * scale)[..., None])
        probs = torch.softmax(torch.cat(parts, dim=-1), dim=-1).to(val.dtype)
        o = torch.matmul(probs[..., :t].reshape(b, hk, rep * t, t), vals0).view(b, hk, rep, t, d)
        for j, dv in enumerate(diag_v):
            o = o + probs[..., t + j, None] * dv[:, :, None]
        o = o.reshape(b, hq, t, d).transpose(1, 2).reshape(b, t, hq * d)
        h = hidden + attn.o_proj(o)
        h = h + m.mlp(m.post_attention_layernorm(h))
        out.append(draft.logits(h))
        hidden = h
    return out
