"""Copy a trained zoo draft into the package (src/specexit/assets/NAME-draft) with a pipeline.json that
says how it was made: the script, the answer trigger, data counts, the training config and the final
validation metrics.  Refuses weights of 25 MB or more (repository rule).

    python benchmarks/zoo/ship_draft.py --run runs/zoo/qwen05-pipeline --name qwen2.5-coder-0.5b
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[2]
LIMIT = 25_000_000


def _lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", required=True, type=Path, help="pipeline folder (has draft/, traces.jsonl, ...)")
    ap.add_argument("--name", required=True, help="zoo model name")
    ap.add_argument("--script", default="benchmarks/zoo/train_qwen05_draft.sh")
    ap.add_argument("--answer-trigger", default="The final answer is \\boxed{",
                    help="the base model's answer trigger; '' for a model with think tags")  # fmt: skip
    a = ap.parse_args()
    src = a.run / "draft"
    weights = src / "model.safetensors"
    if not weights.is_file():
        raise SystemExit(f"{src}: no model.safetensors; train the draft first ({a.script})")
    dest = ROOT / "src" / "specexit" / "assets" / f"{a.name}-draft"
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    shutil.copy2(src / "config.json", dest / "config.json")
    # shipped in bfloat16 (the engine runs the draft in the target's precision; a bf16 target is the
    # usual CPU setting): a float32 draft of train draft without --save-dtype is cast here
    with safe_open(str(weights), "pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (safe_open is not iterable)
    state = {k: v.to(torch.bfloat16) if v.is_floating_point() else v for k, v in state.items()}
    save_file(state, str(dest / "model.safetensors"), metadata=meta)
    size = (dest / "model.safetensors").stat().st_size
    if size >= LIMIT:
        shutil.rmtree(dest)
        raise SystemExit(f"{weights} is {size / 1e6:.1f} MB: over the 25 MB limit; train with --save-dtype bfloat16 "
                         "and a narrower --draft-intermediate / smaller --draft-vocab")  # fmt: skip
    summary = json.loads((a.run / "train_summary.json").read_text())
    vals = [r for r in _lines(a.run / "metrics.jsonl") if "val" in r]
    labels = _lines(a.run / "labels.jsonl")
    vocab = json.loads((a.run / "vocab.json").read_text())
    report = {
        "target": a.name,
        "answer_trigger": a.answer_trigger or None,
        "made_by": a.script,
        "traces": len(_lines(a.run / "traces.jsonl")),
        "labelled_traces": len(labels),
        "vocab": {"size": len(vocab["used_ids"]), "coverage": vocab["coverage"], "distinct": vocab["distinct"]},
        "weights_bytes": size,
        "train": summary,
        "val_history": [{"step": r["step"], **r["val"]} for r in vals],
    }
    (dest / "pipeline.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"{dest} ({size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
