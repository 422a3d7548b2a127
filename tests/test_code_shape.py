"""Small, named pieces: no function in hwprof/ has a body over 60 lines (its docstring aside)."""

from __future__ import annotations

import ast
from pathlib import Path

import hwprof

ROOT = Path(hwprof.__file__).parent
MAX_BODY_LINES = 60


def body_lines(fn: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines from the first statement after the docstring to the end of the function."""
    body = fn.body
    if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
            and isinstance(body[0].value.value, str):
        body = body[1:]
    if not body:
        return 0
    return int(body[-1].end_lineno or body[-1].lineno) - body[0].lineno + 1


def long_functions(root: Path, limit: int = MAX_BODY_LINES) -> list[str]:
    out = []
    for path in sorted(root.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and body_lines(node) > limit:
                out.append(f"{path.relative_to(root.parent)}:{node.lineno} {node.name}: {body_lines(node)} lines")
    return out


def test_no_function_body_over_60_lines() -> None:
    assert long_functions(ROOT) == []


def test_the_check_counts_a_long_function(tmp_path: Path) -> None:
    src = 'def f():\n    """doc\n    string"""\n' + "    x = 1\n" * 61
    (tmp_path / "m.py").write_text(src)
    assert long_functions(tmp_path) == [f"{tmp_path.name}/m.py:1 f: 61 lines"]
