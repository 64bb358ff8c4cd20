"""The target's attention for the engine's short forwards: decoding steps and tree verification.

PyTorch's CPU SDPA kernel is slow for a few queries over a long cache: one query over 2,048 cached keys
took 1.7 ms per layer in bf16 (Qwen2.5-0.5B's 14 query / 2 KV heads, head dim 64; 2-core AVX512-BF16
EPYC), where two batched matmuls with a float32 softmax took 0.18 ms, as accurate (max error against a
float32 reference 0.0002 vs SDPA's 0.0003); 8.8 vs 0.8 ms at 8,192 keys.  A decoding step runs it once
per layer, so at a 2k-token context plain decoding spent about a third of its time in that kernel.  Up to
SHORT_QUERY queries, on CPU, attention here is those matmuls (GQA without repeating KV heads); longer
queries (prefill), caches shorter than MIN_KEYS, other devices and anything unusual go to transformers'
SDPA path unchanged.

``TargetModel`` selects it through transformers' attention interface (``ENGINE_ATTENTION``); masks are
built as for SDPA (boolean or none), and the engine's own float tree masks pass through as they are.
"""

from __future__ import annotations

import math

import torch
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

ENGINE_ATTENTION = "specexit_short_query"
SHORT_QUERY = 16  # up to this many queries the matmul path wins at every context measured
# below this many keys SDPA's one call beats the matmul path's few small ops on a tiny model (the 2M-parameter
# testbed decoded 5-15% slower with it at a 300-token context), and the kernel's slowness has not set in
MIN_KEYS = 512


def grouped_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask: torch.Tensor | None,
    scale: float | None = None,
    float32_inputs: bool = False,
) -> torch.Tensor:
    """Attention of q [Hq, T, d] over k / v [Hk, L, d] (GQA: query head h uses KV head h // (Hq / Hk), no
    repeated KV heads); ``mask`` [T, L]: additive float, boolean (True = attend) or None (the T queries
    are the last T positions, causal).  Softmax in float32; with ``float32_inputs`` the products too (the
    target's precision, as accurate as SDPA), else in the inputs' dtype (the draft's, faster in bf16).
    Returns [Hq, T, d] in q's dtype.  The draft's layer uses it as well (``draft.py``): its few queries
    over a long cache are the same case."""
    hq, t, d = q.shape
    hk, n_keys = k.shape[0], k.shape[1]
    rep, out_dtype = hq // hk, q.dtype
    if float32_inputs:
        q, k, v = q.float(), k.float(), v.float()  # no-ops in float32
    scores = torch.matmul(q.reshape(hk, rep * t, d), k.transpose(1, 2)).view(hk, rep, t, n_keys).float()
    scores = scores * (scale if scale is not None else 1.0 / math.sqrt(d))
    if mask is None and t > 1:
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        mask = torch.cat([torch.ones(t, n_keys - t, dtype=torch.bool), mask], dim=1)  # [T, L]
    if mask is not None:  # boolean: True = attend; else additive
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask.float()
    probs = torch.softmax(scores, dim=-1).to(v.dtype).view(hk, rep * t, n_keys)
    return torch.matmul(probs, v).view(hq, t, d).to(out_dtype)


def engine_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs,
) -> tuple[torch.Tensor, None]:
    """transformers' attention-function signature: query [B, Hq, T, d], key / value [B, Hk, L, d], mask
    [B, 1, T, L] or None; returns ([B, T, Hq, d], None)."""
    b, _, t, d = query.shape
    plain = (
        b == 1
        and t <= SHORT_QUERY
        and key.shape[2] >= MIN_KEYS
        and query.device.type == "cpu"
        and not dropout
        and kwargs.get("sliding_window") is None
        and kwargs.get("softcap") is None
        and kwargs.get("position_bias") is None
        and not kwargs.get("output_attentions", False)
        and (attention_mask is None or (attention_mask.shape[0] == 1 and attention_mask.shape[1] == 1))
    )
    if not plain:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      **kwargs)  # fmt: skip
    mask = None if attention_mask is None else attention_mask[0, 0, :, : key.shape[2]]  # [T, L]
    scale = scaling if scaling is not None else d**-0.5
    out = grouped_attention(query[0], key[0], value[0], mask, scale, float32_inputs=True)  # [Hq, T, d]
    return out.transpose(0, 1)[None].contiguous(), None


def register() -> str:
    """Make ``ENGINE_ATTENTION`` known to transformers (idempotent); returns its name."""
    AttentionInterface.register(ENGINE_ATTENTION, engine_attention)
    AttentionMaskInterface.register(ENGINE_ATTENTION, sdpa_mask)
    return ENGINE_ATTENTION
