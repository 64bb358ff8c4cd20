"""``python -m specexit.vllm_plugin export SRC OUT [--strip-signals]``: a vLLM-ready draft folder."""

from __future__ import annotations

import argparse

from .config import export_draft


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(prog="python -m specexit.vllm_plugin", description=__doc__)
    sub = ap.add_subparsers(dest="cmd", required=True)
    ex = sub.add_parser("export", help="write a draft folder that vLLM loads without hf_overrides")
    ex.add_argument("src", help="specexit draft folder (config.json + model.safetensors)")
    ex.add_argument("out")
    ex.add_argument(
        "--strip-signals",
        action="store_true",
        help="plain EAGLE-3 folder for stock vLLM (no plugin needed, no exit signals)",
    )
    a = ap.parse_args(argv)
    out = export_draft(a.src, a.out, keep_signals=not a.strip_signals)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
