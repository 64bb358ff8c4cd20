"""The draft's decoder layer and head at inference, in fewer and larger ops.

A draft step is small: on a 2-core CPU each of its matrix products costs 45-100 us whatever its size up
to ~1M weights (a fixed per-call cost; measured in docs/performance.md), and the RMSNorms and the rotary
embedding are chains of small ops.  So the proposer runs the same computation as
``Eagle3Draft.layer`` / ``Eagle3Draft.logits`` with q/k/v packed in one product, gate/up in another,
fused RMSNorms and a rotary table looked up by position (5 products a step instead of 8).  The packed
weights are rebuilt when the draft's weights change (training in the same process), so the draft stays
the one source of truth.  Only acceptance depends on the draft's arithmetic, never the output.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from .attention import grouped_attention
from .draft import DraftKV, Eagle3Draft


def _rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """LlamaRMSNorm in float32, as a fused op: weight * (x / rms(x)), in x's dtype."""
    return weight * F.rms_norm(x.float(), (x.shape[-1],), eps=eps).to(x.dtype)


class DraftDecoder:
    """Packed views of one draft's weights (``decoder_for`` keeps one per draft and weight version)."""

    def __init__(self, draft: Eagle3Draft) -> None:
        m, a = draft.midlayer, draft.midlayer.self_attn
        self.heads, self.kv_heads, self.head_dim = a.heads, a.kv_heads, a.head_dim
        self.qkv = torch.cat([a.q_proj.weight, a.k_proj.weight, a.v_proj.weight]).detach()  # [(Hq+2Hk)d, 2H]
        self.o = a.o_proj.weight.detach()
        self.gate_up = torch.cat([m.mlp.gate_proj.weight, m.mlp.up_proj.weight]).detach()  # [2I, H]
        self.down = m.mlp.down_proj.weight.detach()
        self.inter = m.mlp.gate_proj.weight.shape[0]
        self.norms = {n: (getattr(m, n).weight.detach(), getattr(m, n).variance_epsilon)
                      for n in ("input_layernorm", "hidden_norm", "post_attention_layernorm")}  # fmt: skip
        self.final_norm = (draft.norm.weight.detach(), draft.norm.variance_epsilon)
        self.head = draft.lm_head.weight.detach()
        self.embed = draft.embed_tokens.weight.detach()
        self.rotary = draft.rotary
        self.dtype = self.qkv.dtype
        self._cos = self._sin = torch.empty(0, self.head_dim, dtype=self.dtype)  # [positions, d]

    def _rope(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos / sin [T, d] at ``positions`` from a table grown by doubling (the rotary module's values)."""
        need = int(positions.max()) + 1
        if need > self._cos.shape[0]:
            n = max(need, 2 * self._cos.shape[0], 256)
            probe = torch.empty(1, dtype=self.dtype)
            cos, sin = self.rotary(probe, torch.arange(n)[None])
            self._cos, self._sin = cos[0], sin[0]
        return self._cos[positions], self._sin[positions]

    def layer(self, hidden: torch.Tensor, token_ids: torch.Tensor, positions: torch.Tensor, kv: DraftKV | None,
              mask: torch.Tensor | None) -> torch.Tensor:  # fmt: skip
        """``Eagle3Draft.layer``: hidden [T, H], token_ids / positions [T], mask [T, L+T] -> [T, H]."""
        t = hidden.shape[0]
        hq, hk, d = self.heads, self.kv_heads, self.head_dim
        emb = self.embed[token_ids].to(hidden.dtype)
        x = torch.cat(
            [_rms_norm(emb, *self.norms["input_layernorm"]), _rms_norm(hidden, *self.norms["hidden_norm"])], dim=-1
        )  # fmt: skip  [T, 2H]
        q, k, v = F.linear(x, self.qkv).split([hq * d, hk * d, hk * d], dim=-1)
        q, k, v = (y.view(t, n, d).transpose(0, 1) for y, n in ((q, hq), (k, hk), (v, hk)))  # [heads, T, d]
        cos, sin = self._rope(positions)  # [T, d]
        q, k = apply_rotary_pos_emb(q[None], k[None], cos[None], sin[None])
        q, k = q[0], k[0]
        if kv is not None:
            kv.append(k, v)
            k, v = kv.view()
        h = hidden + F.linear(grouped_attention(q, k, v, mask).transpose(0, 1).reshape(t, -1), self.o)
        gate, up = F.linear(_rms_norm(h, *self.norms["post_attention_layernorm"]), self.gate_up).split(self.inter, -1)
        return h + F.linear(F.silu(gate) * up, self.down)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """``Eagle3Draft.logits``: [T, H] -> float32 [T, draft vocab]."""
        return F.linear(_rms_norm(hidden, *self.final_norm), self.head).float()


def _weights_version(draft: Eagle3Draft) -> tuple:
    """Changes whenever a weight is replaced or updated in place (optimizer steps, load_state_dict, .to)."""
    try:
        return tuple((p.data_ptr(), p._version) for p in draft.parameters())
    except RuntimeError:  # weights made under inference_mode keep no version counter (and cannot be trained)
        return tuple(p.data_ptr() for p in draft.parameters())


def decoder_for(draft: Eagle3Draft) -> DraftDecoder:
    """The draft's packed decoder, rebuilt only when its weights changed since the last call."""
    version = _weights_version(draft)
    cached = draft.__dict__.get("_decoder")
    if cached is None or cached[0] != version:
        cached = (version, DraftDecoder(draft))
        draft.__dict__["_decoder"] = cached
    return cached[1]
