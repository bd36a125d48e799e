"""Every public module, class, function and method of harness/ says what it does (issue 11)."""

from __future__ import annotations

import ast
from pathlib import Path

HARNESS = Path(__file__).resolve().parent.parent / "harness"


def _undocumented(path: Path) -> list[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    missing = [] if ast.get_docstring(tree) else [f"{path.name} (module)"]

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                if child.name.startswith("_"):
                    continue
                if not ast.get_docstring(child):
                    missing.append(f"{path.name}:{child.lineno} {prefix}{child.name}")
                if isinstance(child, ast.ClassDef):
                    visit(child, f"{child.name}.")

    visit(tree, "")
    return missing


def test_every_public_name_has_a_docstring() -> None:
    missing = [m for f in sorted(HARNESS.glob("*.py")) for m in _undocumented(f)]
    assert not missing, "no docstring: " + ", ".join(missing)


def test_the_check_sees_a_missing_docstring(tmp_path: Path) -> None:
    f = tmp_path / "mod.py"
    f.write_text(
        '"""A module."""\n\n\ndef shown():\n    return 1\n\n\ndef _hidden():\n    return 2\n'
    )
    assert _undocumented(f) == ["mod.py:4 shown"]
