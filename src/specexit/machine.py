"""What a measurement ran on, so that a reader can check a number: the CPU and the instruction-set
features that decide its speed, the threads, whether other work shared the machine, the versions of
the software, and sha256 digests of the model weights.

- ``machine_info()``: platform, CPU model (``/proc/cpuinfo``, else ``lscpu`` / ``sysctl``, else
  ``platform.processor()``), the speed-relevant ISA flags present (``SPEED_FLAGS``) and a one-word
  bf16 verdict: ``"native"`` when the CPU has bf16 arithmetic (AVX512-BF16, AMX-BF16, Arm BF16),
  else ``"emulated"`` (torch converts to float32 and back: bf16 is then slower than float32), logical
  and usable CPUs, the cgroup CPU quota, torch's thread count and the 1-minute load average.
- ``LoadMeter``: started before a run and read after it, says whether other work shared the machine:
  the CPU time every process used (``/proc/stat``) minus the CPU time of this process and its children
  (vLLM's engine processes included), per second of wall time, is ``others_busy_cpus``; the machine
  counts as shared (``shared_machine: true``) when that is above ``SHARED_CPUS`` (half a CPU kept
  busy by others on average).  Without ``/proc/stat`` it falls back to the load average at the end
  minus this process's own busy CPUs (a 1-minute average: coarse for short runs).
- ``weights_sha256(folder)``: the sha256 of each ``*.safetensors`` file of a model folder (``*.bin``
  where there is none), streamed, and cached by (path, size, mtime) in ``~/.cache/specexit`` so that a
  rerun does not hash again.  ``model_record(folder, dtype)`` wraps it with the path and dtype.

Nothing here imports torch at module level.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

# x86 (/proc/cpuinfo "flags") and aarch64 ("Features") names of the features the matmul kernels use
SPEED_FLAGS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx512_bf16",
    "avx_vnni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "asimd",
    "sve",
    "bf16",
    "i8mm",
)
NATIVE_BF16 = ("avx512_bf16", "amx_bf16", "bf16")
SHARED_CPUS = 0.5  # other processes' average busy CPUs above which a run counts as sharing the machine
_CHUNK = 8 << 20


# -- the CPU ----------------------------------------------------------------------------------------
def _cpuinfo() -> tuple[str | None, set[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        text = ""
    model, flags = None, None
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if model is None and key in ("model name", "cpu model", "hardware") and value.strip():
            model = value.strip()
        elif flags is None and key in ("flags", "features"):
            flags = set(value.split())
        if model is not None and flags is not None:
            break
    return model, flags or set()


def _run(cmd: list[str], cwd: str | Path | None = None, timeout: float = 3.0) -> str | None:
    try:
        out = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def cpu_model() -> str | None:
    model, _ = _cpuinfo()
    if model:
        return model
    for line in (_run(["lscpu"]) or "").splitlines():  # aarch64 Linux: /proc/cpuinfo has no model name
        key, _, value = line.partition(":")
        if key.strip() == "Model name" and value.strip():
            return value.strip()
    if sys.platform == "darwin":
        return _run(["sysctl", "-n", "machdep.cpu.brand_string"])
    return platform.processor() or None


def cpu_flags() -> set[str]:
    """Every ISA flag the kernel reports (empty where it reports none, e.g. not Linux)."""
    return _cpuinfo()[1]


def isa_flags(flags: set[str] | None = None) -> list[str]:
    """The speed-relevant flags present, sorted."""
    flags = cpu_flags() if flags is None else flags
    return sorted(f for f in SPEED_FLAGS if f in flags)


def bf16_verdict(isa: list[str]) -> str:
    return "native" if any(f in isa for f in NATIVE_BF16) else "emulated"


def bf16_native() -> bool:
    """True where the CPU computes bfloat16 natively (AVX512-BF16 / AMX); AVX2-only CPUs emulate it."""
    return bf16_verdict(isa_flags()) == "native"


def _cgroup_cpus() -> float | None:
    """The cgroup v2 CPU quota in CPUs (``cpu.max``), None without one."""
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        return None
    return None if quota == "max" else round(int(quota) / int(period), 2)


def _torch_facts() -> dict:
    try:
        import torch
    except ImportError:
        return {"torch_threads": None}
    facts: dict = {"torch_threads": torch.get_num_threads()}
    with contextlib.suppress(Exception):  # an older torch without it
        facts["torch_cpu_capability"] = torch.backends.cpu.get_cpu_capability()
    return facts


def _load1() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except (OSError, AttributeError):
        return None


def machine_info() -> dict:
    """The machine a measurement runs on (see the module docstring)."""
    isa = isa_flags()
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "platform": platform.platform(),
        "arch": platform.machine(),
        "cpu": cpu_model(),
        "isa": isa,
        "bf16": bf16_verdict(isa),
        "logical_cpus": os.cpu_count(),
        "usable_cpus": usable,
        "cpu_quota": _cgroup_cpus(),
        **_torch_facts(),
        "omp_num_threads": os.environ.get("OMP_NUM_THREADS"),
        "load1": _load1(),
    }


def summary_line(m: dict) -> str:
    """One line for a report header: CPU, ISA, bf16 verdict, threads, sharing."""
    cpu = m.get("cpu") or m.get("processor") or "unknown CPU"
    arch = m.get("arch")
    parts = [f"{cpu} ({arch})" if arch else cpu]
    if "isa" in m:
        parts.append(f"ISA {' '.join(m['isa']) or 'none of ' + ', '.join(SPEED_FLAGS)}; bf16 {m.get('bf16')}")
    threads = m.get("threads", m.get("torch_threads"))
    cpus = m.get("usable_cpus") or m.get("logical_cpus")
    if threads is not None:
        parts.append(f"{threads} thread(s)" + (f" of {cpus} CPUs" if cpus else ""))
    load = m.get("load") or {}
    if load.get("shared_machine") is not None:
        others = load.get("others_busy_cpus")
        parts.append(
            "shared with other work" + (f" (others kept {others:.2f} CPUs busy)" if others is not None else "")
            if load["shared_machine"]
            else "not shared"
        )
    return "; ".join(parts)


# -- load while a run ran ---------------------------------------------------------------------------
def _proc_busy_seconds() -> float | None:
    """CPU seconds all CPUs spent busy since boot (``/proc/stat``), None where unreadable."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()
    except (OSError, IndexError):
        return None
    if fields[0] != "cpu" or len(fields) < 8:
        return None
    v = [int(x) for x in fields[1:]]
    busy = v[0] + v[1] + v[2] + v[5] + v[6] + (v[7] if len(v) > 7 else 0)  # user nice system irq softirq steal
    return busy / os.sysconf("SC_CLK_TCK")


def _descendants_cpu_seconds() -> float:
    """CPU seconds of this process's live descendants (e.g. vLLM's engine process), from /proc."""
    me = os.getpid()
    parent: dict[int, int] = {}
    cpu: dict[int, float] = {}
    tick = os.sysconf("SC_CLK_TCK")
    try:
        entries = [e for e in os.listdir("/proc") if e.isdigit()]
    except OSError:
        return 0.0
    for e in entries:
        try:
            stat = Path(f"/proc/{e}/stat").read_text()
        except OSError:
            continue
        rest = stat[stat.rfind(")") + 2 :].split()  # after "pid (comm) "
        pid = int(e)
        parent[pid] = int(rest[1])
        cpu[pid] = (int(rest[11]) + int(rest[12])) / tick  # utime, stime
    total = 0.0
    for pid in cpu:
        p, seen = parent.get(pid), 0
        while p and p != me and seen < 64:
            p, seen = parent.get(p), seen + 1
        if p == me and pid != me:
            total += cpu[pid]
    return total


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system + _descendants_cpu_seconds()


class LoadMeter:
    """Start before a run, ``result()`` after it: whether other work shared the machine meanwhile."""

    def __init__(self) -> None:
        self.started = time.time()
        self._t0 = time.perf_counter()
        self._busy0 = _proc_busy_seconds()
        self._own0 = _own_cpu_seconds()
        self.load1_start = _load1()

    def result(self) -> dict:
        wall = time.perf_counter() - self._t0
        own = _own_cpu_seconds() - self._own0
        busy1 = _proc_busy_seconds()
        load1 = _load1()
        out: dict = {
            "load1_start": self.load1_start,
            "load1_end": load1,
            "wall_s": round(wall, 3),
            "own_busy_cpus": round(own / wall, 3) if wall > 0 else None,
            "others_busy_cpus": None,
            "shared_machine": None,
            "shared_threshold_cpus": SHARED_CPUS,
        }
        if wall <= 0:
            return out
        if self._busy0 is not None and busy1 is not None:
            others = max(0.0, (busy1 - self._busy0 - own) / wall)
            out["measured_by"] = "/proc/stat minus this process tree"
        elif load1 is not None:
            others = max(0.0, load1 - own / wall)
            out["measured_by"] = "1-minute load average minus this process's busy CPUs"
        else:
            return out
        out["others_busy_cpus"] = round(others, 3)
        out["shared_machine"] = others > SHARED_CPUS
        return out


# -- versions ---------------------------------------------------------------------------------------
def package_commit() -> dict:
    """specexit's git commit where the package is a git checkout (an editable install), else nulls."""
    pkg = Path(__file__).resolve().parent
    # the package's own files must be tracked there: a wheel inside some other repository is not a checkout
    if not _run(["git", "ls-files", "--error-unmatch", "--", "."], cwd=pkg):
        return {"specexit_git": None, "specexit_git_dirty": None}
    commit = _run(["git", "rev-parse", "HEAD"], cwd=pkg)
    status = _run(["git", "status", "--porcelain", "--untracked-files=no", "--", "."], cwd=pkg)
    return {"specexit_git": commit, "specexit_git_dirty": None if status is None else bool(status)}


def versions(**extra: str | None) -> dict:
    """python, torch, transformers, specexit (version and git commit) and ``extra`` (e.g. vllm)."""
    from importlib import metadata

    out: dict = {"python": platform.python_version()}
    for name in ("torch", "transformers"):
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    mod = sys.modules.get("torch")
    if mod is not None:  # the imported one (a local build may differ from the installed metadata)
        out["torch"] = mod.__version__
    try:
        out["specexit"] = metadata.version("specexit")
    except metadata.PackageNotFoundError:
        out["specexit"] = None
    out.update(package_commit())
    out.update(extra)
    return out


# -- the cache folder -------------------------------------------------------------------------------
CACHE_ENV = "SPECEXIT_CACHE"


def cache_dir() -> Path:
    """Root of the specexit cache: ``$SPECEXIT_CACHE`` if set (and not empty), else ``~/.cache/specexit``."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return Path(env).expanduser() if env else Path.home() / ".cache" / "specexit"


# -- weights ----------------------------------------------------------------------------------------
_memo: dict[tuple[str, int, int], str] = {}


def _cache_file() -> Path:
    root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(root) / "specexit" / "sha256.json"


def _read_cache() -> dict:
    try:
        return json.loads(_cache_file().read_text())
    except (OSError, ValueError):
        return {}


def file_sha256(path: str | Path) -> str:
    """sha256 of a file, streamed; cached by (absolute path, size, mtime)."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key in _memo:
        return _memo[key]
    cache = _read_cache()
    hit = cache.get(key[0])
    if isinstance(hit, dict) and hit.get("size") == st.st_size and hit.get("mtime_ns") == st.st_mtime_ns:
        _memo[key] = hit["sha256"]
        return hit["sha256"]
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    digest = h.hexdigest()
    _memo[key] = digest
    cache = _read_cache()  # re-read: another process (a shard) may have added entries meanwhile
    cache = {p: e for p, e in cache.items() if os.path.exists(p)}  # forget deleted files (temporary folders)
    cache[key[0]] = {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": digest}
    target = _cache_file()
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f"{target.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(cache, indent=0, sort_keys=True))
        os.replace(tmp, target)
    except OSError:  # a read-only home: the digest is still right, only not cached
        pass
    return digest


def weights_sha256(folder: str | Path) -> dict[str, str]:
    """{file name: sha256} of a model folder's ``*.safetensors`` (``*.bin`` where there is none); a
    single weights file given directly (e.g. a GGUF) is hashed as is; {} for a missing path."""
    p = Path(folder)
    if p.is_file():
        return {p.name: file_sha256(p)}
    if not p.is_dir():
        return {}
    files = sorted(p.glob("*.safetensors")) or sorted(p.glob("*.bin"))
    return {f.name: file_sha256(f) for f in files}


def model_record(path: str | Path | None, dtype: str | None = None, **extra) -> dict | None:
    """``{"path", "dtype", "sha256": {file: digest}}`` of a model folder (None without a path)."""
    if path is None:
        return None
    return {"path": str(path), "dtype": dtype, "sha256": weights_sha256(path), **extra}
