"""EAGLE-3 draft model with SpecExit signal outputs.

Layout (tensor names and shapes follow EAGLE-3 / AngelSlim checkpoints, so theirs load here):
    fc.weight                         [H + k, 3*Ht]   first H rows: fused feature; last k: signals
    midlayer.hidden_norm.weight       [H]             RMSNorm of the fused feature
    midlayer.input_layernorm.weight   [H]             RMSNorm of the token embedding
    midlayer.self_attn.{q,k,v}_proj   [*, 2H]         input: cat(norm(embedding), norm(hidden))
    midlayer.self_attn.o_proj         [H, heads*hd]
    midlayer.post_attention_layernorm.weight, midlayer.mlp.{gate,up,down}_proj
    norm.weight                       [H]
    lm_head.weight                    [draft_vocab, H]
    d2t [draft_vocab] int64 (draft id i -> target id i + d2t[i]),  t2d [vocab] bool
    embed_tokens.weight (optional: copied from the target and frozen, so it is not saved)
"""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaMLP,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)

from .attention import grouped_attention  # also the draft's: few queries over a long cache
from .errors import CheckpointError, ConfigError, corrupt_weights
from .signals import SIGNAL_NAMES, activate_rows, names_for_count
from .target import read_json_config, unreadable_safetensors

DRAFT_ARCHITECTURE = "LlamaForCausalLMEagle3"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class DraftConfig:
    hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int  # target vocabulary
    draft_vocab_size: int
    target_hidden_size: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: dict | None = None
    max_position_embeddings: int = 32768
    signals: list[str] = field(default_factory=lambda: list(SIGNAL_NAMES))
    target_layer_ids: list[int] | None = None
    target_num_layers: int | None = None

    def to_json(self) -> dict:
        d = asdict(self)
        signals, layer_ids, n_layers = d.pop("signals"), d.pop("target_layer_ids"), d.pop("target_num_layers")
        d.update(
            architectures=[DRAFT_ARCHITECTURE],
            model_type="llama",
            num_hidden_layers=1,
            hidden_act="silu",
            tie_word_embeddings=False,
        )
        d["specexit"] = {
            "signals": signals,
            "num_signals": len(signals),
            "target_layer_ids": layer_ids,
            "target_num_layers": n_layers,
        }
        return d

    @classmethod
    def from_json(cls, d: dict, where: str = "config.json") -> DraftConfig:
        try:
            hidden = int(d["hidden_size"])
            heads = int(d["num_attention_heads"])
            spec = d.get("specexit") or {}
            signals = spec.get("signals")
            if signals is None:  # AngelSlim-style count only, or a plain EAGLE-3 config
                k = int(spec.get("num_signals", d.get("num_exit_signals", 0)))
                signals = names_for_count(k)
            rope_theta = d.get("rope_theta") or (d.get("rope_parameters") or {}).get("rope_theta", 10000.0)
            return cls(
                hidden_size=hidden,
                intermediate_size=int(d["intermediate_size"]),
                num_attention_heads=heads,
                num_key_value_heads=int(d.get("num_key_value_heads") or heads),
                head_dim=int(d.get("head_dim") or hidden // heads),
                vocab_size=int(d["vocab_size"]),
                draft_vocab_size=int(d.get("draft_vocab_size") or d["vocab_size"]),
                target_hidden_size=int(d.get("target_hidden_size") or hidden),
                rms_norm_eps=float(d.get("rms_norm_eps", 1e-6)),
                rope_theta=float(rope_theta),
                rope_scaling=d.get("rope_scaling"),
                max_position_embeddings=int(d.get("max_position_embeddings", 32768)),
                signals=list(signals),
                target_layer_ids=spec.get("target_layer_ids"),
                target_num_layers=spec.get("target_num_layers"),
            )
        except KeyError as e:
            raise CheckpointError(f"{where}: missing field {e.args[0]!r} for an EAGLE-3 draft") from e
        except (TypeError, ValueError, AttributeError) as e:  # a field of the wrong type, e.g. "hidden_size": "x"
            raise CheckpointError(f"{where}: not an EAGLE-3 draft config ({e})") from None

    def llama_config(self) -> LlamaConfig:
        rope = dict(self.rope_scaling or {})
        rope["rope_type"] = rope.pop("type", None) or rope.get("rope_type") or "default"
        rope["rope_theta"] = self.rope_theta
        return LlamaConfig(
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            rms_norm_eps=self.rms_norm_eps,
            rope_parameters=rope,
            max_position_embeddings=self.max_position_embeddings,
            vocab_size=self.vocab_size,
            num_hidden_layers=1,
        )


class DraftAttention(nn.Module):
    def __init__(self, cfg: DraftConfig) -> None:
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(2 * cfg.hidden_size, self.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(2 * cfg.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(2 * cfg.hidden_size, self.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(self.heads * self.head_dim, cfg.hidden_size, bias=False)

    def forward(self, x, cos, sin, kv: DraftKV | None, mask):
        """x [T, 2H]; mask additive [T, L+T] (L = entries already in ``kv``).  The new keys/values
        are written into ``kv`` (when given) and the queries attend over all of it, in place: no
        per-step concatenation of the cache, no repeated KV heads (GQA handled by SDPA)."""
        t = x.shape[0]
        q = self.q_proj(x).view(t, self.heads, self.head_dim).transpose(0, 1)
        k = self.k_proj(x).view(t, self.kv_heads, self.head_dim).transpose(0, 1)
        v = self.v_proj(x).view(t, self.kv_heads, self.head_dim).transpose(0, 1)
        q, k = apply_rotary_pos_emb(q[None], k[None], cos[None], sin[None])
        q, k = q[0], k[0]
        if kv is not None:
            kv.append(k, v)
            k, v = kv.view()
        return self.o_proj(grouped_attention(q, k, v, mask).transpose(0, 1).reshape(t, -1))


def apply_rotary(rotary: nn.Module, q: torch.Tensor, k: torch.Tensor, positions: torch.Tensor):
    """Rotary embedding of q/k [B, heads, T, d] at integer ``positions`` [T]."""
    cos, sin = rotary(q, positions[None])
    return apply_rotary_pos_emb(q, k, cos, sin)


class DraftLayer(nn.Module):
    def __init__(self, cfg: DraftConfig) -> None:
        super().__init__()
        lc = cfg.llama_config()
        self.hidden_norm = LlamaRMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.input_layernorm = LlamaRMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.self_attn = DraftAttention(cfg)
        self.post_attention_layernorm = LlamaRMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.mlp = LlamaMLP(lc)


class DraftKV:
    """The draft's own KV cache: committed positions, then scratch (tree) entries after them.  Kept in
    preallocated buffers [kv_heads, capacity, head_dim] that grow by doubling, so appending, dropping
    the scratch part and cropping never copy the cache."""

    def __init__(self) -> None:
        self._k: torch.Tensor | None = None
        self._v: torch.Tensor | None = None
        self.length = 0  # valid entries (committed + scratch)
        self.committed = 0

    def append(self, k: torch.Tensor, v: torch.Tensor) -> None:
        end = self.length + k.shape[1]
        if self._k is None or end > self._k.shape[1]:
            cap = max(end, 2 * (0 if self._k is None else self._k.shape[1]), 256)
            new_k, new_v = k.new_empty(k.shape[0], cap, k.shape[2]), v.new_empty(v.shape[0], cap, v.shape[2])
            if self._k is not None:
                new_k[:, : self.length] = self._k[:, : self.length]
                new_v[:, : self.length] = self._v[:, : self.length]
            self._k, self._v = new_k, new_v
        self._k[:, self.length : end] = k
        self._v[:, self.length : end] = v
        self.length = end

    def view(self) -> tuple[torch.Tensor, torch.Tensor]:
        assert self._k is not None and self._v is not None
        return self._k[:, : self.length], self._v[:, : self.length]

    def commit(self) -> None:
        self.committed = self.length

    def drop_scratch(self) -> None:
        self.length = self.committed

    def crop(self, length: int) -> None:
        self.length = min(self.length, length)
        self.committed = min(self.committed, length)


class Eagle3Draft(nn.Module):
    def __init__(self, cfg: DraftConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.signals = list(cfg.signals)
        for s in self.signals:
            if s not in SIGNAL_NAMES:
                raise CheckpointError(f"unknown signal {s!r} in draft config; known: {SIGNAL_NAMES}")
        h = cfg.hidden_size
        self.fc = nn.Linear(3 * cfg.target_hidden_size, h + len(self.signals), bias=False)
        self.midlayer = DraftLayer(cfg)
        self.norm = LlamaRMSNorm(h, eps=cfg.rms_norm_eps)
        self.lm_head = nn.Linear(h, cfg.draft_vocab_size, bias=False)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, h)
        self.embed_tokens.weight.requires_grad_(False)
        self.rotary = LlamaRotaryEmbedding(cfg.llama_config())
        self.register_buffer("d2t", torch.zeros(cfg.draft_vocab_size, dtype=torch.long))
        self.register_buffer(
            "t2d",
            torch.ones(cfg.vocab_size, dtype=torch.bool)
            if cfg.draft_vocab_size == cfg.vocab_size
            else torch.zeros(cfg.vocab_size, dtype=torch.bool),
        )

    # -- pieces of the forward -------------------------------------------------------------------
    def fuse(self, target_hidden: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """[T, 3Ht] -> fused feature [T, H] and signal values (float32, activated) per name."""
        out = self.fc(target_hidden.to(self.fc.weight.dtype))
        h = self.cfg.hidden_size
        return out[:, :h], activate_rows(out[:, h:], self.signals)

    def signal_logits(self, target_hidden: torch.Tensor) -> torch.Tensor:
        """Raw (pre-activation) signal outputs [T, k], for training losses."""
        w = self.fc.weight[self.cfg.hidden_size :]
        return (target_hidden.to(w.dtype) @ w.T).float()

    def layer(
        self,
        hidden: torch.Tensor,
        token_ids: torch.Tensor,
        positions: torch.Tensor,
        kv: DraftKV | None,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """One decoder layer over T (hidden, next-token) pairs; their keys/values are appended to
        ``kv``.  Returns the output hidden [T, H] (pre-norm: fed back as the hidden input of deeper
        draft steps)."""
        m = self.midlayer
        emb = self.embed_tokens(token_ids).to(hidden.dtype)
        x = torch.cat([m.input_layernorm(emb), m.hidden_norm(hidden)], dim=-1)
        cos, sin = self.rotary(hidden[None], positions[None])
        h = hidden + m.self_attn(x, cos[0], sin[0], kv, mask)
        return h + m.mlp(m.post_attention_layernorm(h))

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.norm(hidden)).float()

    @property
    def draft_to_target(self) -> torch.Tensor:
        return torch.arange(self.cfg.draft_vocab_size) + self.d2t

    # -- construction / IO -----------------------------------------------------------------------
    def check_target(self, target) -> None:
        """Refuse a draft built for another target, naming the mismatch."""
        c = self.cfg
        if c.target_hidden_size != target.hidden_size:
            raise CheckpointError(
                f"draft was built for a target with hidden size {c.target_hidden_size} (fc input "
                f"{3 * c.target_hidden_size}), but the target has hidden size {target.hidden_size}"
            )
        if c.vocab_size != target.vocab_size:
            raise CheckpointError(
                f"draft was built for a target vocabulary of {c.vocab_size} tokens (t2d length), but the "
                f"target has {target.vocab_size}"
            )
        if c.hidden_size != target.hidden_size:
            raise CheckpointError(
                f"draft hidden size {c.hidden_size} differs from the target's {target.hidden_size}; EAGLE-3 "
                "feeds the target's token embeddings into the draft, so they must match"
            )
        if c.target_layer_ids is not None and tuple(c.target_layer_ids) != tuple(target.layer_ids):
            raise CheckpointError(
                f"draft was trained on target layers {list(c.target_layer_ids)} but this target "
                f"({target.num_layers} layers) exposes layers {list(target.layer_ids)}: wrong target?"
            )

    def save_pretrained(self, out: str | Path, dtype: torch.dtype | None = None) -> None:
        """``dtype``: cast floating-point weights when saving (e.g. bfloat16 halves the file; the
        engine runs the draft in the target's precision anyway).  Index buffers are kept as they are."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "config.json").write_text(json.dumps(self.cfg.to_json(), indent=2) + "\n")
        state = {
            k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).detach().contiguous()
            for k, v in self.state_dict().items()
            if not k.startswith("embed_tokens") and not k.startswith("rotary")
        }
        save_file(state, str(out / WEIGHTS_NAME), metadata={"format": "pt", "specexit_signals": ",".join(self.signals)})

    @classmethod
    def from_pretrained(
        cls, path: str | Path, target=None, signals: list[str] | None = None, dtype: torch.dtype = torch.float32
    ) -> Eagle3Draft:
        """Load a draft folder.  ``signals`` (if given) is what the caller needs; a checkpoint whose
        fc rows do not match gives an error naming both shapes."""
        path = Path(path)
        cfg = _read_config(path)
        state = _load_state(path)
        if "fc.weight" not in state:
            raise CheckpointError(f"{path}: checkpoint has no fc.weight: not an EAGLE-3 draft")
        rows, cols = state["fc.weight"].shape
        k_ckpt = rows - cfg.hidden_size
        if cols != 3 * cfg.target_hidden_size:
            raise CheckpointError(
                f"{path}: fc.weight has shape [{rows}, {cols}], expected input width "
                f"3 x target_hidden_size = {3 * cfg.target_hidden_size}"
            )
        if k_ckpt < 0 or k_ckpt > len(SIGNAL_NAMES):
            raise CheckpointError(
                f"{path}: fc.weight has shape [{rows}, {cols}] which fits neither a plain "
                f"EAGLE-3 draft [{cfg.hidden_size}, {cols}] nor a SpecExit one "
                f"[{cfg.hidden_size}+k, {cols}]"
            )
        if k_ckpt != len(cfg.signals):  # config silent or wrong about signals: trust the tensor
            cfg.signals = names_for_count(k_ckpt)
        if signals is not None and list(signals) != cfg.signals:
            want = len(signals)
            hint = (
                f"convert it with `specexit convert --eagle3 {path} --out NEW_DIR --signals "
                f"{','.join(signals)}` (appends zero-initialised signal rows to train)"
            )
            if k_ckpt and want:
                hint = f"use signals {','.join(cfg.signals)} (what it was trained with) or retrain"
            raise CheckpointError(
                f"{path}: fc.weight has shape [{rows}, {cols}] = [H+{k_ckpt}, 3H] "
                f"({'plain EAGLE-3, no exit signals' if k_ckpt == 0 else 'signals ' + ','.join(cfg.signals)}), "
                f"but signals {list(signals)} need shape [{cfg.hidden_size + want}, {cols}]; {hint}"
            )
        model = cls(cfg)
        if target is not None:
            model.check_target(target)
            model.embed_tokens.weight.data.copy_(target.embed_tokens.weight.data.to(torch.float32))
        elif "embed_tokens.weight" not in state:
            raise CheckpointError(f"{path}: no embed_tokens.weight in the checkpoint; pass the target")
        state = {k: v for k, v in state.items() if k in model.state_dict()}
        missing = [k for k in model.state_dict() if k not in state and not k.startswith(("embed_tokens", "rotary"))]
        if "t2d" in missing and cfg.draft_vocab_size == cfg.vocab_size:
            missing.remove("t2d")
        if "d2t" in missing and cfg.draft_vocab_size == cfg.vocab_size:
            missing.remove("d2t")
        if missing:
            raise CheckpointError(f"{path}: checkpoint lacks tensors {missing}")
        for name, t in state.items():
            expect = model.state_dict()[name].shape
            if tuple(t.shape) != tuple(expect):
                raise CheckpointError(f"{path}: tensor {name} has shape {list(t.shape)}, config implies {list(expect)}")
        model.load_state_dict(state, strict=False)
        if "t2d" not in state:
            model.t2d.zero_()
            model.t2d[model.draft_to_target] = True
        return model.to(dtype).eval()


def _read_config(path: Path) -> DraftConfig:
    if not path.is_dir():
        raise CheckpointError(f"draft folder not found: {path}" if not path.exists() else f"{path} is not a folder")
    if not (path / "config.json").is_file():
        raise CheckpointError(f"draft folder {path} has no config.json")
    return DraftConfig.from_json(read_draft_config(path), str(path / "config.json"))


def read_draft_config(path: str | Path) -> dict:
    """The JSON object in ``path/config.json``, or a CheckpointError naming the file."""
    return read_json_config(Path(path) / "config.json")


def check_draft_dir(path: str | Path) -> DraftConfig:
    """Refuse a draft folder that cannot load, without loading it (its config and the safetensors
    header): for commands to check their arguments before they do any work."""
    path = Path(path)
    cfg = _read_config(path)
    err = unreadable_safetensors(path)
    if err is not None:
        raise err
    return cfg


def _load_state(path: Path) -> dict[str, torch.Tensor]:
    st, pt = path / WEIGHTS_NAME, path / "pytorch_model.bin"
    if st.is_file():
        try:
            state = load_file(str(st))
        except (SafetensorError, OSError) as e:
            raise corrupt_weights(st, e) from None
    elif pt.is_file():
        try:
            state = torch.load(pt, map_location="cpu", weights_only=True)
        except (RuntimeError, EOFError, OSError, pickle.UnpicklingError) as e:
            raise CheckpointError(f"{pt}: not a readable PyTorch checkpoint ({e}): truncated or corrupt") from None
    else:
        raise CheckpointError(f"draft folder {path} has neither {WEIGHTS_NAME} nor pytorch_model.bin")
    # some exporters prefix names (e.g. "model."); strip it so both layouts load
    return {k.removeprefix("model."): v for k, v in state.items()}


def vocab_mapping(used_ids: list[int], vocab_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """d2t / t2d for a draft vocabulary made of ``used_ids`` (sorted ascending inside)."""
    used = sorted(set(used_ids))
    d2t = torch.tensor(used, dtype=torch.long) - torch.arange(len(used))
    t2d = torch.zeros(vocab_size, dtype=torch.bool)
    t2d[used] = True
    return d2t, t2d


def init_draft(
    target,
    signals: list[str] | None = None,
    draft_vocab_size: int | None = None,
    used_ids: list[int] | None = None,
    seed: int = 0,
    intermediate_size: int | None = None,
) -> Eagle3Draft:
    """An untrained draft sized for ``target``, warm-started as a 'logit lens': fc copies the high
    layer's hidden state, the decoder layer starts as identity (zero output projections), and norm /
    lm_head come from the target's final norm and head rows.  Signal rows start at zero."""
    tc = target.config
    signals = list(SIGNAL_NAMES if signals is None else signals)
    vocab = target.vocab_size
    if used_ids is None:
        n = min(draft_vocab_size or vocab, vocab)
        # without token statistics: the lowest ids plus the end-of-sequence token
        eos = getattr(tc, "eos_token_id", None)
        used = {i for i in (eos if isinstance(eos, list) else [eos]) if isinstance(i, int) and i < vocab}
        fill = iter(range(vocab))
        while len(used) < n:
            used.add(next(fill))
        used_ids = sorted(used)
    d2t, t2d = vocab_mapping(used_ids, vocab)
    if intermediate_size is not None and intermediate_size <= 0:
        raise ConfigError(f"draft intermediate size must be positive, got {intermediate_size}")
    heads = int(tc.num_attention_heads)
    rope_params = getattr(tc, "rope_parameters", None) or {}
    cfg = DraftConfig(
        hidden_size=target.hidden_size,
        # the MLP width is free (the draft never shares MLP weights with the target): a narrower one
        # makes a draft small enough to ship
        intermediate_size=int(intermediate_size or tc.intermediate_size),
        num_attention_heads=heads,
        num_key_value_heads=int(getattr(tc, "num_key_value_heads", heads) or heads),
        head_dim=int(getattr(tc, "head_dim", None) or target.hidden_size // heads),
        vocab_size=vocab,
        draft_vocab_size=len(d2t),
        target_hidden_size=target.hidden_size,
        rms_norm_eps=float(getattr(tc, "rms_norm_eps", 1e-6)),
        rope_theta=float(rope_params.get("rope_theta", getattr(tc, "rope_theta", 10000.0))),
        rope_scaling=None,
        max_position_embeddings=int(getattr(tc, "max_position_embeddings", 32768)),
        signals=signals,
        target_layer_ids=list(target.layer_ids),
        target_num_layers=target.num_layers,
    )
    torch.manual_seed(seed)
    model = Eagle3Draft(cfg)
    for p in model.parameters():
        if p.dim() == 2:
            nn.init.normal_(p, std=1.0 / math.sqrt(p.shape[1]))
    h = cfg.hidden_size
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.weight[:h, 2 * h : 3 * h] = torch.eye(h)
        model.midlayer.self_attn.o_proj.weight.zero_()
        model.midlayer.mlp.down_proj.weight.zero_()
        model.d2t.copy_(d2t)
        model.t2d.copy_(t2d)
        model.embed_tokens.weight.copy_(target.embed_tokens.weight.float())
        head = target.model.get_output_embeddings().weight.float()
        model.lm_head.weight.copy_(head[d2t + torch.arange(len(d2t))])
        model.norm.weight.copy_(target.model.model.norm.weight.float())
    return model.eval()


def add_signal_rows(draft: Eagle3Draft, signals: list[str]) -> Eagle3Draft:
    """A copy of ``draft`` whose fc carries ``signals`` rows (zero-initialised when new)."""
    cfg = DraftConfig(**{**asdict(draft.cfg), "signals": list(signals)})
    new = Eagle3Draft(cfg)
    state = {k: v for k, v in draft.state_dict().items() if k != "fc.weight"}
    new.load_state_dict(state, strict=False)
    h = cfg.hidden_size
    with torch.no_grad():
        w = torch.zeros_like(new.fc.weight)
        w[:h] = draft.fc.weight[:h]
        for i, s in enumerate(signals):
            if s in draft.signals:
                w[h + i] = draft.fc.weight[h + draft.signals.index(s)]
        new.fc.weight.copy_(w)
    return new.eval()
