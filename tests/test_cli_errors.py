"""Bad invocations of every subcommand: each exits with status 2 and prints exactly one line on stderr
that names the file or flag and what is wrong, never a traceback, and a refused run writes nothing.

The table runs in-process through ``specexit.cli.main``; a few rows also run as a real subprocess
(``python -m specexit``) to prove what reaches a user's terminal.  No server is ever started: the
serve rows fail before it would, and ``uvicorn.run`` is replaced by a function that fails the test.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from specexit.cli import main as cli_main

# --- artefacts ---------------------------------------------------------------------------------------


def _truncate(path: Path) -> None:
    os.truncate(path, path.stat().st_size // 2)


def _garble_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[8:40] = b"garbage!" * 4  # the JSON header starts after the 8-byte length
    path.write_bytes(bytes(data))


def _huge_header(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[:8] = b"\xff" * 8  # a header length far beyond the file
    path.write_bytes(bytes(data))


@pytest.fixture(scope="module")
def art(tmp_path_factory) -> dict[str, str]:
    """Tiny real artefacts and broken copies of them: the placeholders of the table."""
    import shutil

    from specexit.tiny import make_tiny

    root = tmp_path_factory.mktemp("cli-errors")
    tiny = make_tiny("qwen3", root / "tiny")
    assert cli_main(["init-draft", "--target", str(tiny), "--out", str(root / "draft"), "--draft-vocab", "256"]) == 0
    assert cli_main(["init-draft", "--target", str(tiny), "--out", str(root / "plain"), "--signals", ""]) == 0
    paths = {"tmp": root, "tiny": tiny, "draft": root / "draft", "plain": root / "plain"}
    for name, src, damage in [
        ("t_trunc", tiny, _truncate),
        ("t_garb", tiny, _huge_header),
        ("d_trunc", root / "draft", _truncate),
        ("d_garb", root / "draft", _garble_header),
    ]:
        shutil.copytree(src, root / name)
        damage(root / name / "model.safetensors")
        paths[name] = root / name
    shutil.copytree(tiny, root / "t_notok")
    for f in (root / "t_notok").iterdir():
        if f.name.startswith("tokenizer") or f.name in ("chat_template.jinja", "vocab.json", "merges.txt"):
            f.unlink()
    paths["t_notok"] = root / "t_notok"
    shutil.copytree(root / "draft", root / "d_json")
    (root / "d_json" / "config.json").write_text('{"hidden_size": 64,\n')
    paths["d_json"] = root / "d_json"
    shutil.copytree(root / "draft", root / "d_policy")
    (root / "d_policy" / "exit_policy.json").write_text('{"format": "specexit-exit-policy/1", "rule": 3}\n')
    paths["d_policy"] = root / "d_policy"
    (root / "pipe").mkdir()  # a pipeline folder whose pipeline.json does not say how it was sampled
    for name in ("traces.jsonl", "labels.jsonl"):
        (root / "pipe" / name).write_text("")
    paths["pipe"] = root / "pipe"
    (root / "empty.jsonl").write_text("")
    (root / "notjson.jsonl").write_text('{"question": "1+1?", "answer": "2"}\nnot json\n')
    (root / "prompts.jsonl").write_text(json.dumps({"question": "What is 1 + 1?", "answer": "2"}) + "\n")
    (root / "a_file").write_text("not a folder\n")
    (root / "a_dir").mkdir()
    paths.update(empty=root / "empty.jsonl", notjson=root / "notjson.jsonl", prompts=root / "prompts.jsonl",
                 file=root / "a_file", dir=root / "a_dir")  # fmt: skip
    return {k: str(v) for k, v in paths.items()}


# --- the table -----------------------------------------------------------------------------------------
# (argv, what the one line must contain, a path that must not exist afterwards).  "{new}" is a fresh path
# of each row (an output folder that a refused run must not create); the other placeholders are `art`'s.

GEN = ["generate", "--prompt", "hi", "--max-new-tokens", "4"]
BENCH = ["bench", "--no-progress", "--no-plots"]
T = "{tiny}"

# fmt: off
ROWS: list[tuple[str, list[str], tuple[str, ...], str | None]] = [
    # generate
    ("gen-target-truncated", [*GEN, "--target", "{t_trunc}"], ("t_trunc/model.safetensors",), None),
    ("gen-target-garbled", [*GEN, "--target", "{t_garb}"], ("t_garb/model.safetensors",), None),
    ("gen-target-no-tokenizer", [*GEN, "--target", "{t_notok}"], ("t_notok", "tokenizer"), None),
    ("gen-target-missing", [*GEN, "--target", "{tmp}/nothing"], ("nothing",), None),
    ("gen-target-is-file", [*GEN, "--target", "{file}"], ("a_file",), None),
    ("gen-draft-truncated", [*GEN, "--target", T, "--draft", "{d_trunc}"], ("d_trunc/model.safetensors",), None),
    ("gen-draft-garbled", [*GEN, "--target", T, "--draft", "{d_garb}"], ("d_garb/model.safetensors",), None),
    ("gen-draft-config-not-json", [*GEN, "--target", T, "--draft", "{d_json}"], ("d_json/config.json", "JSON"), None),
    ("gen-draft-missing", [*GEN, "--target", T, "--draft", "{tmp}/nodraft"], ("nodraft",), None),
    ("gen-bad-tree", [*GEN, "--target", T, "--tree", "16,5"], ("--tree",), None),
    ("gen-bad-chain", [*GEN, "--target", T, "--chain", "-1"], ("--chain",), None),
    ("gen-bad-dtype", [*GEN, "--target", T, "--dtype", "float33"], ("--dtype", "float33"), None),
    ("gen-bad-draft-dtype", [*GEN, "--target", T, "--draft-dtype", "int4"], ("--draft-dtype", "int4"), None),
    ("gen-max-new-tokens-0", [*GEN, "--target", T, "--max-new-tokens", "0"], ("--max-new-tokens",), None),
    ("gen-threshold-not-number", [*GEN, "--target", T, "--thresholds", "confidence=high"], ("--thresholds",), None),
    ("gen-threshold-unknown", [*GEN, "--target", T, "--draft", "{draft}", "--thresholds", "speed=1"], ("speed",), None),
    ("gen-specexit-plain-draft", [*GEN, "--target", T, "--draft", "{plain}", "--mode", "specexit"], ("signal",), None),
    ("gen-spec-without-draft", [*GEN, "--target", T, "--mode", "spec"], ("--draft",), None),
    ("gen-top-p-0", [*GEN, "--target", T, "--top-p", "0"], ("--top-p",), None),
    ("gen-bad-mode", [*GEN, "--target", T, "--mode", "fast"], ("--mode",), None),
    ("gen-missing-prompt", ["generate", "--target", T], ("--prompt",), None),
    ("global-threads-0", ["--threads", "0", *GEN, "--target", T], ("--threads",), None),
    # bench: every refusal leaves no --out folder behind
    ("bench-dataset-testbed-abc", [*BENCH, "--target", T, "--dataset", "testbed:abc", "--methods", "vanilla",
                                   "--out", "{new}"], ("testbed:abc",), "{new}"),
    ("bench-dataset-rgym-x", [*BENCH, "--target", T, "--dataset", "reasoning-gym:basic_arithmetic:x",
                              "--methods", "vanilla", "--out", "{new}"], ("reasoning-gym:basic_arithmetic:x",),
     "{new}"),
    ("bench-dataset-empty", [*BENCH, "--target", T, "--dataset", "{empty}", "--methods", "vanilla", "--out", "{new}"],
     ("empty.jsonl", "empty"), "{new}"),
    ("bench-dataset-not-json", [*BENCH, "--target", T, "--dataset", "{notjson}", "--methods", "vanilla",
                                "--out", "{new}"], ("notjson.jsonl:2",), "{new}"),
    ("bench-dataset-testbed-0", [*BENCH, "--target", T, "--dataset", "testbed:0", "--methods", "vanilla",
                                 "--out", "{new}"], ("testbed:0",), "{new}"),
    ("bench-dataset-unknown", [*BENCH, "--target", T, "--dataset", "mmlu", "--methods", "vanilla", "--out", "{new}"],
     ("mmlu",), "{new}"),
    ("bench-out-is-file", [*BENCH, "--target", T, "--dataset", "testbed:2", "--methods", "vanilla", "--out", "{file}"],
     ("--out", "a_file"), None),
    ("bench-out-under-file", [*BENCH, "--target", T, "--dataset", "testbed:2", "--methods", "vanilla",
                              "--out", "{file}/run"], ("--out", "a_file"), None),
    ("bench-bad-dtype", [*BENCH, "--target", T, "--dataset", "testbed:2", "--methods", "vanilla", "--dtype", "half8",
                         "--out", "{new}"], ("--dtype", "half8"), "{new}"),
    ("bench-limit-0", [*BENCH, "--target", T, "--dataset", "testbed:2", "--methods", "vanilla", "--limit", "0",
                       "--out", "{new}"], ("--limit",), "{new}"),
    ("bench-limit-negative", [*BENCH, "--target", T, "--dataset", "testbed:2", "--methods", "vanilla", "--limit", "-3",
                              "--out", "{new}"], ("--limit",), "{new}"),
    ("bench-seeds-not-int", [*BENCH, "--target", T, "--dataset", "testbed:2", "--methods", "vanilla", "--seeds", "1,x",
                             "--out", "{new}"], ("--seeds", "'1,x'"), "{new}"),
    ("bench-seeds-empty", [*BENCH, "--target", T, "--dataset", "testbed:2", "--methods", "vanilla", "--seeds", ",",
                           "--out", "{new}"], ("--seeds",), "{new}"),
    ("bench-bad-tree", [*BENCH, "--target", T, "--dataset", "testbed:2", "--methods", "vanilla", "--tree", "1,2",
                        "--out", "{new}"], ("--tree", "'1,2'"), "{new}"),
    ("bench-bad-method", [*BENCH, "--target", T, "--dataset", "testbed:2", "--methods", "fastest", "--out", "{new}"],
     ("fastest",), "{new}"),
    ("bench-bad-shard", [*BENCH, "--target", T, "--dataset", "testbed:2", "--methods", "vanilla", "--shard", "2/2",
                         "--out", "{new}"], ("--shard",), "{new}"),
    ("bench-needs-draft", [*BENCH, "--target", T, "--dataset", "testbed:2", "--out", "{new}"], ("--draft",), "{new}"),
    ("bench-target-truncated", [*BENCH, "--target", "{t_trunc}", "--dataset", "testbed:2", "--methods", "vanilla",
                                "--out", "{new}"], ("t_trunc/model.safetensors",), "{new}"),
    ("bench-target-no-tokenizer", [*BENCH, "--target", "{t_notok}", "--dataset", "testbed:2", "--methods", "vanilla",
                                   "--out", "{new}"], ("t_notok", "tokenizer"), "{new}"),
    ("bench-draft-config-not-json", [*BENCH, "--target", T, "--draft", "{d_json}", "--dataset", "testbed:2",
                                     "--methods", "spec", "--out", "{new}"], ("d_json/config.json",), "{new}"),
    ("bench-specexit-plain-draft", [*BENCH, "--target", T, "--draft", "{plain}", "--dataset", "testbed:2",
                                    "--methods", "specexit", "--out", "{new}"], ("specexit",), "{new}"),
    ("bench-report-only-nothing", [*BENCH, "--target", T, "--dataset", "testbed:2", "--report-only", "--out", "{new}"],
     ("--report-only", "not found"), "{new}"),
    ("bench-batch-size-0", [*BENCH, "--target", T, "--dataset", "testbed:2", "--methods", "vanilla", "--batch-size",
                            "0", "--out", "{new}"], ("--batch-size",), "{new}"),
    ("bench-limit-not-int", [*BENCH, "--target", T, "--dataset", "testbed:2", "--limit", "ten", "--out", "{new}"],
     ("--limit",), "{new}"),
    # train, every stage: a refused run leaves no --out folder behind
    ("train-traces-prompts-missing", ["train", "traces", "--target", T, "--prompts", "{tmp}/none.jsonl",
                                      "--out", "{new}"], ("none.jsonl",), "{new}"),
    ("train-traces-prompts-empty", ["train", "traces", "--target", T, "--prompts", "{empty}", "--out", "{new}"],
     ("empty.jsonl", "empty"), "{new}"),
    ("train-traces-out-is-file", ["train", "traces", "--target", T, "--prompts", "{prompts}", "--out", "{file}"],
     ("--out", "a_file"), None),
    ("train-traces-target-garbled", ["train", "traces", "--target", "{t_garb}", "--prompts", "{prompts}",
                                     "--out", "{new}"], ("t_garb/model.safetensors",), "{new}"),
    ("train-traces-no-tokenizer", ["train", "traces", "--target", "{t_notok}", "--prompts", "{prompts}",
                                   "--out", "{new}"], ("t_notok", "tokenizer"), "{new}"),
    ("train-traces-samples-0", ["train", "traces", "--target", T, "--prompts", "{prompts}", "--samples", "0",
                                "--out", "{new}"], ("--samples",), "{new}"),
    ("train-traces-batch-size-0", ["train", "traces", "--target", T, "--prompts", "{prompts}", "--batch-size", "0",
                                   "--out", "{new}"], ("--batch-size",), "{new}"),
    ("train-traces-top-p", ["train", "traces", "--target", T, "--prompts", "{prompts}", "--top-p", "1.5",
                            "--out", "{new}"], ("--top-p",), "{new}"),
    ("train-labels-no-traces", ["train", "labels", "--target", T, "--out", "{new}"], ("traces.jsonl",), "{new}"),
    ("train-labels-probe-tokens-0", ["train", "labels", "--target", T, "--probe-tokens", "0", "--out", "{dir}"],
     ("--probe-tokens",), None),
    ("train-vocab-no-traces", ["train", "vocab", "--target", T, "--out", "{new}"], ("traces.jsonl",), "{new}"),
    ("train-vocab-size-0", ["train", "vocab", "--target", T, "--draft-vocab", "0", "--out", "{new}"],
     ("--draft-vocab",), "{new}"),
    ("train-hidden-no-vocab", ["train", "hidden", "--target", T, "--out", "{dir}"], ("vocab.json",), None),
    ("train-draft-bad-signals", ["train", "draft", "--target", T, "--signals", "speed", "--out", "{new}"],
     ("--signals", "speed"), "{new}"),
    ("train-draft-freeze-without-init", ["train", "draft", "--target", T, "--freeze-token-head", "--out", "{new}"],
     ("--freeze-token-head",), "{new}"),
    ("train-draft-init-not-json", ["train", "draft", "--target", T, "--init", "{d_json}", "--out", "{new}"],
     ("d_json/config.json",), "{new}"),
    ("train-draft-init-truncated", ["train", "draft", "--target", T, "--init", "{d_trunc}", "--out", "{new}"],
     ("d_trunc/model.safetensors",), "{new}"),
    ("train-draft-offline-no-hidden", ["train", "draft", "--target", T, "--features", "offline", "--out", "{dir}"],
     ("hidden",), None),
    ("train-draft-max-steps-0", ["train", "draft", "--target", T, "--max-steps", "0", "--out", "{new}"],
     ("--max-steps",), "{new}"),
    ("train-all-no-thinking", ["train", "all", "--target", T, "--prompts", "{prompts}", "--no-thinking",
                               "--out", "{new}"], ("--no-thinking",), "{new}"),
    ("train-all-prompts-empty", ["train", "all", "--target", T, "--prompts", "{empty}", "--out", "{new}"],
     ("empty.jsonl", "empty"), "{new}"),
    ("train-all-out-is-file", ["train", "all", "--target", T, "--prompts", "{prompts}", "--out", "{file}"],
     ("--out", "a_file"), None),
    ("train-all-bad-signals", ["train", "all", "--target", T, "--prompts", "{prompts}", "--signals", "a,b",
                               "--out", "{new}"], ("--signals",), "{new}"),
    ("train-all-target-truncated", ["train", "all", "--target", "{t_trunc}", "--prompts", "{prompts}",
                                    "--out", "{new}"], ("t_trunc/model.safetensors",), "{new}"),
    ("train-all-val-fraction", ["train", "all", "--target", T, "--prompts", "{prompts}", "--val-fraction", "1.5",
                                "--out", "{new}"], ("--val-fraction",), "{new}"),
    ("train-missing-stage", ["train", "--target", T], ("traces",), None),
    # serve: all fail before a server would start
    ("serve-bad-tree", ["serve", "--target", T, "--tree", "60,6"], ("--tree",), None),
    ("serve-max-queue-0", ["serve", "--target", T, "--max-queue", "0"], ("--max-queue",), None),
    ("serve-bad-port", ["serve", "--target", T, "--port", "70000"], ("--port",), None),
    ("serve-target-truncated", ["serve", "--target", "{t_trunc}"], ("t_trunc/model.safetensors",), None),
    ("serve-target-no-tokenizer", ["serve", "--target", "{t_notok}"], ("t_notok", "tokenizer"), None),
    ("serve-draft-garbled", ["serve", "--target", T, "--draft", "{d_garb}"], ("d_garb/model.safetensors",), None),
    ("serve-draft-config-not-json", ["serve", "--target", T, "--draft", "{d_json}"], ("d_json/config.json",), None),
    ("serve-spec-without-draft", ["serve", "--target", T, "--mode", "spec"], ("--mode spec", "--draft"), None),
    ("serve-specexit-plain-draft", ["serve", "--target", T, "--draft", "{plain}", "--mode", "specexit"],
     ("--mode specexit",), None),
    ("serve-bad-log-level", ["serve", "--target", T, "--log-level", "loud"], ("--log-level",), None),
    # reasoner
    # calibrate
    ("calibrate-risk-0", ["calibrate", "--target", T, "--draft", "{draft}", "--data", "{prompts}", "--risk", "0",
                          "--out", "{new}"], ("--risk",), "{new}"),
    ("calibrate-delta-1", ["calibrate", "--target", T, "--draft", "{draft}", "--data", "{prompts}", "--risk", "0.01",
                           "--delta", "1", "--out", "{new}"], ("--delta",), "{new}"),
    ("calibrate-data-missing", ["calibrate", "--target", T, "--draft", "{draft}", "--data", "{tmp}/nodata",
                                "--risk", "0.01", "--out", "{new}"], ("nodata",), "{new}"),
    ("calibrate-data-folder-without-labels", ["calibrate", "--target", T, "--draft", "{draft}", "--data", "{dir}",
                                              "--risk", "0.01", "--out", "{new}"], ("a_dir", "labels.jsonl"), "{new}"),
    ("calibrate-folder-sampling-unknown", ["calibrate", "--target", T, "--draft", "{draft}", "--data", "{pipe}",
                                           "--risk", "0.01", "--out", "{new}"], ("pipe", "--temperature"), "{new}"),
    ("calibrate-draft-missing", ["calibrate", "--target", T, "--draft", "{tmp}/nodraft", "--data", "{prompts}",
                                 "--risk", "0.01", "--out", "{new}"], ("nodraft",), "{new}"),
    ("calibrate-draft-truncated", ["calibrate", "--target", T, "--draft", "{d_trunc}", "--data", "{prompts}",
                                   "--risk", "0.01", "--out", "{new}"], ("d_trunc/model.safetensors",), "{new}"),
    ("calibrate-agree-not-a-count", ["calibrate", "--target", T, "--draft", "{draft}", "--data", "{prompts}",
                                     "--risk", "0.01", "--agree", "0,two", "--out", "{new}"], ("--agree",), "{new}"),
    ("calibrate-probe-tokens-0", ["calibrate", "--target", T, "--draft", "{draft}", "--data", "{prompts}",
                                  "--risk", "0.01", "--probe-tokens", "0", "--out", "{new}"], ("--probe-tokens",),
     "{new}"),
    ("calibrate-out-is-file", ["calibrate", "--target", T, "--draft", "{draft}", "--data", "{prompts}",
                               "--risk", "0.01", "--out", "{file}"], ("a_file",), None),
    ("gen-thinking-budget-0", [*GEN, "--target", T, "--draft", "{draft}", "--thinking-budget", "0"],
     ("--thinking-budget",), None),
    ("gen-broken-calibrated-policy", [*GEN, "--target", T, "--draft", "{d_policy}"],
     ("d_policy/exit_policy.json",), None),
    ("bench-calibrated-without-policy", [*BENCH, "--target", T, "--draft", "{draft}", "--dataset", "{prompts}",
                                         "--methods", "calibrated", "--out", "{new}"], ("exit_policy.json",), "{new}"),
    ("bench-boundary-budget-0", [*BENCH, "--target", T, "--draft", "{draft}", "--dataset", "{prompts}",
                                 "--methods", "boundary-budget:0", "--out", "{new}"], ("budget",), "{new}"),
    ("reasoner-problems-negative", ["reasoner", "problems", "--out", "{new}/p.jsonl", "--n-testbed", "-1"],
     ("--n-testbed",), "{new}"),
    ("reasoner-compose-missing-samples", ["reasoner", "compose", "--samples", "{new}/none.jsonl", "--out", "{new}/o"],
     ("none.jsonl",), "{new}"),
    ("reasoner-tune-bad-lr", ["reasoner", "tune", "--base", T, "--examples", "{empty}", "--out", "{new}", "--lr", "5"],
     ("lr",), "{new}"),
    ("reasoner-merge-no-adapter", ["reasoner", "merge", "--base", T, "--adapter", "{new}", "--out", "{new}/m"],
     ("--adapter",), "{new}"),
    # models
    ("models-get-unknown", ["models", "get", "no-such-model"], ("no-such-model",), None),
    ("models-draft-unknown", ["models", "draft", "no-such-model"], ("no-such-model",), None),
    ("models-get-no-name", ["models", "get"], ("name",), None),
    ("models-list-bad-flag", ["models", "list", "--yaml"], ("--yaml",), None),
    ("models-bad-subcommand", ["models", "delete", "x"], ("delete",), None),
    # convert: nothing written on refusal
    ("convert-config-not-json", ["convert", "--eagle3", "{d_json}", "--out", "{new}"], ("d_json/config.json",),
     "{new}"),
    ("convert-truncated", ["convert", "--eagle3", "{d_trunc}", "--out", "{new}"], ("d_trunc/model.safetensors",),
     "{new}"),
    ("convert-garbled", ["convert", "--eagle3", "{d_garb}", "--out", "{new}"], ("d_garb/model.safetensors",), "{new}"),
    ("convert-missing", ["convert", "--eagle3", "{tmp}/noeagle", "--out", "{new}"], ("noeagle",), "{new}"),
    ("convert-out-is-file", ["convert", "--eagle3", "{plain}", "--out", "{file}"], ("--out", "a_file"), None),
    ("convert-bad-signals", ["convert", "--eagle3", "{plain}", "--signals", "speed", "--out", "{new}"],
     ("--signals",), "{new}"),
    ("convert-target-truncated", ["convert", "--eagle3", "{plain}", "--target", "{t_trunc}", "--out", "{new}"],
     ("t_trunc/model.safetensors",), "{new}"),
    # init-draft and make-tiny
    ("init-draft-out-is-file", ["init-draft", "--target", T, "--out", "{file}"], ("--out", "a_file"), None),
    ("init-draft-vocab-0", ["init-draft", "--target", T, "--draft-vocab", "0", "--out", "{new}"], ("--draft-vocab",),
     "{new}"),
    ("init-draft-target-garbled", ["init-draft", "--target", "{t_garb}", "--out", "{new}"],
     ("t_garb/model.safetensors",), "{new}"),
    ("make-tiny-layers-0", ["make-tiny", "--layers", "0", "--out", "{new}"], ("--layers",), "{new}"),
    ("make-tiny-out-is-file", ["make-tiny", "--out", "{file}"], ("--out", "a_file"), None),
    # demo
    ("demo-problems-0", ["demo", "--problems", "0"], ("--problems",), None),
    ("demo-bad-tree", ["demo", "--tree", "16,5"], ("--tree",), None),
    ("demo-max-new-tokens-0", ["demo", "--max-new-tokens", "0"], ("--max-new-tokens",), None),
    ("demo-save-is-dir", ["demo", "--problems", "1", "--save", "{dir}"], ("--save", "a_dir"), None),
    ("demo-save-no-parent", ["demo", "--problems", "1", "--save", "{tmp}/no/such/res.json"], ("--save",), None),
    ("demo-target-truncated", ["demo", "--problems", "1", "--target", "{t_trunc}"], ("t_trunc/model.safetensors",),
     None),
    ("demo-draft-config-not-json", ["demo", "--problems", "1", "--draft", "{d_json}"], ("d_json/config.json",), None),
    ("demo-bad-exit-knob", ["demo", "--problems", "1", "--exit", "speed=1"], ("--exit",), None),
]
# fmt: on


def _fill(text: str, art: dict[str, str], new: str) -> str:
    return text.format(new=new, **art)


def _one_line(err: str) -> str:
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    return lines[0]


@pytest.fixture
def no_server(monkeypatch):
    """A serve row that got as far as starting a server fails the test instead of serving."""
    import uvicorn

    def refuse(*_a, **_k):
        raise AssertionError("the server was about to start: the arguments were not refused")

    monkeypatch.setattr(uvicorn, "run", refuse)


def test_the_table_covers_every_subcommand():
    per = {}
    for _, argv, _, _ in ROWS:
        cmd = next(a for a in argv if not a.startswith("-") and not a.isdigit())
        per[cmd] = per.get(cmd, 0) + 1
    assert len(ROWS) >= 30
    assert {"generate", "bench", "train", "serve", "models", "convert", "demo"} <= set(per), per
    stages = {argv[1] for _, argv, _, _ in ROWS if argv[0] == "train"}
    assert {"traces", "labels", "vocab", "draft", "all"} <= stages
    assert len({name for name, *_ in ROWS}) == len(ROWS)


@pytest.mark.parametrize(("argv", "needles", "absent"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_a_bad_invocation_exits_2_with_one_line(argv, needles, absent, art, tmp_path, capsys, no_server):
    new = str(tmp_path / "new")
    argv = [_fill(a, art, new) for a in argv]
    before = sorted(p.name for p in Path(art["tmp"]).iterdir())
    try:
        rc = cli_main(argv)
    except SystemExit as e:  # argparse's own errors
        rc = e.code
    err = capsys.readouterr().err
    assert rc == 2, err
    line = _one_line(err)
    assert line.startswith("specexit"), line
    for needle in needles:
        assert _fill(needle, art, new) in line, line
    if absent is not None:
        assert not Path(_fill(absent, art, new)).exists(), f"{absent} was created by a refused run"
    assert sorted(p.name for p in Path(art["tmp"]).iterdir()) == before  # nothing written beside the artefacts
    assert Path(art["file"]).read_text() == "not a folder\n" and not any(Path(art["dir"]).iterdir())


def test_seeds_and_tree_have_separate_messages(art, tmp_path, capsys):
    base = [*BENCH, "--target", art["tiny"], "--dataset", "testbed:2", "--methods", "vanilla"]
    lines = {}
    for flag, value in [("--seeds", "0,x"), ("--tree", "0,x")]:
        assert cli_main([*base, flag, value, "--out", str(tmp_path / flag)]) == 2
        lines[flag] = _one_line(capsys.readouterr().err)
        assert flag in lines[flag] and not (tmp_path / flag).exists()
    assert "--tree" not in lines["--seeds"] and "--seeds" not in lines["--tree"]


# a few rows as a real process: what a user's terminal shows
SUBPROCESS_ROWS = ["gen-target-truncated", "gen-draft-config-not-json", "bench-dataset-testbed-abc",
                   "train-traces-out-is-file", "convert-garbled", "models-get-unknown", "gen-bad-mode"]  # fmt: skip


@pytest.mark.parametrize("name", SUBPROCESS_ROWS)
def test_a_bad_invocation_in_a_subprocess(name, art, tmp_path):
    (_, argv, needles, absent) = next(r for r in ROWS if r[0] == name)
    new = str(tmp_path / "new")
    argv = [_fill(a, art, new) for a in argv]
    proc = subprocess.run([sys.executable, "-m", "specexit", *argv], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2, proc.stderr
    line = _one_line(proc.stderr)
    for needle in needles:
        assert _fill(needle, art, new) in line, line
    if absent is not None:
        assert not Path(_fill(absent, art, new)).exists()


def test_the_loaders_name_the_bad_file(art):
    """The library paths the CLI relies on: each refusal is a SpecExitError naming the file."""
    from specexit.draft import Eagle3Draft, check_draft_dir
    from specexit.errors import CheckpointError, TokenizerError
    from specexit.target import TargetModel, check_target_dir, load_tokenizer

    for name in ("t_trunc", "t_garb"):
        with pytest.raises(CheckpointError, match=rf"{name}/model.safetensors: not a readable safetensors file"):
            TargetModel.from_pretrained(art[name])
        with pytest.raises(CheckpointError, match=rf"{name}/model.safetensors"):
            check_target_dir(art[name])
    target = TargetModel.from_pretrained(art["tiny"])
    for name in ("d_trunc", "d_garb"):
        with pytest.raises(CheckpointError, match=rf"{name}/model.safetensors: not a readable safetensors file"):
            Eagle3Draft.from_pretrained(art[name], target=target)
        with pytest.raises(CheckpointError, match=rf"{name}/model.safetensors"):
            check_draft_dir(art[name])
    with pytest.raises(CheckpointError, match=r"d_json/config.json is not valid JSON"):
        Eagle3Draft.from_pretrained(art["d_json"], target=target)
    with pytest.raises(TokenizerError, match=r"t_notok has no tokenizer files"):
        load_tokenizer(art["t_notok"])
    with pytest.raises(TokenizerError, match=r"t_notok has no tokenizer files"):
        check_target_dir(art["t_notok"])
    assert load_tokenizer(art["tiny"]).encode("hello", add_special_tokens=False)
    check_target_dir(art["tiny"])
    assert check_draft_dir(art["draft"]).signals == ["confidence", "progress", "remain"]
