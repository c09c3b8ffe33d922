"""The shape of the package, as docs/architecture.md describes it: rooms by concept, no
reach into another package's private modules, and a repository that stands alone (every
document it cites is inside it). A module is one idea, whatever its length: no cap on
lines (the formatter owns the layout)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "alexcli"
MODULES = sorted(PACKAGE.rglob("*.py"))


def test_core_has_its_rooms_each_saying_its_job():
    for room in ("data", "nn", "figures"):
        init = PACKAGE / "core" / room / "__init__.py"
        assert init.is_file(), room
        assert ast.get_docstring(ast.parse(init.read_text())), f"core/{room} has no docstring"


def test_no_module_imports_another_packages_private_module():
    offenders = []
    for path in MODULES:
        package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                parts = name.split(".")
                private = [
                    i for i, p in enumerate(parts) if p.startswith("_") and not p.endswith("__")
                ]
                if parts[0] == "alexcli" and private:
                    owner = ".".join(parts[: private[0]])
                    if owner != package:
                        offenders.append(f"{path.relative_to(ROOT)}: {name}")
    assert not offenders


def _cited_files() -> list[Path]:
    docs = [*sorted((ROOT / "docs").glob("*.md")), ROOT / "README.md"]
    return MODULES + docs


def test_nothing_cites_documents_outside_the_repository():
    outside = re.compile(r"\b(PAPER|SPEC|FINDINGS|STYLE)\b|\.\./shared")
    hits = [
        f"{p.relative_to(ROOT)}:{n}"
        for p in _cited_files()
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if outside.search(line)
    ]
    assert not hits


def test_every_cited_section_of_the_docs_exists():
    """`docs/paper.md "Learning"` in a docstring names a heading of that document."""
    cite = re.compile(r'docs/([a-z_]+\.md) "([^"]+)"')
    missing = []
    for path in MODULES:
        text = " ".join(path.read_text().split())  # citations may wrap lines
        for doc, section in cite.findall(text):
            target = ROOT / "docs" / doc
            headings = [
                line.lstrip("#").strip()
                for line in (target.read_text().splitlines() if target.is_file() else [])
                if line.startswith("#")
            ]
            if not any(h.startswith(section) for h in headings):
                missing.append(f"{path.relative_to(ROOT)}: {doc} {section!r}")
    assert not missing
