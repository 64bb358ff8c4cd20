"""The package's layering (docs/architecture.md), checked on the imports of every module in src/.

Every import counts, including the lazy ones inside functions: a core module that imports the server
inside a function still drags the server into the core.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"
PACKAGE = "specexit"

# the data path's core: propose -> verify -> exit policy, and what both backends build results with
CORE = (
    "answer_trigger",
    "attention",
    "auto_tree",
    "backend",
    "boundaries",
    "chat",
    "detokenize",
    "draft",
    "draft_decode",
    "errors",
    "exit_control",
    "exit_policy",
    "kv_cache",
    "policy_file",
    "probe",
    "profiling",
    "proposer",
    "results",
    "round_cost",
    "sampling",
    "signals",
    "span",
    "target",
    "thinking_budget",
    "tree",
    "verify",
)
# the layers above (or beside) the core; the core imports none of them
UPPER = (
    "serve", "bench", "calibration", "vllm_plugin", "testbed", "train", "reasoner", "cli", "cli_options", "demo",
    "zoo", "engine",
)  # fmt: skip
# pure-Python modules: importable without torch (the vLLM plugin's config, the server's validation, tests)
TORCH_FREE = (
    "answer_trigger", "boundaries", "detokenize", "errors", "exit_policy", "policy_file", "signals", "span",
    "thinking_budget",
)  # fmt: skip


def module_name(path: Path) -> str:
    rel = path.relative_to(SRC).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports(source: str, module: str, is_package: bool = False) -> list[tuple[str, list[str]]]:
    """(imported module, names taken from it) for every import statement, relative ones resolved."""
    out: list[tuple[str, list[str]]] = []
    base = module.split(".") if is_package else module.split(".")[:-1]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            out += [(a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parent = base[: len(base) - (node.level - 1)]
                target = ".".join([*parent, node.module] if node.module else parent)
            else:
                target = node.module or ""
            names = [a.name for a in node.names]
            out.append((target, names))
            # `from . import x` imports the submodule x
            out += [(f"{target}.{n}", []) for n in names if not node.module]
    return out


def all_modules() -> dict[str, list[tuple[str, list[str]]]]:
    mods = {}
    for path in sorted((SRC / PACKAGE).rglob("*.py")):
        name = module_name(path)
        mods[name] = imports(path.read_text(), name, is_package=path.name == "__init__.py")
    return mods


def top(name: str) -> str | None:
    """The first component under the package (``specexit.serve.app`` -> ``serve``), None outside it."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == PACKAGE else None


def violations(mods: dict[str, list[tuple[str, list[str]]]]) -> list[str]:
    bad = []
    for mod, imps in mods.items():
        layer = top(mod)
        for target, names in imps:
            t = top(target)
            if layer in CORE and t in UPPER:
                bad.append(f"core module {mod} imports {target}")
            if layer == "vllm_plugin" and t == "engine":
                bad.append(f"{mod} imports the PyTorch engine ({target})")
            if layer in TORCH_FREE and target.split(".")[0] == "torch":
                bad.append(f"pure-Python module {mod} imports torch")
            if target.split(".")[0] == PACKAGE and target != mod:
                private = [n for n in names if n.startswith("_") and not n.startswith("__")]
                if private:
                    bad.append(f"{mod} imports private name(s) {private} from {target}")
            private_module = any(p.startswith("_") and p != "__main__" for p in target.split("."))
            if target.split(".")[0] == PACKAGE and private_module:
                bad.append(f"{mod} imports the private module {target}")
    return bad


def test_core_lists_name_real_modules():
    present = {top(m) for m in all_modules()}
    missing = [m for m in (*CORE, *UPPER) if m not in present]
    assert not missing, f"layer lists name modules that do not exist: {missing}"


def test_layering_holds():
    bad = violations(all_modules())
    assert not bad, "layering violations:\n" + "\n".join(bad)


@pytest.mark.parametrize(
    "module, source, expect",
    [
        ("specexit.exit_control", "from .serve.app import create_app", "core module"),
        ("specexit.draft", "def f():\n    from specexit.bench import runner", "core module"),
        ("specexit.vllm_plugin.backend", "from ..engine import SpecExitGenerator", "PyTorch engine"),
        ("specexit.bench.cli", "from ..cli import _backend_args", "private name"),
        ("specexit.exit_policy", "import torch", "pure-Python"),
    ],
)
def test_the_checker_catches_each_kind_of_violation(module, source, expect):
    bad = violations({module: imports(source, module)})
    assert len(bad) == 1 and expect in bad[0], bad


def test_relative_imports_resolve_against_the_package():
    assert imports("from ..engine import X", "specexit.vllm_plugin.backend") == [("specexit.engine", ["X"])]
    assert imports("from . import runner", "specexit.bench", is_package=True) == [
        ("specexit.bench", ["runner"]),
        ("specexit.bench.runner", []),
    ]
