"""No stage package imports a later stage (module-level and function-level imports alike).

Stages, in data-flow order (docs/ARCHITECTURE.md): the base modules every stage may use, then
count -> measure -> ceilings -> memory -> distributed (DDP / FSDP2 runs and predictions, built on
the four before it) -> report (renderers of plain records) -> join (the roofline, the time
prediction, the ``Profile`` records, which save themselves through the renderers, and the
comparison of saved profiles) -> studies and llm (generation phases, KV cache) -> cli. Imports under ``if TYPE_CHECKING:`` are
annotations only and are not counted.
"""

from __future__ import annotations

import ast
from pathlib import Path

import hwprof

ROOT = Path(hwprof.__file__).parent

STAGES: list[tuple[str, ...]] = [
    ("errors", "spec", "files", "device", "modules", "fakes", "placement", "training", "zoo", "amp", "stepping"),
    ("counting",),
    ("measuring",),
    ("hardware",),
    ("memory",),
    ("distributed",),
    ("report",),
    ("roofline", "predict", "joining", "profile_folder", "profiler", "compare", "capturing"),
    ("studies", "llm"),
    ("cli", "__main__"),
]
LEVEL = {name: i for i, names in enumerate(STAGES) for name in names}


def _top(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "hwprof" and len(parts) > 1 else None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, hwprof sub-package or module) for every ``import hwprof.x`` / ``from hwprof.x import``."""
    out = []
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for block in ast.walk(tree) if isinstance(block, ast.If) and _is_type_checking(block.test)
                   for stmt in block.body for n in ast.walk(stmt)}
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            top = _top(node.module)
            if top is None and node.module == "hwprof":
                out += [(node.lineno, a.name) for a in node.names]
            elif top:
                out.append((node.lineno, top))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, t) for a in node.names if (t := _top(a.name))]
    return out


def test_every_module_has_a_stage() -> None:
    names = {p.relative_to(ROOT).parts[0].removesuffix(".py") for p in ROOT.rglob("*.py")} - {"__init__"}
    assert names <= set(LEVEL), f"modules without a stage: {sorted(names - set(LEVEL))}"


def test_no_stage_imports_a_later_stage() -> None:
    bad = []
    for path in sorted(ROOT.rglob("*.py")):
        own = path.relative_to(ROOT).parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        for line, target in imports_of(path):
            if target in LEVEL and LEVEL[target] > LEVEL[own]:
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} ({own}) imports hwprof.{target}")
    assert not bad, "\n".join(bad)


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The walker finds lazy (function-level) imports too, so the rule above can fail."""
    f = tmp_path / "m.py"
    f.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import hwprof.studies\n"
                 "def f():\n    from hwprof.report.tables import render\n    import hwprof.cli\n")
    assert imports_of(f) == [(5, "report"), (6, "cli")]
