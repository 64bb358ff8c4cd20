"""Records that let a reader check a number: run.json of a bench (models with sha256, dtypes, dataset,
tree, sampling, versions, the CPU and its ISA, threads, whether other work shared the machine), the
summary header, the machine probes themselves, and pipeline.json's per-stage runs across resumes."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import QUESTIONS, make_thinking_tiny, write_prompts

from specexit import machine
from specexit.cli import main as cli_main

CPUINFO = Path("/proc/cpuinfo")


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _kernel_flags() -> set[str]:
    for line in CPUINFO.read_text().splitlines():
        key, _, value = line.partition(":")
        if key.strip().lower() in ("flags", "features"):
            return set(value.split())
    return set()


# --- the machine -----------------------------------------------------------------------------------
@pytest.mark.skipif(not CPUINFO.is_file(), reason="needs /proc/cpuinfo (Linux)")
def test_machine_info_reports_the_cpu_and_its_speed_relevant_isa():
    info = machine.machine_info()
    flags = _kernel_flags()
    assert set(info["isa"]) <= flags and set(info["isa"]) <= set(machine.SPEED_FLAGS)
    assert info["isa"] == sorted(info["isa"])
    assert [f for f in machine.SPEED_FLAGS if f in flags] == [f for f in machine.SPEED_FLAGS if f in info["isa"]]
    native = bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})
    assert info["bf16"] == ("native" if native else "emulated")
    names = [ln.split(":", 1)[1].strip() for ln in CPUINFO.read_text().splitlines() if ln.startswith("model name")]
    if names:
        assert info["cpu"] == names[0]
    assert info["logical_cpus"] == os.cpu_count() and 1 <= info["usable_cpus"] <= os.cpu_count()
    import torch

    assert info["torch_threads"] == torch.get_num_threads()
    line = machine.summary_line({**info, "threads": 1})
    assert (info["cpu"] or "") in line and f"bf16 {info['bf16']}" in line and "1 thread(s)" in line


def test_file_sha256_streams_and_caches_by_path_size_and_mtime(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(machine, "_memo", {})
    monkeypatch.setattr(machine, "_CHUNK", 1000)  # several chunks: streamed, not read whole
    f = tmp_path / "model.safetensors"
    f.write_bytes(os.urandom(5500))
    assert machine.file_sha256(f) == _sha(f)
    cache = json.loads((tmp_path / "cache" / "specexit" / "sha256.json").read_text())
    entry = cache[str(f.resolve())]
    assert entry["sha256"] == _sha(f) and entry["size"] == 5500
    # a rerun (a new process: no memo) takes the cached digest without reading the file
    entry["sha256"] = "cached"
    (tmp_path / "cache" / "specexit" / "sha256.json").write_text(json.dumps(cache))
    monkeypatch.setattr(machine, "_memo", {})
    assert machine.file_sha256(f) == "cached"
    # a changed file (size / mtime) is hashed again
    f.write_bytes(os.urandom(4000))
    assert machine.file_sha256(f) == _sha(f)
    assert machine.weights_sha256(tmp_path) == {"model.safetensors": _sha(f)}
    assert machine.weights_sha256(tmp_path / "absent") == {}
    assert machine.model_record(None) is None


_SPIN = "import time, os\nt = time.process_time()\nwhile time.process_time() - t < {s}: pass\n"


@pytest.mark.skipif(not Path("/proc/stat").is_file(), reason="needs /proc (Linux)")
def test_load_meter_counts_own_children_as_own_and_other_processes_as_sharing(tmp_path):
    # a live child (as vLLM's engine process): its CPU time is this run's own, not other work
    child = subprocess.Popen(
        [sys.executable, "-c", _SPIN.format(s=0.6) + "print(time.process_time(), flush=True)\ntime.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        meter = machine.LoadMeter()
        child_cpu = float(child.stdout.readline())
        own = meter.result()
    finally:
        child.kill()
        child.wait()
    assert own["own_busy_cpus"] * own["wall_s"] >= 0.8 * child_cpu
    # a process that is not ours (double fork: reparented away) is other work sharing the machine
    done = tmp_path / "cpu.txt"
    code = (
        "import os, sys, time\nif os.fork(): sys.exit(0)\n" + _SPIN.format(s=0.8)
        + f"open({str(done)!r}, 'w').write(str(time.process_time()))\n"
    )  # fmt: skip
    meter = machine.LoadMeter()
    subprocess.run([sys.executable, "-c", code], check=True)
    deadline = time.monotonic() + 30
    while not done.exists() or not done.read_text():
        assert time.monotonic() < deadline
        time.sleep(0.05)
    other_cpu = float(done.read_text())
    res = meter.result()
    assert res["others_busy_cpus"] * res["wall_s"] >= 0.8 * other_cpu - 0.05
    assert res["shared_machine"] is (res["others_busy_cpus"] > machine.SHARED_CPUS)
    assert res["measured_by"].startswith("/proc/stat")


# --- run.json of a bench -----------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = make_thinking_tiny(tmp_path_factory.mktemp("records-tiny"))
    draft = tmp_path_factory.mktemp("records-draft")
    assert cli_main(["init-draft", "--target", str(path), "--out", str(draft)]) == 0
    prompts = tmp_path_factory.mktemp("records-data") / "q.jsonl"
    prompts.write_text('{"question": "What is 2 + 3?", "answer": "5"}\n{"question": "Half of 18?", "answer": "9"}\n')
    return path, draft, prompts


def test_run_json_records_what_a_reader_needs_to_check_a_number(tiny, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the digest cache of this test only
    path, draft, prompts = tiny
    out = tmp_path / "bench"
    argv = ["bench", "--target", str(path), "--draft", str(draft), "--dataset", str(prompts), "--limit", "1",
            "--methods", "vanilla,spec", "--max-new-tokens", "12", "--tree", "8,4,2", "--temperature", "0.5",
            "--top-p", "0.9", "--seeds", "3,4", "--draft-dtype", "bfloat16", "--out", str(out), "--no-progress",
            "--no-plots"]  # fmt: skip
    assert cli_main(argv) == 0
    run = json.loads((out / "run.json").read_text())
    target, dr = run["models"]["target"], run["models"]["draft"]
    assert target["path"] == str(path) and dr["path"] == str(draft)
    assert target["sha256"] == {"model.safetensors": _sha(path / "model.safetensors")}
    assert dr["sha256"] == {"model.safetensors": _sha(draft / "model.safetensors")}
    assert (target["dtype"], dr["dtype"]) == ("float32", "bfloat16")
    assert run["dataset"] == {"spec": str(prompts), "limit": 1, "problems": 1}
    assert run["sampling"]["temperature"] == 0.5 and run["sampling"]["top_p"] == 0.9
    assert run["sampling"]["seeds"] == [3, 4] and run["sampling"]["request_seed"]
    assert run["tree_config"] == {"total_tokens": 8, "depth": 4, "branching": 2, "chain": False}
    # the keys earlier readers use keep their meaning
    assert run["tree"] == [8, 4, 2, False] and run["methods"] == ["vanilla", "spec"] and run["seeds"] == [3, 4]
    assert run["target"] == str(path) and run["backend"] == "torch" and run["problems"] == 1
    m = run["machine"]
    assert {"platform", "processor", "threads"} <= set(m) and m["threads"] == 1  # conftest: one torch thread
    if CPUINFO.is_file():
        assert set(m["isa"]) <= _kernel_flags()
    assert m["bf16"] in ("native", "emulated") and m["cpu"]
    assert isinstance(m["load"]["shared_machine"], bool) and m["load"]["wall_s"] > 0
    v = run["versions"]
    import torch
    import transformers

    assert (v["torch"], v["transformers"]) == (torch.__version__, transformers.__version__)
    assert v["python"] == ".".join(map(str, sys.version_info[:3]))
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(machine.__file__).parent, capture_output=True,
                          text=True)  # fmt: skip
    tracked = subprocess.run(["git", "ls-files", "--", "."], cwd=Path(machine.__file__).parent,
                             capture_output=True, text=True)  # fmt: skip
    if head.returncode == 0 and tracked.stdout.strip():  # an editable install in a checkout
        assert v["specexit_git"] == head.stdout.strip() and isinstance(v["specexit_git_dirty"], bool)
    else:
        assert v["specexit_git"] is None
    assert [s["jobs"] for s in run["sessions"]] == [4] and run["sessions"][0]["finished"]
    # the summary's header says what it ran on
    md = (out / "summary.md").read_text()
    assert f"Machine: {m['cpu']}" in md and f"bf16 {m['bf16']}" in md and "1 thread(s)" in md
    assert target["sha256"]["model.safetensors"][:12] in md and f"Dataset: `{prompts}`, --limit 1" in md
    # a resume keeps the earlier session; --report-only still reads run.json
    assert cli_main(argv) == 0
    again = json.loads((out / "run.json").read_text())
    assert [s["jobs"] for s in again["sessions"]] == [4, 0] and again["models"] == run["models"]
    capsys.readouterr()
    assert cli_main(["bench", "--target", "t", "--dataset", "d", "--out", str(out), "--report-only", "--no-plots"]) == 0
    assert "| spec |" in capsys.readouterr().out and "Sessions: 2" in (out / "summary.md").read_text()


def test_summary_header_of_an_old_run_json(tmp_path):
    from specexit.bench.report import run_header

    old = {"versions": {"python": "3.11.7"}, "machine": {"platform": "Linux", "processor": "x86_64", "threads": 1}}
    header = run_header(old)
    assert header.startswith("Machine: x86_64") and "1 thread(s)" in header and '"python": "3.11.7"' in header
    assert "unknown" in run_header({})


# --- pipeline.json across resumes ---------------------------------------------------------------------
def test_pipeline_json_keeps_every_stage_run_across_resumes(thinking_tiny_dir, tmp_path):
    from specexit.engine import SpecExitGenerator
    from specexit.train.pipeline import stage_timings, stage_traces, stage_vocab
    from specexit.train.traces import TraceConfig

    gen = SpecExitGenerator.from_pretrained(thinking_tiny_dir)
    prompts = write_prompts(tmp_path / "prompts.jsonl", QUESTIONS[:3])
    out = tmp_path / "pipe"
    cfg = TraceConfig(max_new_tokens=16, samples=1, backend="engine")
    stage_traces(gen, prompts, out, cfg, progress=False)
    first = json.loads((out / "pipeline.json").read_text())["stages"]["traces"]
    assert len(first) == 1 and first[0]["new_traces"] == 3 and first[0]["resumed_noop"] is False
    assert first[0]["wall_s"] > 0 and first[0]["started"]
    stage_traces(gen, prompts, out, cfg, progress=False)  # a resume with nothing left to do
    runs = json.loads((out / "pipeline.json").read_text())["stages"]["traces"]
    assert runs[0] == first[0], "the run that did the work keeps its time"
    assert runs[1]["new_traces"] == 0 and runs[1]["resumed_noop"] is True
    # a resume after a kill does only what is missing, and says so
    lines = (out / "traces.jsonl").read_text().splitlines(keepends=True)
    (out / "traces.jsonl").write_text("".join(lines[:-1]))
    stage_traces(gen, prompts, out, cfg, progress=False)
    runs = json.loads((out / "pipeline.json").read_text())["stages"]["traces"]
    assert [r["new_traces"] for r in runs] == [3, 0, 1] and runs[2]["resumed_noop"] is False
    stage_vocab(gen, out, 300)
    report = json.loads((out / "pipeline.json").read_text())
    assert report["stages"]["vocab"][0]["traces"] == 3 and report["stages"]["traces"] == runs
    timings = stage_timings(out)
    assert timings["traces_s"] == pytest.approx(sum(r["wall_s"] for r in runs), abs=0.01)
    assert set(timings) == {"traces_s", "labels_s", "vocab_hidden_s", "train_s"}


def test_pipeline_json_of_an_older_version_keeps_its_timings(thinking_tiny_dir, tmp_path):
    from specexit.engine import SpecExitGenerator
    from specexit.train.pipeline import stage_timings, stage_traces
    from specexit.train.traces import TraceConfig

    gen = SpecExitGenerator.from_pretrained(thinking_tiny_dir)
    prompts = write_prompts(tmp_path / "prompts.jsonl", QUESTIONS[:1])
    out = tmp_path / "pipe"
    out.mkdir()
    old = {"timings": {"traces_s": 3600.0, "labels_s": 60.0, "vocab_hidden_s": 1.0, "train_s": 7200.0}, "train": {}}
    (out / "pipeline.json").write_text(json.dumps(old))
    stage_traces(gen, prompts, out, TraceConfig(max_new_tokens=8, backend="engine"), progress=False)
    report = json.loads((out / "pipeline.json").read_text())
    assert report["stages"]["traces"][0]["wall_s"] == 3600.0 and report["stages"]["draft"][0]["wall_s"] == 7200.0
    assert report["train"] == {} and stage_timings(out)["traces_s"] > 3600.0


def test_demo_save_and_testbed_eval_record_the_machine_and_weights(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    from specexit.demo import ASSET_DRAFT, ASSET_TARGET, asset_dir

    save = tmp_path / "demo.json"
    assert cli_main(["demo", "--problems", "1", "--max-new-tokens", "24", "--json", "--save", str(save)]) == 0
    res = json.loads(save.read_text())
    assert res["machine"]["cpu"] and res["machine"]["bf16"] in ("native", "emulated")
    assert isinstance(res["machine"]["load"]["shared_machine"], bool)
    weights = asset_dir(ASSET_TARGET) / "model.safetensors"
    assert res["models"]["target"]["sha256"]["model.safetensors"] == _sha(weights)
    assert res["models"]["draft"]["path"] == str(asset_dir(ASSET_DRAFT)) and res["versions"]["torch"]
    from specexit.testbed.evaluate import EvalConfig, evaluate

    report = evaluate(asset_dir(ASSET_TARGET), EvalConfig(n=1, max_new_tokens=8, samples=1, probe=False), False)
    assert report["weights"]["sha256"] == {"model.safetensors": _sha(weights)} and report["machine"]["isa"] is not None
