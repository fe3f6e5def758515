"""docs/security.md and docs/inputs.md name the tests that hold each defence: those tests exist.

A threat table that cites a renamed or deleted test is a defence nobody checks any more.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ["docs/security.md", "docs/inputs.md"]
# `tests/test_x.py`, `test_x.py::test_name[param]` (under tests/); a bare `::test_name` continues
# the last file named on the same line.
REF = re.compile(r"((?:tests/)?(?:[\w]+/)*test_\w+\.py)?(::\w+)?")


def _refs(text: str) -> list[tuple[str, str | None]]:
    out: list[tuple[str, str | None]] = []
    for line in text.splitlines():
        current: str | None = None
        for code in re.findall(r"`([^`]+)`", line):
            m = REF.fullmatch(code.split("[")[0].strip())
            if m is None or not (m.group(1) or m.group(2)):
                continue
            if m.group(1):
                current = m.group(1) if m.group(1).startswith("tests/") else f"tests/{m.group(1)}"
            if current is None:
                continue
            out.append((current, m.group(2)[2:] if m.group(2) else None))
    return out


def _test_names(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    return {node.name for node in ast.walk(tree)
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)}


@pytest.mark.parametrize("doc", DOCS)
def test_every_cited_test_exists(doc: str) -> None:
    path = ROOT / doc
    assert path.exists(), f"{doc} is missing"
    refs = _refs(path.read_text(encoding="utf-8"))
    assert refs, f"{doc} cites no test"
    missing = []
    for file, name in refs:
        target = ROOT / file
        if not target.exists():
            missing.append(file)
        elif name is not None and name not in _test_names(target):
            missing.append(f"{file}::{name}")
    assert not missing, f"{doc} cites tests that do not exist: {sorted(set(missing))}"


def test_the_checker_sees_a_missing_test() -> None:
    refs = _refs("| x | y | `tests/test_docs_refs.py::test_every_cited_test_exists`, `::nope` |")
    assert refs == [("tests/test_docs_refs.py", "test_every_cited_test_exists"),
                    ("tests/test_docs_refs.py", "nope")]
    assert "nope" not in _test_names(ROOT / "tests/test_docs_refs.py")
