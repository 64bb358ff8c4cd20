"""Wrapper around a Hugging Face causal LM: logits + the three EAGLE-3 hidden states, tree forward,
and the engine's own KV cache (``kv_cache.py``), rolled back and compacted to the accepted path."""

from __future__ import annotations

import contextlib
import inspect
import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.cache_utils import get_layer_types_and_kwargs

from .errors import CheckpointError, TokenizerError, corrupt_weights
from .kv_cache import EngineKVCache

SUPPORTED_ARCHITECTURES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "Qwen3ForCausalLM")


def eagle3_layer_ids(num_layers: int) -> tuple[int, int, int]:
    """Decoder layers whose outputs feed the draft: low, middle, high (0-based, clamped for tiny
    models; a real model of >= 6 layers gives exactly (1, N//2 - 1, N - 4))."""

    def clamp(i: int) -> int:
        return max(0, min(num_layers - 1, i))

    return clamp(1), clamp(num_layers // 2 - 1), clamp(num_layers - 4)


def resolve_dtype(name: str | torch.dtype) -> torch.dtype:
    """A precision's torch dtype (``auto`` is decided where a model loads: ``TargetModel.from_pretrained``)."""
    if isinstance(name, torch.dtype):
        return name
    table = {
        "float32": torch.float32,
        "fp32": torch.float32,
        "bfloat16": torch.bfloat16,
        "bf16": torch.bfloat16,
        "float16": torch.float16,
        "fp16": torch.float16,
    }
    if name not in table:
        raise CheckpointError(f"unknown dtype {name!r}; use one of {sorted(table)}")
    return table[name]


def read_model_config(path: str | Path) -> dict:
    path = Path(path)
    cfg = path / "config.json"
    if path.exists() and not path.is_dir():
        raise CheckpointError(f"{path} is a file, not a model folder")
    if not path.is_dir():
        raise CheckpointError(f"model directory not found: {path}")
    if not cfg.is_file():
        raise CheckpointError(f"{path} has no config.json: not a Hugging Face model folder")
    return read_json_config(cfg)


def read_json_config(file: Path) -> dict:
    """The JSON object in a model's (or draft's) ``config.json``, or a CheckpointError naming the file."""
    try:
        out = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file} is not valid JSON: {e}") from None
    if not isinstance(out, dict):
        raise CheckpointError(f"{file} is not a JSON object")
    return out


def unreadable_safetensors(path: str | Path) -> CheckpointError | None:
    """The error for the first ``*.safetensors`` file of folder ``path`` whose header does not read
    (truncated or corrupt), None if all read.  Reads headers only: cheap even for a large model."""
    for f in sorted(Path(path).glob("*.safetensors")):
        try:
            with safe_open(str(f), framework="pt"):
                pass
        except (SafetensorError, OSError) as e:
            return corrupt_weights(f, e)
    return None


# the files a Hugging Face tokenizer is read from (one of them must be there)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


def check_tokenizer_files(path: str | Path) -> None:
    """TokenizerError unless folder ``path`` has tokenizer files (transformers would otherwise build an
    empty tokenizer without a word, and a prompt would encode to nothing)."""
    path = Path(path)
    if not any((path / f).is_file() for f in TOKENIZER_FILES) and not any(path.glob("*.tiktoken")):
        raise TokenizerError(
            f"{path} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)}); copy them from the model's "
            "original folder"
        )


def check_target_dir(path: str | Path) -> None:
    """Refuse a target folder that cannot load, without loading it: config.json, readable safetensors
    headers, tokenizer files.  For commands to check their arguments before they do any work."""
    read_model_config(path)
    err = unreadable_safetensors(path)
    if err is not None:
        raise err
    check_tokenizer_files(path)


def load_tokenizer(path: str | Path):
    """The tokenizer of a model folder, or a TokenizerError naming the folder."""
    check_tokenizer_files(path)
    try:
        tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    except (OSError, ValueError) as e:
        raise TokenizerError(f"{path}: cannot load its tokenizer: {e}") from None
    if not tok.encode("a", add_special_tokens=False):
        raise TokenizerError(f"{path}: its tokenizer encodes text to nothing (broken tokenizer files?)")
    return tok


def _dtype_key(cfg: dict) -> str:
    import hashlib

    from .machine import cpu_model, isa_flags

    shape = {k: cfg.get(k) for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                                     "num_key_value_heads", "vocab_size", "model_type")}  # fmt: skip
    facts = {"shape": shape, "cpu": cpu_model(), "isa": isa_flags(), "torch": torch.__version__,
             "threads": torch.get_num_threads()}  # fmt: skip
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:16]


def _dtype_file() -> Path:
    from .machine import cache_dir

    return cache_dir() / "dtype-choice.json"


def cached_dtype_choice(cfg: dict) -> dict | None:
    """The ``--dtype auto`` decision made before for this model shape on this machine, if any."""
    try:
        hit = json.loads(_dtype_file().read_text()).get(_dtype_key(cfg))
    except (OSError, ValueError, AttributeError):
        return None
    return hit if isinstance(hit, dict) and hit.get("dtype") in ("float32", "bfloat16") else None


def choose_auto_dtype(target: TargetModel, cfg: dict) -> dict:
    """Decide ``--dtype auto`` for a target loaded in float32: where the CPU has native bf16, time what
    decoding runs (a 1-token and a 5-token forward after a 64-token prompt) in float32 and in bfloat16 and
    keep bfloat16 (converting the model in place) only if it is >= 10% faster.  A micro-benchmark of one
    product would mislead: a [1, 896] x [896, 4864] bf16 product runs 9x *slower* than float32 on an
    AVX512-BF16 EPYC while the whole Qwen2.5-0.5B forward runs 1.7x faster.  Cached per shape and machine."""
    from .machine import bf16_native

    if not bf16_native():
        choice = {"dtype": "float32", "why": "bf16 is emulated on this CPU (no AVX512-BF16 / AMX)"}
    else:
        ms = {"float32": _decode_ms(target)}
        target.model.to(torch.bfloat16)
        target.dtype = torch.bfloat16
        ms["bfloat16"] = _decode_ms(target)
        fast = ms["bfloat16"] * 1.1 <= ms["float32"]
        if not fast:
            target.model.to(torch.float32)
            target.dtype = torch.float32
        choice = {"dtype": "bfloat16" if fast else "float32", "decode_ms": {k: round(v, 2) for k, v in ms.items()},
                  "why": f"native bf16; a decode step measured {ms['float32']:.1f} ms in float32, "
                         f"{ms['bfloat16']:.1f} ms in bfloat16"}  # fmt: skip
    try:
        path = _dtype_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
        table[_dtype_key(cfg)] = choice
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(table, indent=1) + "\n")
        tmp.replace(path)
    except OSError:
        pass  # a read-only cache: measured again next time
    return choice


@torch.inference_mode()
def _decode_ms(target: TargetModel, reps: int = 3) -> float:
    import time

    g = torch.Generator().manual_seed(0)
    cache = target.new_cache(80)
    target.forward(torch.randint(0, target.vocab_size, (1, 64), generator=g), cache, last_only=True)
    best = float("inf")
    for _ in range(reps + 1):
        t0 = time.perf_counter()
        for k in (1, 5):
            target.forward(torch.randint(0, target.vocab_size, (1, k), generator=g), cache, last_only=True)
            cache.keep_first(64)
        best = min(best, time.perf_counter() - t0)
    target.forward_calls = 0  # measuring is not decoding
    return best * 1e3


def use_engine_attention(model: torch.nn.Module) -> None:
    """Decode and verify with the engine's short-query attention (``attention.py``: several times faster
    than CPU SDPA for a few queries over a long cache); a model that cannot switch keeps its own."""
    if getattr(model.config, "_attn_implementation", None) in ("sdpa", "eager", None):
        # a transformers without the attention interfaces (or a model that cannot switch) keeps SDPA
        with contextlib.suppress(ImportError, ValueError, AttributeError, NotImplementedError):
            from .attention import register

            model.set_attn_implementation(register())


class TargetModel:
    """The verifier.  Batch size 1.  All positions/masks are explicit so trees can be verified."""

    def __init__(self, model: torch.nn.Module) -> None:
        self.model = model.eval()
        use_engine_attention(model)
        self.config = model.config
        self.dtype = next(model.parameters()).dtype
        layers = model.model.layers
        self.num_layers = len(layers)
        self.layer_ids = eagle3_layer_ids(self.num_layers)
        self.hidden_size = int(self.config.hidden_size)
        self.vocab_size = int(self.config.vocab_size)
        self._captured: dict[int | str, torch.Tensor] = {}
        self.forward_calls = 0  # target forwards so far: the machine-independent cost of decoding
        self.dtype_choice: dict | None = None  # with dtype "auto": what was measured and chosen
        # transformers >= 5.24 names the cache argument `cache` (`past_key_values` warns, removed in 5.40)
        params = inspect.signature(model.forward).parameters
        self._cache_kw = "cache" if "cache" in params else "past_key_values"
        self._layer_types, _ = get_layer_types_and_kwargs(self.config.get_text_config(decoder=True))
        self._sliding = any(t != "full_attention" for t in self._layer_types)
        for lid in sorted(set(self.layer_ids)):
            layers[lid].register_forward_hook(self._make_hook(lid))
        model.model.norm.register_forward_hook(self._make_hook("final"))

    def _make_hook(self, lid: int | str):
        def hook(_module, _inputs, output):
            self._captured[lid] = output[0] if isinstance(output, tuple) else output

        return hook

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype: str | torch.dtype = "float32") -> TargetModel:
        cfg = read_model_config(path)
        archs = cfg.get("architectures") or []
        # other decoder-only HF causal LMs usually work too: refuse only what is clearly not one
        if not archs or not str(archs[0]).endswith("ForCausalLM"):
            raise CheckpointError(
                f"{path}: architecture {archs} is not a causal LM; supported: {SUPPORTED_ARCHITECTURES}"
            )
        auto = dtype == "auto"
        known = cached_dtype_choice(cfg) if auto else None
        dtype = resolve_dtype(known["dtype"] if known else "float32" if auto else dtype)
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(path), dtype=dtype, local_files_only=True, attn_implementation="sdpa"
            )
        except SafetensorError as e:
            raise unreadable_safetensors(path) or corrupt_weights(path, e) from None
        except (OSError, ValueError) as e:  # no weights file, a config transformers cannot read, ...
            raise CheckpointError(f"{path}: cannot load the model: {e}") from None
        target = cls(model)
        if auto:
            target.dtype_choice = known or choose_auto_dtype(target, cfg)
        return target

    @property
    def embed_tokens(self) -> torch.nn.Embedding:
        return self.model.get_input_embeddings()

    def new_cache(self, capacity: int = 512) -> EngineKVCache:
        """An empty cache with room for ``capacity`` positions (it grows beyond, by doubling)."""
        if self._sliding:
            raise CheckpointError(
                f"KV cache layer types {sorted(set(self._layer_types))} (sliding window / hybrid attention) are "
                "not supported for speculative decoding yet"
            )
        return EngineKVCache(self.num_layers, capacity)

    @torch.inference_mode()
    def forward(
        self,
        input_ids: torch.Tensor,
        cache: EngineKVCache,
        position_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        last_only: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run [1, T] tokens appended to ``cache``.  Returns logits [T or 1, V] (float32) and the
        fused hidden states [T, 3H] (outputs of the three EAGLE-3 layers, concatenated)."""
        if position_ids is None:
            start = cache.get_seq_length()
            position_ids = torch.arange(start, start + input_ids.shape[1])[None]
        self.forward_calls += 1
        out = self.model(
            input_ids=input_ids,
            position_ids=position_ids,
            attention_mask=attention_mask,
            use_cache=True,
            logits_to_keep=1 if last_only else 0,
            **{self._cache_kw: cache},
        )
        hidden = torch.cat([self._captured[i][0] for i in self.layer_ids], dim=-1)
        self._captured.clear()
        return out.logits[0].float(), hidden

    @torch.no_grad()  # not inference_mode: training uses these tensors as (constant) autograd inputs
    def features(self, input_ids: list[int] | torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """One causal pass over a whole sequence, no cache: the fused EAGLE-3 hidden states [T, 3H]
        and the final-norm hidden states [T, H] (the target's logits are ``final @ lm_head.T``)."""
        ids = torch.as_tensor(input_ids, dtype=torch.long).reshape(1, -1)
        self.model.model(input_ids=ids, use_cache=False)
        fused = torch.cat([self._captured[i][0] for i in self.layer_ids], dim=-1)
        final = self._captured["final"][0]
        self._captured.clear()
        return fused, final

    def lm_head_rows(self, token_ids: torch.Tensor) -> torch.Tensor:
        """Rows of the output head for ``token_ids`` (e.g. the draft vocabulary) [n, H]."""
        return self.model.get_output_embeddings().weight[token_ids]


def crop_cache(cache: EngineKVCache, length: int) -> None:
    """Roll back: keep the first ``length`` positions."""
    cache.keep_first(length)


def compact_cache(cache: EngineKVCache, start: int, keep: list[int]) -> None:
    """Keep positions [0, start) plus ``start + k`` for k in ``keep`` (the accepted tree path), in
    that order; drop everything else (rejected branches)."""
    cache.keep_path(start, keep)
