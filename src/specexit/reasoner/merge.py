"""Merge a tuned adapter into its base model: a plain HF folder (safetensors) with the Qwen3 tokenizer,
which every part of this package loads as a thinking target (engine, bench, train, serve)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import torch

from ..errors import ConfigError
from .tokenizer import load_thinking_tokenizer
from .tune import peft_wrapping


def check_adapter_dir(adapter_dir: str | Path) -> None:
    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise ConfigError(f"--adapter {adapter_dir}: no adapter_config.json (the adapter/ folder of `reasoner tune`)")


def merge_adapter(
    base_dir: str | Path,
    adapter_dir: str | Path,
    tokenizer_dir: str | Path,
    out_dir: str | Path,
    extra_files: dict[str, str] | None = None,
) -> Path:
    """Write OUT (complete or not at all): base + LoRA merged, think-token rows in place, float32.
    ``extra_files``: {name: text} written into OUT too (e.g. the zoo's marker), inside the same atomic step."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter_dir, out = Path(adapter_dir), Path(out_dir)
    check_adapter_dir(adapter_dir)
    tok = load_thinking_tokenizer(tokenizer_dir)
    base = AutoModelForCausalLM.from_pretrained(str(base_dir), dtype=torch.float32)
    with peft_wrapping():
        model = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    stage = out.with_name(out.name + ".tmp")
    shutil.rmtree(stage, ignore_errors=True)
    # the model stops at the end of its turn; Qwen3's template ends turns with <|im_end|>
    model.generation_config.eos_token_id = [tok.convert_tokens_to_ids("<|im_end|>"), tok.eos_token_id]
    made_from = {"base": str(base_dir), "adapter": str(adapter_dir), "tokenizer": str(tokenizer_dir)}
    try:
        model.save_pretrained(str(stage))
        tok.save_pretrained(str(stage))
        (stage / "specexit_reasoner.json").write_text(json.dumps(made_from, indent=2) + "\n")
        for name, text in (extra_files or {}).items():
            (stage / name).write_text(text)
        shutil.rmtree(out, ignore_errors=True)
        stage.replace(out)
    except BaseException:  # a failed merge leaves neither OUT nor its staging folder
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return out
