"""What the thinking model is: accuracy with thinking vs `nothink`, how it overthinks, the matched-accuracy
oracle (docs/reasoner.md "Evaluation").

    M=$(specexit models get qwen2.5-coder-0.5b-think)
    specexit train traces --target $M --prompts P.jsonl --out THINK --temperature 0.6 --backend vllm ...
    specexit train traces --target $M --prompts P.jsonl --out NOTHINK --temperature 0.6 --backend vllm --no-thinking ...
    specexit train labels --target $M --out THINK --label-reference gold     # optional: oracle, first-right
    python benchmarks/reasoner/evaluate.py --dataset heldout THINK NOTHINK [--dataset ...] --json OUT.json --plots DIR

Per dataset, on the same problems (one sample each, paired by prompt):
- accuracy (Wilson 95% CI) with thinking and without, and think - nothink with a paired bootstrap CI;
- the share of outputs whose span closed, thinking-length and re-check-count distributions (re-checks are
  lines that open like ``compose.RECHECK_LINE``) and the share of the thinking written after the first
  re-check (the first pass ends there);
- with labels (forced answers at the thinking's boundaries, gold reference): where the answer first
  becomes right (the earliest boundary whose forced answer is right, as a share of the span) and the
  matched-accuracy oracle at 0 / 1 / 2 points (``specexit.bench.oracle``).
An output that never closes its span counts as wrong (its answer is cut off).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import Counter
from pathlib import Path

# the labelled traces as exit_replay.py reads them (a sibling script: python puts this folder on sys.path)
from exit_replay import labels_file, load, trace_exits

from specexit.bench.oracle import oracle_cut
from specexit.bench.report import paired_bootstrap, wilson
from specexit.reasoner.compose import RECHECK_LINE
from specexit.scoring import answers_equal
from specexit.train.traces import load_traces, trace_key

TOLERANCES = (0.0, 0.01, 0.02)


def _right(t: dict, need_close: bool) -> bool:
    if need_close and t["think_end"] is None:
        return False
    return t.get("finish_reason") == "stop" and answers_equal(t.get("final_answer"), t.get("gold"))


def _thinking_text(t: dict) -> str:
    text = t.get("text", "")
    return text.split("</think>", 1)[0]


def _quantiles(xs: list[float]) -> dict:
    if not xs:
        return {}
    xs = sorted(xs)
    pick = {q: xs[min(len(xs) - 1, int(q * len(xs)))] for q in (0.1, 0.25, 0.5, 0.75, 0.9)}
    return {"mean": statistics.mean(xs), **{f"p{int(q * 100)}": v for q, v in pick.items()}, "max": xs[-1]}


def _acc(right: list[bool]) -> dict:
    k, n = sum(right), len(right)
    lo, hi = wilson(k, n)
    return {"right": k, "n": n, "accuracy": k / n if n else None, "ci95": [lo, hi]}


def _first_right(rows: list[dict]) -> tuple[dict, list[float]]:
    """Where the forced answer first becomes right, as a share of the thinking span (``load``'s rows)."""
    shares, never, settled = [], 0, []
    for r in rows:
        if not r["labelled"]:
            continue
        hit = next((c for c, ok in zip(r["cuts"], r["right"], strict=True) if ok), None)
        if hit is None:
            never += 1
            continue
        shares.append(hit / max(1, r["thinking"]))
        if r["full_right"]:  # settled: every later forced answer is right too
            settled.append(all(ok for c, ok in zip(r["cuts"], r["right"], strict=True) if c > hit))
    return {
        "traces_with_a_right_boundary": len(shares),
        "never_right_at_a_boundary": never,
        "first_right_share_of_span": _quantiles(shares),
        "first_right_then_always_right": sum(settled) / len(settled) if settled else None,
    }, shares


def dataset_report(name: str, think_dir: Path, nothink_dir: Path, sources: dict[str, str]) -> tuple:
    think = [t for _, t in load_traces(think_dir / "traces.jsonl")]
    nothink = [t for _, t in load_traces(nothink_dir / "traces.jsonl")]
    t_right = {trace_key(t): _right(t, True) for t in think}
    n_right = {trace_key(t): _right(t, False) for t in nothink}
    shared = sorted(set(t_right) & set(n_right))
    diff = paired_bootstrap(t_right, n_right, iters=4000)
    closed = [t for t in think if t["think_end"] is not None]
    lengths = [t["think_end"] - t["think_start"] for t in closed]
    texts = [_thinking_text(t) for t in closed]
    rechecks = [len(RECHECK_LINE.findall(x)) for x in texts]
    after_first = []
    for x in texts:
        m = RECHECK_LINE.search(x)
        after_first.append((len(x) - m.start()) / len(x) if m else 0.0)
    rep = {
        "dataset": name,
        "think_dir": str(think_dir),
        "nothink_dir": str(nothink_dir),
        "paired_problems": len(shared),
        "think": _acc([t_right[k] for k in shared]),
        "nothink": _acc([n_right[k] for k in shared]),
        "think_minus_nothink": {"mean": diff[0], "ci95": [diff[1], diff[2]]} if diff else None,
        "discordant": {
            "think_only": sum(t_right[k] and not n_right[k] for k in shared),
            "nothink_only": sum(n_right[k] and not t_right[k] for k in shared),
        },
        "closed": len(closed) / len(think),
        "finish": dict(Counter(t.get("finish_reason") for t in think)),
        "thinking_tokens": _quantiles(lengths),
        "nothink_output_tokens": _quantiles([len(t["output_ids"]) for t in nothink]),
        "rechecks": dict(sorted(Counter(rechecks).items())),
        "share_after_first_recheck": _quantiles(after_first),
        "by_source": {},
    }
    shares: list[float] = []
    src = {t["prompt_id"]: sources.get(t["question"]) for t in think}
    for s in sorted({v for v in src.values() if v}):
        keys = [k for k in shared if src.get(k[0]) == s]
        rep["by_source"][s] = {
            "n": len(keys),
            "think": sum(t_right[k] for k in keys) / len(keys),
            "nothink": sum(n_right[k] for k in keys) / len(keys),
        }
    if labels_file(think_dir).exists():
        # a labelling run still going (or stopped) covers the problems up to the last one it labelled
        rows = load(think_dir, None)
        exits = trace_exits(rows)
        rep["labelled"] = sum(r["labelled"] for r in rows)
        rep["oracle_traces"] = len(rows)
        rep["oracle_full_accuracy"] = sum(e.full_right for e in exits) / len(exits)
        rep["first_right"], shares = _first_right(rows)
        rep["oracle"] = {f"{tol * 100:g}pt": oracle_cut(exits, tol) for tol in TOLERANCES}
    return rep, lengths, rechecks, after_first, shares


def plots(reports: list[tuple], folder: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    folder.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, 4, figsize=(20, 4))
    for rep, lengths, rechecks, after, shares in reports:
        name = rep["dataset"]
        axes[0].hist(lengths, bins=30, alpha=0.5, label=name)
        c = Counter(rechecks)
        xs = sorted(c)
        axes[1].bar([x + (0.4 if name != reports[0][0]["dataset"] else 0) for x in xs],
                    [c[x] / len(rechecks) for x in xs], width=0.4, label=name)  # fmt: skip
        axes[2].hist(after, bins=20, alpha=0.5, label=name)
        if shares:
            axes[3].hist(shares, bins=20, alpha=0.5, label=name)
    axes[0].set(title="thinking tokens (closed spans, T = 0.6)", xlabel="tokens", ylabel="outputs")
    axes[1].set(title="re-checks per output", xlabel="re-checks", ylabel="share of outputs")
    axes[2].set(title="share of thinking after the first re-check", xlabel="share", ylabel="outputs")
    axes[3].set(title="where a forced answer is first right", xlabel="share of the span", ylabel="outputs")
    for ax in axes:
        ax.legend()
    fig.tight_layout()
    path = folder / "overthinking.png"
    fig.savefig(path, dpi=110)
    return [str(path)]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dataset", nargs=3, action="append", metavar=("NAME", "THINK_DIR", "NOTHINK_DIR"), required=True)
    ap.add_argument("--prompts", type=Path, nargs="*", default=[], help="prompt files with a 'source' per line")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--plots", type=Path, default=None)
    a = ap.parse_args()
    for name, *dirs in a.dataset:
        for d in dirs:
            if not (Path(d) / "traces.jsonl").is_file():
                print(f"error: --dataset {name}: {d}/traces.jsonl does not exist", file=sys.stderr)
                return 2
    sources = {}
    for f in a.prompts:
        for line in f.read_text().splitlines():
            row = json.loads(line)
            sources[row["question"]] = row.get("source", "")
    reports = [dataset_report(n, Path(t), Path(nt), sources) for n, t, nt in a.dataset]
    out = {"datasets": [r[0] for r in reports]}
    if a.plots:
        out["plots"] = plots(reports, a.plots)
    a.json.parent.mkdir(parents=True, exist_ok=True)
    a.json.write_text(json.dumps(out, indent=2) + "\n")
    for r in out["datasets"]:
        print(json.dumps({k: r[k] for k in ("dataset", "think", "nothink", "think_minus_nothink", "closed")}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
