"""Every results file the README and docs cite exists, and the README's test command is what CI runs."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CITED = re.compile(r"benchmarks/results/[A-Za-z0-9_.*{},/-]+")


def expand(pattern: str) -> list[str]:
    """``a/{x,y}/b`` -> ``a/x/b``, ``a/y/b`` (the shell's brace form the docs use)."""
    parts = re.split(r"\{([^{}]*)\}", pattern)
    literals, choices = parts[0::2], [p.split(",") for p in parts[1::2]]
    return ["".join(x for pair in itertools.zip_longest(literals, combo, fillvalue="") for x in pair)
            for combo in itertools.product(*choices)]  # fmt: skip


def cited_paths() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for m in CITED.finditer(doc.read_text()):
            text = m.group(0).rstrip(".,:;)")
            if text.count("{") != text.count("}"):  # a brace list cut by the pattern's end
                text = text[: text.rfind("{")].rstrip("/")
            out += [(doc.name, p) for p in expand(text)]
    return sorted(set(out))


def test_docs_cite_results():
    assert len(cited_paths()) > 20  # the docs do cite their results; the check below is not vacuous


@pytest.mark.parametrize("doc, path", cited_paths())
def test_cited_results_exist(doc, path):
    found = list(ROOT.glob(path)) if "*" in path else [ROOT / path] if (ROOT / path).exists() else []
    assert found, f"{doc} cites {path}, which is not in the repository"


def test_expand_braces():
    assert expand("r/{a,b}/x.json") == ["r/a/x.json", "r/b/x.json"]
    assert expand("r/x.json") == ["r/x.json"]


def test_readme_test_command_is_what_ci_runs():
    readme = (ROOT / "README.md").read_text()
    block = readme[readme.index("# 2. tests") :].splitlines()[1].strip()
    ci = [line.strip() for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()][-1]
    assert block == ci
