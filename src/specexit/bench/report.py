"""Summaries and plots from ``results.jsonl``: what users decide on, per method, side by side.

Accuracy comes with a 95% Wilson interval.  Its difference from ``spec`` comes with a paired bootstrap
interval (resampling problems, so that two methods are compared on the same questions).  Ratios are
ratios of means over the same runs: latency speedup = mean latency of the reference / mean latency of
the method, and token cut = 1 - mean thinking tokens of the method / mean thinking tokens of the reference.
"""

from __future__ import annotations

import json
import math
import random
from collections import defaultdict
from pathlib import Path

from ..errors import ConfigError


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 0.0)
    p = k / n
    den = 1 + z * z / n
    mid = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    # the interval contains p: in floats mid + half for k = n can land a hair under 1.0
    return (max(0.0, min(p, mid - half)), min(1.0, max(p, mid + half)))


def paired_bootstrap(a: dict, b: dict, iters: int = 2000, seed: int = 0) -> tuple[float, float, float] | None:
    """Mean of a - b over shared keys, with a 95% interval from resampling the keys."""
    keys = sorted(set(a) & set(b))
    if not keys:
        return None
    diffs = [float(a[k]) - float(b[k]) for k in keys]
    rng = random.Random(seed)
    means = sorted(sum(rng.choice(diffs) for _ in diffs) / len(diffs) for _ in range(iters))
    return sum(diffs) / len(diffs), means[int(0.025 * iters)], means[int(0.975 * iters) - 1]


def load_results(path: str | Path) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


def _mean(xs: list[float]) -> float | None:
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None


def summarize(results: list[dict], methods: list[str] | None = None) -> dict:
    by: dict[str, list[dict]] = defaultdict(list)
    for r in results:
        by[r["method"]].append(r)
    order = methods or list(dict.fromkeys(r["method"] for r in results))
    rows = {}
    for m in order:
        rs = by.get(m, [])
        if not rs:
            continue
        k = sum(r["correct"] for r in rs)
        lo, hi = wilson(k, len(rs))
        rows[m] = {
            "runs": len(rs),
            "accuracy": k / len(rs),
            "accuracy_ci95": [lo, hi],
            "extraction_failures": sum(not r["extracted"] for r in rs),
            "thinking_tokens": _mean([r["thinking_tokens"] for r in rs]),
            "total_tokens": _mean([r["total_tokens"] for r in rs]),
            "latency_s": _mean([r["latency_s"] for r in rs]),
            "mean_accept_length": _mean([r["mean_accept_length"] for r in rs]),
            "exit_rate": sum(r["exited_early"] for r in rs) / len(rs),
            "probe_calls": _mean([r.get("probe_calls", 0) for r in rs]),
        }
    for ref in ("spec", "vanilla"):
        if ref not in rows:
            continue
        ref_correct = {(r["problem_id"], r["seed"]): r["correct"] for r in by[ref]}
        for m, row in rows.items():
            base = rows[ref]
            row[f"latency_speedup_vs_{ref}"] = base["latency_s"] / row["latency_s"] if row["latency_s"] else None
            row[f"thinking_cut_vs_{ref}"] = (
                1 - row["thinking_tokens"] / base["thinking_tokens"] if base["thinking_tokens"] else None
            )
            row[f"total_token_ratio_vs_{ref}"] = (
                row["total_tokens"] / base["total_tokens"] if base["total_tokens"] else None
            )
            mine = {(r["problem_id"], r["seed"]): r["correct"] for r in by[m]}
            boot = paired_bootstrap(mine, ref_correct)
            row[f"accuracy_diff_vs_{ref}"] = list(boot) if boot else None
    return rows


def _fmt(x, pct=False, digits=2) -> str:
    if x is None:
        return "–"
    return f"{100 * x:.1f}%" if pct else f"{x:.{digits}f}"


def to_markdown(rows: dict) -> str:
    head = (
        "| method | runs | accuracy (95% CI) | Δacc vs spec (95% CI) | thinking tok | total tok | latency s | "
        "speedup vs spec | speedup vs vanilla | thinking cut vs spec | accept len | exit rate | extract fail |"
    )
    lines = [head, "|" + "---|" * 13]
    for m, r in rows.items():
        ci = r["accuracy_ci95"]
        d = r.get("accuracy_diff_vs_spec")
        dtxt = f"{100 * d[0]:+.1f} ({100 * d[1]:+.1f}, {100 * d[2]:+.1f})" if d else "–"
        lines.append(
            f"| {m} | {r['runs']} | {_fmt(r['accuracy'], True)} ({_fmt(ci[0], True)}–{_fmt(ci[1], True)}) | {dtxt} | "
            f"{_fmt(r['thinking_tokens'], digits=1)} | {_fmt(r['total_tokens'], digits=1)} | "
            f"{_fmt(r['latency_s'], digits=3)} | {_fmt(r.get('latency_speedup_vs_spec'))}x | "
            f"{_fmt(r.get('latency_speedup_vs_vanilla'))}x | {_fmt(r.get('thinking_cut_vs_spec'), True)} | "
            f"{_fmt(r['mean_accept_length'])} | {_fmt(r['exit_rate'], True)} | {r['extraction_failures']} |"
        )
    return "\n".join(lines) + "\n"


def pareto_front(points: list[tuple[float, float, str]]) -> list[tuple[float, float, str]]:
    """Points (latency, accuracy, label) not dominated by a faster-and-at-least-as-accurate one."""
    front, best = [], -1.0
    for lat, acc, lab in sorted(points, key=lambda p: (p[0], -p[1])):
        if acc > best:
            front.append((lat, acc, lab))
            best = acc
    return front


def plots(results: list[dict], rows: dict, out_dir: str | Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    written = []
    # 1. accuracy vs latency, with the Pareto front
    fig, ax = plt.subplots(figsize=(7, 5))
    pts = []
    xs, ys = [r["latency_s"] for r in rows.values()], [r["accuracy"] for r in rows.values()]
    span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0
    for m, r in rows.items():
        lo, hi = r["accuracy_ci95"]
        ax.errorbar(
            r["latency_s"], r["accuracy"], yerr=[[r["accuracy"] - lo], [hi - r["accuracy"]]], fmt="o", capsize=3
        )
        # methods that land on (nearly) the same point get their labels stacked, not printed over each other
        near = sum(
            abs(x - r["latency_s"]) < 0.04 * span_x and abs(y - r["accuracy"]) < 0.04 * span_y for x, y, _ in pts
        )
        ax.annotate(
            m, (r["latency_s"], r["accuracy"]), textcoords="offset points", xytext=(5, 5 + 10 * near), fontsize=8
        )
        pts.append((r["latency_s"], r["accuracy"], m))
    front = pareto_front(pts)
    ax.plot([p[0] for p in front], [p[1] for p in front], "--", color="grey", label="Pareto front")
    ax.set_xlabel("mean end-to-end latency per question (s)")
    ax.set_ylabel("accuracy")
    ax.set_title("accuracy vs latency (95% CI)")
    ax.legend()
    fig.tight_layout()
    written.append(out / "accuracy_vs_latency.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    # 2. token-length distributions
    fig, ax = plt.subplots(figsize=(7, 4.5))
    by = defaultdict(list)
    for r in results:
        by[r["method"]].append(r["thinking_tokens"])
    top = max((max(v) for v in by.values() if v), default=1)
    bins = [i * max(1, top // 40) for i in range(42)]
    for m in rows:
        ax.hist(by[m], bins=bins, histtype="step", label=m, linewidth=1.3)
    ax.set_xlabel("thinking tokens per question")
    ax.set_ylabel("runs")
    ax.set_title("thinking-length distribution")
    ax.legend(fontsize=8)
    fig.tight_layout()
    written.append(out / "thinking_tokens_hist.png")
    fig.savefig(written[-1], dpi=120)
    plt.close(fig)
    # 3. signal traces of example questions (raw and smoothed, with the exit point)
    traced = [r for r in results if r.get("signal_history")][:3]
    if traced:
        names = sorted({n for r in traced for h in r["signal_history"] for n in h["raw"]})
        fig, axes = plt.subplots(len(traced), len(names), figsize=(4 * len(names), 2.8 * len(traced)), squeeze=False)
        for i, r in enumerate(traced):
            hist = r["signal_history"]
            for j, n in enumerate(names):
                a = axes[i][j]
                t = [h["t"] for h in hist if n in h["raw"]]
                a.plot(t, [h["raw"][n] for h in hist if n in h["raw"]], ".", alpha=0.5, label="raw")
                a.plot(t, [h["smoothed"].get(n) for h in hist if n in h["raw"]], "-", label="smoothed")
                if r.get("exit"):
                    a.axvline(r["exit"]["thinking_tokens"], color="red", linestyle=":", label="exit")
                th = (r.get("exit") or {}).get("thresholds", {}).get(n)
                if th is not None:
                    a.axhline(th, color="grey", linewidth=0.8)
                a.set_title(f"{r['problem_id']} / {r['method']}: {n}", fontsize=8)
                a.set_xlabel("thinking position")
                if n == "remain" and any(h["raw"].get(n, 0) > 0 for h in hist):  # a method may drop remain
                    a.set_yscale("log")
        axes[0][0].legend(fontsize=7)
        fig.tight_layout()
        written.append(out / "signal_traces.png")
        fig.savefig(written[-1], dpi=110)
        plt.close(fig)
    return written


def complete_units(results: list[dict], methods: list[str] | None = None) -> tuple[list[dict], int]:
    """The results of the (question, seed) units that have every method (``methods``, default: every
    method seen), and how many units were left out.  An interrupted run then still compares like with
    like: a method that ran on fewer, shorter questions would otherwise look faster."""
    seen = {r["method"] for r in results}
    wanted = set(methods) & seen if methods else seen  # a method that never ran is just absent
    have: dict[tuple, set] = defaultdict(set)
    for r in results:
        have[(r["problem_id"], r["seed"])].add(r["method"])
    full = {u for u, ms in have.items() if wanted <= ms}
    return [r for r in results if (r["problem_id"], r["seed"]) in full], len(have) - len(full)


def run_header(run: dict) -> str:
    """The lines of summary.md that say what the numbers ran on (from run.json; an older run.json has
    fewer fields and gives fewer lines)."""
    from ..machine import summary_line

    if not run:
        return "No run.json in this folder: the machine and versions are unknown.\n\n"
    lines = [f"Machine: {summary_line(run.get('machine', {}))}"]
    sessions = run.get("sessions") or []
    shared = [s for s in sessions if s.get("shared_machine")]
    if len(sessions) > 1:
        lines.append(f"Sessions: {len(sessions)} (resumes or shards), {len(shared)} of them on a shared machine")
    lines.append(f"Versions: `{json.dumps(run.get('versions', {}))}`")
    models = run.get("models") or {}
    for role in ("target", "draft"):
        m = models.get(role)
        if m:
            digests = ", ".join(f"{name} {h[:12]}" for name, h in (m.get("sha256") or {}).items()) or "no weights file"
            lines.append(f"{role.capitalize()}: `{m.get('path')}` ({m.get('dtype')}; sha256 {digests})")
    ds = run.get("dataset") or {}
    if ds.get("spec") is not None:
        limit = f", --limit {ds['limit']}" if ds.get("limit") is not None else ""
        lines.append(f"Dataset: `{ds['spec']}`{limit} ({ds.get('problems')} problems)")
    return "".join(f"{line}  \n" for line in lines[:-1]) + lines[-1] + "\n\n"


def write_report(out_dir: str | Path, methods: list[str] | None = None, make_plots: bool = True) -> dict:
    out = Path(out_dir)
    from .runner import result_files

    seen: dict[tuple, dict] = {}  # shards of one run may overlap after a rerun: one record per key
    for f in result_files(out):
        for r in load_results(f):
            seen.setdefault((r["problem_id"], r["method"], r["seed"]), r)
    if not seen:
        raise ConfigError(f"{out}: no results*.jsonl with any result to summarise")
    results, partial = complete_units(list(seen.values()), methods)
    rows = summarize(results, methods)
    (out / "summary.json").write_text(json.dumps(rows, indent=2) + "\n")
    md = to_markdown(rows)
    run = json.loads((out / "run.json").read_text()) if (out / "run.json").exists() else {}
    header = "# Benchmark summary\n\n" + run_header(run)
    units = len({(r["problem_id"], r["seed"]) for r in results})
    if partial:
        header += (
            f"Partial run: {units} (question, seed) units have every method and are summarised; {partial} "
            "more have only some methods and are left out, so that every method is measured on the same "
            "questions. Rerun the bench command to resume.\n\n"
        )
    (out / "summary.md").write_text(header + md)
    if make_plots and results:
        plots(results, rows, out)
    return rows
