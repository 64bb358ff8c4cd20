"""Run methods x problems x seeds through one engine; one JSON line per run, written as it goes.

A rerun with the same ``--out`` skips every (problem, method, seed) already in ``results.jsonl`` (a torn
last line from a kill is cut off), so an interrupted benchmark resumes and never duplicates.  Ctrl-C
stops between two runs and leaves valid partial results; the summary is made from whatever exists.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from tqdm import tqdm

from ..backend import Backend, GenerationRequest
from ..errors import ConfigError
from ..jsonl import drop_torn_tail
from ..machine import LoadMeter, machine_info, model_record, versions
from ..proposer import TreeConfig
from ..sampling import SamplingParams
from ..scoring import score
from .datasets import Problem
from .methods import Method

HISTORY_PROBLEMS = 5  # signal traces are kept for the first few problems (for the plots)


@dataclass
class BenchConfig:
    seeds: tuple[int, ...] = (0,)
    temperature: float = 0.0
    top_p: float = 1.0
    max_new_tokens: int = 1024
    tree: TreeConfig = field(default_factory=TreeConfig)
    system: str | None = None


def _key(obj: dict) -> tuple[str, str, int]:
    return obj["problem_id"], obj["method"], int(obj["seed"])


def result_files(out: Path) -> list[Path]:
    """``results.jsonl`` and the files of ``--shard`` runs in a results folder."""
    return sorted(out.glob("results*.jsonl"))


def completed(path: Path) -> set[tuple[str, str, int]]:
    drop_torn_tail(path)
    if not path.exists():
        return set()
    return {_key(json.loads(line)) for line in path.read_text().splitlines() if line.strip()}


def _seed(cfg: BenchConfig, seed: int, index: int) -> int | None:
    return (seed * 1_000_003 + index) if cfg.temperature else None


def run_batch(backend: Backend, jobs: list[tuple[int, Problem, Method, int]], cfg: BenchConfig) -> list[dict]:
    """One ``generate_batch`` call for jobs of one method (a batched backend runs them together)."""
    reqs = []
    for i, p, m, s in jobs:
        ids = backend.encode_prompt(p.question, enable_thinking=m.enable_thinking, system=cfg.system)
        sampling = SamplingParams(temperature=cfg.temperature, top_p=cfg.top_p, seed=_seed(cfg, s, i))
        # the backend sends the exit config only where it acts: specexit, or a thinking budget
        reqs.append(
            GenerationRequest(ids, m.mode, cfg.max_new_tokens, sampling, m.exit_config, probe=m.probe, tree=cfg.tree)
        )
    backend.prepare(jobs[0][2].mode, cfg.tree)  # start-up is not a batch's time
    t0 = time.perf_counter()
    results = backend.generate_batch(reqs)
    wall = time.perf_counter() - t0
    recs = []
    for (i, p, m, s), r in zip(jobs, results, strict=True):
        rec = make_record(r, p, m, s, i)
        if backend.batched:
            rec.update(batch_size=len(jobs), batch_wall_s=round(wall, 5))
        recs.append(rec)
    return recs


def make_record(r, problem: Problem, method: Method, seed: int, index: int) -> dict:
    """One results.jsonl line from a GenerationResult (either backend)."""
    # only the answer after the thinking span counts: a run that never closed its span (cut off by
    # max_new_tokens) has no answer, and counts as an extraction failure, not as its last number
    s = score(r.answer, problem.answer)
    rec = {
        "problem_id": problem.id,
        "method": method.label,
        "seed": seed,
        "correct": s["correct"],
        "extracted": s["extracted"],
        "pred": s["pred"],
        "gold": s["gold"],
        "thinking_tokens": r.thinking_tokens,
        "total_tokens": r.new_tokens,
        "latency_s": round(r.wall_s, 5),
        "mean_accept_length": round(r.mean_accept_length, 4) if r.accept_lengths else None,
        "rounds": len(r.accept_lengths),
        "exited_early": r.exited_early,
        "exit": r.exit,
        "probe_calls": r.probe_calls,
        "finish_reason": r.finish_reason,
        # equal digests = identical token sequences (the greedy losslessness check across methods)
        "output_digest": hashlib.sha1(str(r.token_ids).encode()).hexdigest()[:16],
    }
    if index < HISTORY_PROBLEMS and r.signal_history:
        rec["signal_history"] = [{"t": t, "raw": raw, "smoothed": sm} for t, raw, sm in r.signal_history]
    return rec


def run_bench(
    gen: Backend,
    problems: list[Problem],
    methods: list[Method],
    cfg: BenchConfig,
    out_dir: str | Path,
    progress: bool = True,
    shard: tuple[int, int] = (0, 1),
    batch_size: int = 1,
    run_info: dict | None = None,
) -> Path:
    """``gen``: a backend; a batched one (vLLM) gets ``batch_size`` questions of one method and seed per
    call, the PyTorch engine one question at a time.  ``run_info``: what the command was asked, recorded in
    run.json: ``dataset`` (the ``--dataset`` text), ``limit``, and the ``target`` / ``draft`` folders where
    the backend cannot name them itself."""
    meter = LoadMeter()  # started before any work: was the machine shared while this ran?
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    k, n = shard
    if not 0 <= k < n:
        raise ValueError(f"shard {k}/{n}: need 0 <= K < N")
    # a shard appends to a file of its own, so shards run side by side (one per core) without interleaving
    # writes; every results*.jsonl of the folder counts as done, and the report reads them all
    path = out / ("results.jsonl" if n == 1 else f"results.shard{k}of{n}.jsonl")
    done = set().union(*(completed(f) for f in [*result_files(out), path]))
    # a shard takes whole (seed, problem) units, so all methods of a question run on the same core
    units = [(s, i, p) for s in cfg.seeds for i, p in enumerate(problems)]
    mine = units[k::n]
    if batch_size < 1 or (batch_size > 1 and not gen.batched):
        raise ConfigError("--batch-size > 1 needs --backend vllm (the torch engine runs one question at a time)")
    jobs = [(i, p, m, s) for s, i, p in mine for m in methods if (p.id, m.label, s) not in done]
    if gen.batched:  # batches of one method and seed, problems in order
        groups: dict[tuple[str, int], list] = {}
        for job in jobs:
            groups.setdefault((job[2].label, job[3]), []).append(job)
        batches = [g[b : b + batch_size] for g in groups.values() for b in range(0, len(g), batch_size)]
    else:
        batches = [[job] for job in jobs]
    env = environment(gen, cfg, methods, len(problems), batch_size, run_info)
    session = {"id": f"{os.getpid()}-{time.time_ns()}", "started": _iso(meter.started), "shard": f"{k}/{n}",
               "jobs": len(jobs), "finished": False}  # fmt: skip
    env["sessions"] = [*_earlier_sessions(out / "run.json"), session]
    _write_run(out, env)  # now, so that a killed run still says what it ran on
    bar = tqdm(total=len(jobs), desc="bench", unit="run", disable=not progress)
    try:
        if not batches:  # all done (e.g. the report run after shards): leave no empty results file behind
            bar.close()
            _finish_run(out, env, session, meter)
            return path
        with path.open("a", encoding="utf-8") as f:
            for batch in batches:
                recs = run_batch(gen, batch, cfg)
                for rec in recs:
                    f.write(json.dumps(rec, ensure_ascii=False) + "\n")
                f.flush()
                bar.set_postfix(method=batch[0][2].label[:16], ok=recs[-1]["correct"])
                bar.update(len(batch))
    except KeyboardInterrupt:
        bar.close()
        print(f"\ninterrupted: partial results kept in {path}; rerun the same command to resume", file=sys.stderr)
        session["interrupted"] = True
    bar.close()
    _finish_run(out, env, session, meter)
    return path


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="seconds")


def _write_run(out: Path, env: dict) -> None:
    tmp = out / f"run.json.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(env, indent=2) + "\n")
    os.replace(tmp, out / "run.json")


def _earlier_sessions(path: Path) -> list[dict]:
    """The sessions an earlier run.json of this folder recorded (a resume, or the other shards)."""
    try:
        return list(json.loads(path.read_text()).get("sessions", []))
    except (OSError, ValueError, AttributeError):
        return []


def _session_order(s: dict) -> tuple[str, int]:
    ns = str(s.get("id") or "").rpartition("-")[2]
    return s.get("started") or "", int(ns) if ns.isdigit() else 0


def _finish_run(out: Path, env: dict, session: dict, meter: LoadMeter) -> None:
    """run.json once the work is done: the machine's load during it, in ``machine.load`` and the session."""
    load = meter.result()
    env["machine"]["load"] = load
    session.update(finished=True, wall_s=load["wall_s"], shared_machine=load["shared_machine"],
                   others_busy_cpus=load["others_busy_cpus"], cpu=env["machine"].get("cpu"),
                   threads=env["machine"].get("threads"))  # fmt: skip
    # shards write the same run.json side by side: keep the sessions the others added (or finished) meanwhile
    merged: dict[tuple, dict] = {}
    for s in [*_earlier_sessions(out / "run.json"), *env["sessions"]]:
        key = s.get("id") or (s.get("started"), s.get("shard"))
        if s is session or key not in merged or (s.get("finished") and not merged[key].get("finished")):
            merged[key] = s
    env["sessions"] = sorted(merged.values(), key=_session_order)
    _write_run(out, env)


def environment(
    gen: Backend,
    cfg: BenchConfig,
    methods: list[Method],
    n_problems: int,
    batch_size: int = 1,
    run_info: dict | None = None,
) -> dict:
    """run.json: what a reader needs to check a number of this run (docs/benchmarks.md).  Keys kept from
    earlier versions with their meaning: machine.platform / processor / threads, versions, problems,
    methods, seeds, temperature, top_p, max_new_tokens, tree (torch) or batch_size (vLLM), and what the
    backend's ``describe()`` adds (backend, target, draft_signals, answer_trigger, ...)."""
    info = dict(run_info or {})
    env: dict = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor() or platform.machine(),
            **machine_info(),
        },
        "versions": versions(),
        "problems": n_problems,
        "dataset": {"spec": info.get("dataset"), "limit": info.get("limit"), "problems": n_problems},
        "methods": [m.label for m in methods],
        "seeds": list(cfg.seeds),
        "temperature": cfg.temperature,
        "top_p": cfg.top_p,
        "max_new_tokens": cfg.max_new_tokens,
        "system": cfg.system,
        "sampling": {
            "temperature": cfg.temperature,
            "top_p": cfg.top_p,
            "seeds": list(cfg.seeds),
            # the seed of run (seed s, problem index i) at temperature > 0; greedy runs take none
            "request_seed": "s * 1000003 + i" if cfg.temperature else None,
        },
    }
    about = gen.describe()
    if "threads" in about:
        env["machine"]["threads"] = about.pop("threads")
    env["versions"].update(about.pop("versions", {}))
    models = about.pop("models", {}) or {}
    env.update(about)
    # the folders: the backend's own (it loaded them), else what the command was given
    records = {}
    for role in ("target", "draft"):
        m = dict(models.get(role) or {})
        path = m.pop("path", None) or info.get(role)
        records[role] = model_record(path, m.pop("dtype", None), **m) if path is not None else None
    env["models"] = records
    if gen.batched:
        env["batch_size"] = batch_size
    else:
        t = cfg.tree
        env["tree"] = [t.total_tokens, t.depth, t.branching, t.chain]  # as before: a list
        env["tree_config"] = {"total_tokens": t.total_tokens, "depth": t.depth, "branching": t.branching,
                              "chain": t.chain}  # fmt: skip
    return env
