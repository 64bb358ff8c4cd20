"""``specexit demo``: the shipped testbed reasoning model and its trained SpecExit draft on held-out
problems, in three modes side by side (plain decoding, EAGLE-3 speculative decoding, SpecExit).

The testbed is a small Qwen3-architecture model trained here to reason and to overthink (it re-checks
answers it already has); see docs/testbed.md.  It is a testbed, not a real reasoning model: it shows
the mechanism and its measured effect, on CPU, in a couple of minutes.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import replace
from importlib import resources
from pathlib import Path

from .cli_options import add_tree_arg, check_at_least, check_out_file, parse_tree
from .errors import ConfigError
from .results import MODES

ASSET_TARGET = "testbed"
ASSET_DRAFT = "testbed-draft"
# The exit rule for the testbed, tuned on held-out problems of another data seed (docs/testbed.md): the
# signals of the state right after each boundary, unsmoothed; confidence > 0.5 and progress > 0.2 (the
# progress gate keeps exits out of the first pass of a long greedy re-check loop).  The paper's defaults
# (confidence > 0.8 on an EWMA of round means, plus progress and remain) never fire on this small model.
DEMO_TREE = "16,5,4"  # total, depth, branching: sized for a 2-core CPU
TESTBED_EXIT = "readout=boundary,smoothing=none,remain=off,confidence=0.5,progress=0.2"


def asset_dir(name: str) -> Path:
    path = Path(str(resources.files("specexit") / "assets" / name))
    if not (path / "config.json").is_file():
        raise ConfigError(
            f"the shipped asset {name!r} is missing from {path}; reinstall the package (pip install -e .) "
            "or pass --target/--draft"
        )
    return path


def run_demo(
    target: str | Path | None = None,
    draft: str | Path | None = None,
    problems: int = 10,
    seed: int = 0,
    max_new_tokens: int = 768,
    tree: str = DEMO_TREE,
    progress: bool = True,
    exit_knobs: str | None = None,
) -> dict:
    """``exit_knobs``: specexit knobs as in ``bench``; None: the draft's calibrated rule
    (``exit_policy.json``, docs/calibration.md), or ``TESTBED_EXIT`` for a draft without one."""
    from .bench.datasets import load_dataset
    from .bench.methods import parse_method
    from .bench.report import summarize
    from .bench.runner import BenchConfig, run_batch
    from .engine import SpecExitGenerator
    from .machine import LoadMeter, machine_info, model_record, versions

    if problems <= 0:
        raise ConfigError(f"--problems must be positive, got {problems}")
    target = Path(target) if target else asset_dir(ASSET_TARGET)
    draft = Path(draft) if draft else asset_dir(ASSET_DRAFT)
    t0 = time.perf_counter()
    meter = LoadMeter()
    gen = SpecExitGenerator.from_pretrained(target, draft)
    data = load_dataset(f"testbed:{problems}:{seed}")
    cfg = BenchConfig(max_new_tokens=max_new_tokens, tree=parse_tree(tree))
    methods = [parse_method(m) for m in ("vanilla", "spec")]
    from .policy_file import load_policy

    if exit_knobs is None and load_policy(draft) is not None:
        specexit = parse_method("calibrated", draft=str(draft))
    else:
        specexit = parse_method(f"specexit[{exit_knobs or TESTBED_EXIT}]")
    methods.append(replace(specexit, label="specexit"))
    results, outputs = [], {}
    forwards: dict[str, int] = {}  # target forwards per method (prompt forward included)
    generated: dict[str, int] = {}  # generated tokens per method
    for i, p in enumerate(data):
        for m in methods:
            before = gen.target.forward_calls
            (rec,) = run_batch(gen, [(i, p, m, 0)], cfg)
            forwards[m.label] = forwards.get(m.label, 0) + gen.target.forward_calls - before
            generated[m.label] = generated.get(m.label, 0) + rec["total_tokens"]
            results.append(rec)
            outputs[(p.id, m.label)] = rec
            if progress:
                print(f"\r[{i + 1}/{len(data)}] {m.label:9s} {rec['total_tokens']:4d} tokens", end="", file=sys.stderr)
    if progress:
        print(file=sys.stderr)
    rows = summarize(results, list(MODES))
    out = {
        "methods": {
            m: {
                "accuracy": r["accuracy"],
                "accuracy_ci95": r["accuracy_ci95"],
                "thinking_tokens": r["thinking_tokens"],
                "total_tokens": r["total_tokens"],
                # plain decoding has no rounds: its tokens per target forward, counted
                "mean_accept_length": (
                    round(generated[m] / max(1, forwards[m]), 4) if m == "vanilla" else r["mean_accept_length"]
                ),
                "latency_s": r["latency_s"],
                # counted, not timed: the cost of decoding on any machine (vanilla: one per token)
                "target_forwards_per_token": round(forwards[m] / max(1, generated[m]), 4),
                "exit_rate": r["exit_rate"],
                "latency_speedup_vs_vanilla": r.get("latency_speedup_vs_vanilla"),
                "latency_speedup_vs_spec": r.get("latency_speedup_vs_spec"),
                "thinking_cut_vs_spec": r.get("thinking_cut_vs_spec"),
                # paired bootstrap over problems: [difference, 95% CI low, high], as fractions
                "accuracy_diff_vs_spec": r.get("accuracy_diff_vs_spec"),
            }
            for m, r in rows.items()
        },
        "problems": len(data),
        "checks": {
            # greedy speculative decoding is lossless: every answer equal to plain decoding's
            "spec_equals_vanilla": all(
                outputs[(p.id, "spec")]["output_digest"] == outputs[(p.id, "vanilla")]["output_digest"] for p in data
            ),
            "specexit_tokens_le_spec": all(
                outputs[(p.id, "specexit")]["thinking_tokens"] <= outputs[(p.id, "spec")]["thinking_tokens"]
                for p in data
            ),
        },
        "target": str(target),
        "draft": str(draft),
        "tree": tree,
        "specexit_knobs": exit_knobs,
        # the rule the specexit row ran: thresholds and where they came from (calibrated policy or knobs)
        "specexit_rule": {
            "thresholds": specexit.exit_config.thresholds,
            "readout": specexit.exit_config.readout,
            "smoothing": specexit.exit_config.smoothing,
            "origin": specexit.exit_config.origin or {"source": "knobs"},
        },
        "wall_s": round(time.perf_counter() - t0, 2),
        # what the latencies ran on, and which weights (as in a bench's run.json)
        "machine": {**machine_info(), "load": meter.result()},
        "versions": versions(),
        "models": {"target": model_record(target, "float32"), "draft": model_record(draft, "float32")},
    }
    return out


def format_table(res: dict) -> str:
    m = res["methods"]
    lines = [
        f"SpecExit demo: testbed reasoning model, {res['problems']} held-out problems, greedy, CPU",
        "",
        f"{'method':10s} {'accuracy':>9s} {'thinking':>9s} {'total':>7s} {'accept':>7s} {'sec/prob':>9s} "
        f"{'vs vanilla':>11s} {'vs spec':>8s}",
    ]
    for name, r in m.items():
        acc = r["mean_accept_length"]
        lines.append(
            f"{name:10s} {100 * r['accuracy']:8.1f}% {r['thinking_tokens']:9.1f} {r['total_tokens']:7.1f} "
            f"{(f'{acc:.2f}' if acc else '-'):>7s} {r['latency_s']:9.3f} "
            f"{r['latency_speedup_vs_vanilla']:10.2f}x {r['latency_speedup_vs_spec']:7.2f}x"
        )
    c = res["checks"]
    d = m.get("specexit", {}).get("accuracy_diff_vs_spec")
    if d:
        lines += [
            "",
            f"specexit accuracy vs spec: {100 * d[0]:+.1f} points (paired 95% CI {100 * d[1]:+.1f}, {100 * d[2]:+.1f})",
        ]
    lines += [
        "",
        f"spec output == vanilla output: {c['spec_equals_vanilla']};  "
        f"specexit thinking <= spec thinking: {c['specexit_tokens_le_spec']};  wall {res['wall_s']}s",
    ]
    return "\n".join(lines)


def register(sub) -> None:
    d = sub.add_parser("demo", help="the shipped testbed model + draft: vanilla vs spec vs specexit, side by side")
    d.add_argument("--problems", type=int, default=10, help="held-out problems (default 10)")
    d.add_argument("--seed", type=int, default=0, help="which held-out problems")
    d.add_argument("--max-new-tokens", type=int, default=768)
    d.add_argument("--target", default=None, help="another target folder (default: the shipped testbed)")
    d.add_argument("--draft", default=None, help="another draft folder (default: the shipped testbed draft)")
    add_tree_arg(d, default=DEMO_TREE)  # CPU-sized default
    d.add_argument("--exit", default=None, help="specexit knobs, as in `specexit bench` (default: the shipped "
                   "draft's calibrated rule, docs/calibration.md)")  # fmt: skip
    d.add_argument("--json", action="store_true", help="print one JSON object")
    d.add_argument("--save", default=None, help="also write the JSON result to this file")


def run(a) -> int:
    from .bench.methods import parse_method

    # every argument fails before any model loads
    parse_tree(a.tree)
    check_at_least(a, 1, "problems", "max_new_tokens")
    if a.exit is not None:
        try:
            parse_method(f"specexit[{a.exit}]")
        except ConfigError as e:
            raise ConfigError(f"--exit {a.exit!r}: {e}") from None
    if a.save:
        check_out_file(a.save, "--save")
    if a.target:
        from .target import check_target_dir

        check_target_dir(a.target)
    if a.draft:
        from .draft import check_draft_dir

        check_draft_dir(a.draft)
    res = run_demo(
        a.target, a.draft, a.problems, a.seed, a.max_new_tokens, a.tree, progress=not a.json, exit_knobs=a.exit
    )
    if a.save:
        Path(a.save).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2) if a.json else format_table(res))
    return 0
