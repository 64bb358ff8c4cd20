"""``specexit models list``: every zoo entry with its status (packages, cached GGUF, converted folder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from .fetch import gguf_dir, is_converted, models_dir, package_status
from .registry import REGISTRY, SHIPPED_DRAFTS, ModelSpec, shipped_draft_or_none


@dataclass
class ModelStatus:
    spec: ModelSpec
    packages: dict[str, str | None] = field(default_factory=dict)
    converted: bool = False
    path: Path | None = None
    gguf_cached: bool = False

    @property
    def installed(self) -> bool:
        return all(self.packages.get(d) == v for d, v in self.spec.packages)

    @property
    def n_installed(self) -> int:
        return sum(self.packages.get(d) == v for d, v in self.spec.packages)

    def to_dict(self) -> dict:
        return {
            "name": self.spec.name,
            "description": self.spec.description,
            "packages": [f"{d}=={v}" for d, v in self.spec.packages],
            "packages_installed": self.n_installed,
            "installed": self.installed,
            "gguf_name": self.spec.gguf_name,
            "gguf_size": self.spec.size,
            "gguf_sha256": self.spec.expected_sha256,
            "gguf_cached": self.gguf_cached,
            "converted": self.converted,
            "path": str(self.path),
            "draft": shipped_draft_or_none(self.spec.name),
        }


def list_models() -> list[ModelStatus]:
    """Every registry entry with its status: packages installed? GGUF assembled? converted folder present?"""
    out = []
    for spec in REGISTRY.values():
        folder = models_dir() / spec.name
        out.append(
            ModelStatus(
                spec=spec,
                packages=package_status(spec),
                converted=is_converted(spec, folder),
                path=folder,
                gguf_cached=spec.assembled and (gguf_dir() / spec.gguf_name).is_file(),
            )
        )
    return out


def format_table(rows: list[ModelStatus]) -> str:
    def human(n: int) -> str:
        return f"{n / 1e6:,.0f} MB" if n < 1e9 else f"{n / 1e9:.2f} GB"

    header = ("NAME", "GGUF", "PACKAGES", "CONVERTED", "DRAFT", "DESCRIPTION")
    table = [header]
    for r in rows:
        pk = f"{r.n_installed}/{len(r.spec.packages)} installed"
        draft = "shipped" if r.spec.name in SHIPPED_DRAFTS else "-"
        table.append((r.spec.name, human(r.spec.size), pk, "yes" if r.converted else "no", draft, r.spec.description))
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row[:-1], widths, strict=True)) + "  " + row[-1] for row in table]
    lines.append(f"cache: {models_dir()}   (a shipped draft: specexit models draft NAME)")
    return "\n".join(lines)
