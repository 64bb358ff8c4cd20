"""What forcing the answer trigger mid-reasoning gives on a model's own outputs (no draft involved).

Reads a training-pipeline folder whose traces and labels were made with ``--answer-trigger`` on a
benchmark set with gold answers (``specexit train traces`` then ``labels``): each label holds, for
every paragraph boundary of the reasoning span, whether the answer forced there (trigger, then the
model's greedy continuation) is correct.  Reports

- the model's own accuracy and reasoning / total lengths;
- the trigger at the last boundary (does forcing the answer itself cost accuracy?);
- blind cuts at the first boundary after a fixed fraction of the span (what an exit rule that knows
  nothing gives);
- oracle exits: the earliest boundary whose forced answer is right (an upper bound on savings for
  any exit rule), and the earliest from which every later forced answer is right;

as JSON and Markdown, and a plot of forced-answer accuracy against the position in the span.

    python benchmarks/zoo/trigger_oracle.py runs/zoo/gsm8k-pipeline --out benchmarks/results/qwen05-trigger
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from specexit.bench.report import wilson
from specexit.jsonl import iter_jsonl
from specexit.scoring import answers_equal

FRACTIONS = (0.25, 0.5, 0.75)


def load(pipeline: Path) -> list[dict]:
    labels = {(o["prompt_id"], o.get("sample", 0)): o for _, o in iter_jsonl(pipeline / "labels.jsonl")}
    rows = []
    for _, tr in iter_jsonl(pipeline / "traces.jsonl"):
        gold = tr.get("gold")
        natural = gold is not None and answers_equal(tr.get("final_answer"), gold)
        total = len(tr["output_ids"])
        lab = labels.get((tr["prompt_id"], tr.get("sample", 0)))
        span = lab["span"][1] - lab["span"][0] if lab else None
        rows.append(
            {
                "natural": natural,
                "total": total,
                "span": span,
                "cuts": lab["cuts"] if lab else [],
                "correct": lab["probe_correct"] if lab else [],
            }
        )
    return rows


def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else float("nan")


def _policy(rows: list[dict], choose) -> dict:
    """Accuracy and tokens when each trace exits at ``choose(row)`` (a cut index, or None = no exit).
    An exit keeps ``cut`` reasoning tokens; the answer after the trigger is short, so its length is not
    counted: token numbers are reasoning tokens."""
    ok, kept, exits = 0, [], 0
    for r in rows:
        k = choose(r) if r["span"] else None
        if k is None:
            ok += r["natural"]
            kept.append(r["span"] if r["span"] else r["total"])
        else:
            exits += 1
            ok += r["correct"][k]
            kept.append(r["cuts"][k])
    n = len(rows)
    lo, hi = wilson(ok, n)
    return {"accuracy": ok / n, "ci95": [lo, hi], "reasoning_tokens": _mean(kept), "exit_rate": exits / n}


def analyse(rows: list[dict]) -> dict:
    spans = [r for r in rows if r["span"]]
    out = {
        "problems": len(rows),
        "with_span": len(spans),
        "with_boundary": sum(1 for r in spans if r["cuts"]),
        "mean_total_tokens": _mean(r["total"] for r in rows),
        "mean_span_tokens": _mean(r["span"] for r in spans),
        "mean_boundaries": _mean(len(r["cuts"]) for r in spans),
    }
    pol = {"natural (no exit)": _policy(rows, lambda r: None)}
    pol["trigger at the last boundary"] = _policy(rows, lambda r: len(r["cuts"]) - 1 if r["cuts"] else None)
    for f in FRACTIONS:
        pol[f"blind cut after {int(f * 100)}% of the span"] = _policy(
            rows, lambda r, f=f: next((i for i, c in enumerate(r["cuts"]) if c >= f * r["span"]), None)
        )
    pol["oracle: earliest right forced answer"] = _policy(
        rows, lambda r: next((i for i, ok in enumerate(r["correct"]) if ok), None)
    )

    def stable(r):
        if not r["natural"]:
            return None
        i = len(r["correct"])
        while i > 0 and r["correct"][i - 1]:
            i -= 1
        return i if i < len(r["correct"]) else None

    pol["oracle: earliest from which every forced answer is right"] = _policy(rows, stable)
    out["policies"] = pol
    # forced-answer accuracy by position in the span (10 bins)
    bins = [[0, 0] for _ in range(10)]
    for r in spans:
        for c, ok in zip(r["cuts"], r["correct"], strict=True):
            b = min(int(10 * c / r["span"]), 9)
            bins[b][0] += ok
            bins[b][1] += 1
    out["forced_accuracy_by_position"] = [
        {"from": i / 10, "to": (i + 1) / 10, "probes": n, "accuracy": ok / n if n else None}
        for i, (ok, n) in enumerate(bins)
    ]
    return out


def to_markdown(res: dict) -> str:
    lines = [
        f"{res['problems']} problems; {res['with_span']} outputs end in an answer marker "
        f"({res['with_boundary']} with a paragraph boundary in their reasoning); mean output "
        f"{res['mean_total_tokens']:.0f} tokens, reasoning span {res['mean_span_tokens']:.0f} tokens, "
        f"{res['mean_boundaries']:.1f} boundaries per span.",
        "",
        "| exit rule | accuracy (95% CI) | reasoning tokens | exits |",
        "|---|---|---|---|",
    ]
    for name, p in res["policies"].items():
        lo, hi = p["ci95"]
        lines.append(
            f"| {name} | {100 * p['accuracy']:.0f}% ({100 * lo:.0f}–{100 * hi:.0f}) | "
            f"{p['reasoning_tokens']:.0f} | {100 * p['exit_rate']:.0f}% |"
        )
    lines += ["", "| position in the span | probes | forced answer right |", "|---|---|---|"]
    for b in res["forced_accuracy_by_position"]:
        acc = f"{100 * b['accuracy']:.0f}%" if b["accuracy"] is not None else "–"
        lines.append(f"| {b['from']:.1f}–{b['to']:.1f} | {b['probes']} | {acc} |")
    return "\n".join(lines) + "\n"


def plot(res: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bins = [b for b in res["forced_accuracy_by_position"] if b["accuracy"] is not None]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.bar([b["from"] + 0.05 for b in bins], [b["accuracy"] for b in bins], width=0.09, label="answer forced here")
    ax.axhline(res["policies"]["natural (no exit)"]["accuracy"], color="k", ls="--", label="no exit")
    ax.set_xlabel("position of the boundary in the reasoning span")
    ax.set_ylabel("accuracy")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.legend(loc="upper left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("pipeline", help="folder with traces.jsonl and labels.jsonl")
    ap.add_argument("--out", required=True)
    a = ap.parse_args()
    res = analyse(load(Path(a.pipeline)))
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "trigger_oracle.json").write_text(json.dumps(res, indent=2))
    md = to_markdown(res)
    (out / "trigger_oracle.md").write_text(md)
    plot(res, out / "trigger_oracle.png")
    print(md)


if __name__ == "__main__":
    main()
