"""Table of benchmarks/vllm_compare.sh: vLLM plain / EAGLE-3 / SpecExit at batch 1, 4, 16 and the PyTorch
engine, from the ``specexit bench`` results of each run.

    python benchmarks/summarize_vllm_compare.py benchmarks/results/vllm-testbed

Per run and method: accuracy, mean thinking / total tokens, mean latency per question (each request's
own end-to-end time; inside a batch it includes waiting for the batch's other requests' steps),
throughput (generated tokens and questions per second of generation wall time: the sum of the batch
walls), mean acceptance length and exit rate; plus output agreement: greedy spec vs vanilla (lossless)
and each vLLM run vs the PyTorch engine, per method.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

RUNS = [("vllm-b1", "vLLM", 1), ("vllm-b4", "vLLM", 4), ("vllm-b16", "vLLM", 16), ("torch", "PyTorch engine", 1)]
NAMES = {"vanilla": "plain", "spec": "EAGLE-3"}


def load(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()]


def summarize(recs: list[dict]) -> dict:
    n = len(recs)
    # generation wall time: per batch, its slowest request (queued to last token: vLLM's request
    # metrics; engine start-up excluded); the torch engine runs one question per "batch"
    batches: dict[tuple, float] = {}
    for k, r in enumerate(recs):
        key = (r.get("batch_wall_s"), k // r.get("batch_size", 1)) if r.get("batch_size", 1) > 1 else (k,)
        batches[key] = max(batches.get(key, 0.0), r["latency_s"])
    wall = sum(batches.values())
    acc = [r["mean_accept_length"] for r in recs if r["mean_accept_length"]]
    return {
        "n": n,
        "accuracy": sum(r["correct"] for r in recs) / n,
        "thinking_tokens": sum(r["thinking_tokens"] for r in recs) / n,
        "total_tokens": sum(r["total_tokens"] for r in recs) / n,
        "latency_s": sum(r["latency_s"] for r in recs) / n,
        "wall_s": wall,
        "tokens_per_s": sum(r["total_tokens"] for r in recs) / wall,
        "questions_per_s": n / wall,
        "accept_length": sum(acc) / len(acc) if acc else None,
        "exit_rate": sum(bool(r["exited_early"]) for r in recs) / n,
    }


def main(out: str) -> int:
    root = Path(out)
    data = {}
    for folder, _, _ in RUNS:
        f = root / folder / "results.jsonl"
        if f.is_file():
            data[folder] = load(f)
    if not data:
        raise SystemExit(f"no results under {root}")
    rows, summary = [], {}
    torch_digest = {(r["problem_id"], r["method"]): r["output_digest"] for r in data.get("torch", [])}
    for folder, backend, batch in RUNS:
        if folder not in data:
            continue
        by_method: dict[str, list[dict]] = {}
        for r in data[folder]:
            by_method.setdefault(r["method"], []).append(r)
        digest = {(r["problem_id"], r["method"]): r["output_digest"] for r in data[folder]}
        for method, recs in by_method.items():
            s = summarize(recs)
            kind = method.split("[")[0]
            if kind in ("vanilla", "spec", "specexit"):
                same_vanilla = sum(digest.get((r["problem_id"], "vanilla")) == r["output_digest"] for r in recs)
                s["same_as_vanilla"] = same_vanilla
            if torch_digest and folder != "torch":
                s["same_as_torch"] = sum(
                    torch_digest.get((r["problem_id"], method)) == r["output_digest"] for r in recs
                )
            summary[f"{folder}/{method}"] = s
            name = "SpecExit" if kind == "specexit" else NAMES.get(kind, kind)
            agree = f"{s.get('same_as_torch', '–')}/{s['n']}" if folder != "torch" else "–"
            al = f"{s['accept_length']:.2f}" if s["accept_length"] else "–"
            cells = [
                f"{backend} {name}", str(batch), f"{100 * s['accuracy']:.1f}%", f"{s['thinking_tokens']:.0f}",
                f"{s['total_tokens']:.0f}", f"{s['latency_s']:.3f}", f"{s['tokens_per_s']:.0f}",
                f"{s['questions_per_s']:.2f}", al, f"{100 * s['exit_rate']:.0f}%", agree,
            ]  # fmt: skip
            rows.append("| " + " | ".join(cells) + " |")
    head = (
        "| system | batch | accuracy | thinking tok | total tok | latency s/question | tokens/s | questions/s | "
        "accept len | exit rate | same output as PyTorch engine |\n|---|---|---|---|---|---|---|---|---|---|---|"
    )
    md = head + "\n" + "\n".join(rows) + "\n"
    (root / "summary.md").write_text(md)
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/vllm-testbed"))
