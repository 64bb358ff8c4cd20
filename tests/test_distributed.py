"""Data-parallel training under torchrun (gloo, 2 CPU processes) reproduces single-process training."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from specexit.cli import main as cli_main

ARGS = ["--batch", "4", "--lr", "1e-3", "--warmup-frac", "0", "--ckpt-every", "2", "--eval-every", "1000",
        "--no-progress"]  # fmt: skip


def _curve(out: Path) -> list[dict]:
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return [r for r in rows if "loss" in r]


def _fresh(pipe: Path, dest: Path) -> Path:
    dest.mkdir()
    for name in ("traces.jsonl", "labels.jsonl", "vocab.json"):
        shutil.copy(pipe / name, dest / name)
    return dest


@pytest.mark.skipif(shutil.which("torchrun") is None and not (Path(sys.executable).parent / "torchrun").exists(),
                    reason="torchrun not installed")  # fmt: skip
def test_two_process_training_matches_single_process_and_resumes_at_another_world_size(
    thinking_tiny_dir, tiny_pipeline, tmp_path
):
    single = _fresh(tiny_pipeline, tmp_path / "single")
    base = ["train", "draft", "--target", str(thinking_tiny_dir), *ARGS]
    assert cli_main([*base, "--out", str(single), "--max-steps", "6"]) == 0

    ddp = _fresh(tiny_pipeline, tmp_path / "ddp")
    torchrun = str(Path(sys.executable).parent / "torchrun")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "specexit.cli", *base, "--out", str(ddp),
           "--max-steps", "4"]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    two = _curve(ddp)
    ref = _curve(single)
    assert len(two) == 4
    for a, b in zip(two, ref[:4], strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-4, abs=1e-5)
        assert a["acc_0"] == pytest.approx(b["acc_0"], abs=1e-6)  # global accuracy, not rank 0's share
    # the 2-process checkpoint resumes in 1 process and continues the same curve
    assert cli_main([*base, "--out", str(ddp), "--max-steps", "6"]) == 0
    resumed = _curve(ddp)
    assert [r["step"] for r in resumed] == list(range(1, 7))
    assert [r["loss"] for r in resumed] == pytest.approx([r["loss"] for r in ref], rel=1e-4, abs=1e-5)


def test_batch_must_split_evenly(thinking_tiny_dir, tiny_pipeline, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "3")
    monkeypatch.setenv("RANK", "0")
    out = _fresh(tiny_pipeline, tmp_path / "odd")
    import torch.distributed as dist

    monkeypatch.setattr(dist, "is_initialized", lambda: True)  # no real group: the check comes first
    assert cli_main(["train", "draft", "--target", str(thinking_tiny_dir), "--out", str(out), *ARGS]) == 2
    assert "does not split evenly over 3 processes" in capsys.readouterr().err


def _rank_pids(root_pid: int) -> dict[int, int]:
    """RANK -> pid of torchrun's worker processes (read from /proc)."""
    out = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            env = (proc / "environ").read_bytes().split(b"\0")
            stat = (proc / "stat").read_text().split()
        except OSError:
            continue
        ppid = int(stat[3])
        ranks = [e.split(b"=", 1)[1] for e in env if e.startswith(b"RANK=")]
        if ranks and ppid == root_pid:
            out[int(ranks[0])] = int(proc.name)
    return out


def test_trace_workers_killed_midway_resume_complete_and_duplicate_free(thinking_tiny_dir, tmp_path):
    import signal
    import time

    from conftest import write_prompts

    prompts = write_prompts(tmp_path / "p.jsonl", [f"What is {i} + {i + 3}?" for i in range(40)])
    out = tmp_path / "traces"
    torchrun = str(Path(sys.executable).parent / "torchrun")
    cmd = [torchrun, "--standalone", "--nproc_per_node", "2", "-m", "specexit.cli", "train", "traces",
           "--target", str(thinking_tiny_dir), "--prompts", str(prompts), "--out", str(out), "--backend", "engine",
           "--max-new-tokens", "96", "--no-progress"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    part1 = out / "traces.part-1.jsonl"
    deadline = time.time() + 120
    killed = False
    while time.time() < deadline and proc.poll() is None:
        if part1.exists() and len(part1.read_text().splitlines()) >= 3:
            os.kill(_rank_pids(proc.pid)[1], signal.SIGKILL)  # one worker dies mid-way
            killed = True
            break
        time.sleep(0.05)
    proc.wait(timeout=120)
    assert killed and proc.returncode != 0
    assert not (out / "traces.jsonl").exists() or len((out / "traces.jsonl").read_text().splitlines()) < 40
    before = sum(len(p.read_text().splitlines()) for p in out.glob("traces.part-*.jsonl"))
    assert 3 <= before < 40
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    lines = [json.loads(line) for line in (out / "traces.jsonl").read_text().splitlines()]
    keys = [(r["prompt_id"], r["sample"]) for r in lines]
    assert sorted(keys) == [(i, 0) for i in range(40)]
    assert not list(out.glob("traces.part-*"))
