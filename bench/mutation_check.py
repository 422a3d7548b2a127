"""How many small breakages of hwprof's arithmetic does the test suite catch? A mutation check.

    python bench/mutation_check.py --out results/mutation            # 20 mutants per module (minutes)
    python bench/mutation_check.py --module timers --per-module 0    # every mutant of one module

For each module below, every mutation site is listed from the module's syntax tree: an arithmetic
operator flipped (``+`` <-> ``-``, ``*`` <-> ``/``, ``//`` -> ``*``), a comparison loosened or
tightened (``<`` <-> ``<=``, ``>`` <-> ``>=``, ``==`` <-> ``!=``) or an integer constant plus 1.
``--per-module N`` of them are drawn with a fixed seed (``--seed``; 0 = all); each mutant is written
over the module (``ast.unparse`` of the mutated tree), the module's test subset runs (``pytest -x``,
killed after ``--timeout`` seconds), and the file is put back byte for byte, also on Ctrl-C or an
error. A mutant is *killed* when its tests fail or time out, *survived* when they pass. The
unmutated tree, unparsed the same way, must pass first (else nothing is reported). Results:
``mutation.json`` (every mutant) and ``README.md`` (killed / total per module, the survivors).
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import platform
import random
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

MODULES: dict[str, tuple[str, tuple[str, ...]]] = {
    "formulas": ("hwprof/counting/formulas.py",
                 ("tests/counting/test_formulas.py", "tests/counting/test_seeds.py", "tests/counting/test_taxonomy.py",
                  "tests/counting/test_counter.py")),
    "timers": ("hwprof/measuring/timers.py",
               ("tests/measuring/test_measure_timers.py", "tests/measuring/test_measure_layers.py",
                "tests/gpu/test_fake_cuda_measure.py")),
    "simulate": ("hwprof/memory/simulate.py",
                 ("tests/memory/test_memory_simulate.py", "tests/memory/test_memory_estimate.py",
                  "tests/memory/test_memory_formula.py")),
}

_BINOPS: dict[type, type] = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
                             ast.FloorDiv: ast.Mult}
_CMPOPS: dict[type, type] = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
                             ast.NotEq: ast.Eq}
_SYMBOL = {ast.Add: "+", ast.Sub: "-", ast.Mult: "*", ast.Div: "/", ast.FloorDiv: "//", ast.Lt: "<", ast.LtE: "<=",
           ast.Gt: ">", ast.GtE: ">=", ast.Eq: "==", ast.NotEq: "!="}


@dataclass(frozen=True)
class Site:
    """One mutation: the ``index``-th node of ``ast.walk`` order, at ``line``, and what changes."""

    index: int
    line: int
    what: str


@dataclass
class Outcome:
    module: str
    line: int
    what: str
    status: str          # "killed" | "survived" | "timeout"
    seconds: float


def _annotation_nodes(tree: ast.AST) -> set[int]:
    """ids of nodes inside annotations (strings at run time under ``from __future__ import annotations``)."""
    out: set[int] = set()
    for node in ast.walk(tree):
        anns = [getattr(node, "returns", None), getattr(node, "annotation", None)]
        for a in anns:
            if a is not None:
                out.update(id(n) for n in ast.walk(a))
    return out


def sites(tree: ast.AST) -> list[Site]:
    """Every mutation site of ``tree`` (see the module docstring), in ``ast.walk`` order."""
    skip = _annotation_nodes(tree)
    out: list[Site] = []
    for i, node in enumerate(ast.walk(tree)):
        if id(node) in skip:
            continue
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            a, b = type(node.op), _BINOPS[type(node.op)]
            out.append(Site(i, node.lineno, f"{_SYMBOL[a]} -> {_SYMBOL[b]}"))
        elif isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _CMPOPS:
            a, b = type(node.ops[0]), _CMPOPS[type(node.ops[0])]
            out.append(Site(i, node.lineno, f"{_SYMBOL[a]} -> {_SYMBOL[b]}"))
        elif isinstance(node, ast.Constant) and type(node.value) is int:
            out.append(Site(i, node.lineno, f"{node.value} -> {node.value + 1}"))
    return out


def mutate(source: str, site: Site) -> str:
    """``source`` with ``site`` applied, unparsed."""
    tree = ast.parse(source)
    node = list(ast.walk(tree))[site.index]
    if isinstance(node, ast.BinOp):
        node.op = _BINOPS[type(node.op)]()
    elif isinstance(node, ast.Compare):
        node.ops = [_CMPOPS[type(node.ops[0])]()]
    else:
        assert isinstance(node, ast.Constant)
        node.value = node.value + 1
    return ast.unparse(tree) + "\n"


def _run_tests(tests: tuple[str, ...], timeout_s: float) -> tuple[str, float]:
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    t0 = time.monotonic()
    try:
        r = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests], cwd=ROOT,
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return "timeout", time.monotonic() - t0
    return ("survived" if r.returncode == 0 else "killed"), time.monotonic() - t0


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    for pyc in (path.parent / "__pycache__").glob(f"{path.stem}.*.pyc"):   # never run a stale compiled copy
        pyc.unlink()


def check_module(name: str, per_module: int, seed: int, timeout_s: float) -> list[Outcome]:
    rel, tests = MODULES[name]
    path = ROOT / rel
    original = path.read_text()
    chosen = sites(ast.parse(original))
    total_sites = len(chosen)
    if per_module and per_module < len(chosen):
        chosen = sorted(random.Random(seed).sample(chosen, per_module), key=lambda s: s.index)
    print(f"{name}: {total_sites} sites, running {len(chosen)}", flush=True)
    outcomes: list[Outcome] = []
    try:
        _write(path, ast.unparse(ast.parse(original)) + "\n")
        status, secs = _run_tests(tests, timeout_s)
        if status != "survived":
            raise SystemExit(f"{name}: the unmutated module fails its tests ({status}); fix that first")
        for site in chosen:
            _write(path, mutate(original, site))
            status, secs = _run_tests(tests, timeout_s)
            outcomes.append(Outcome(name, site.line, site.what, status, round(secs, 1)))
            print(f"  line {site.line:4d} {site.what:12s} {status}", flush=True)
    finally:
        _write(path, original)
    return outcomes


def _readme(results: dict[str, list[Outcome]], args: argparse.Namespace, minutes: float) -> str:
    lines = ["# Mutation check", "",
             f"`{' '.join(['python', 'bench/mutation_check.py', *sys.argv[1:]])}`, "
             f"{time.strftime('%Y-%m-%d')}, {platform.machine()} CPU with {os.cpu_count()} cores, "
             f"torch {_torch_version()}, {minutes:.1f} min.", "",
             "Each mutant flips one operator (`+`/`-`, `*`/`/`, `//`, `<`/`<=`, `>`/`>=`, `==`/`!=`) or adds 1 to an "
             f"integer constant in the module; {args.per_module or 'all'} per module drawn with seed {args.seed}; the "
             "module's tests (below) run with `pytest -x`; killed = they fail or time out.", "",
             "| module | tests | killed / mutants | survived |", "| --- | --- | --- | --- |"]
    for name, outs in results.items():
        killed = sum(o.status != "survived" for o in outs)
        lines.append(f"| `{MODULES[name][0]}` | {', '.join(f'`{t}`' for t in MODULES[name][1])} | "
                     f"{killed} / {len(outs)} | {len(outs) - killed} |")
    lines += ["", "Survivors (line, mutation):", ""]
    for name, outs in results.items():
        for o in outs:
            if o.status == "survived":
                lines.append(f"- `{MODULES[name][0]}:{o.line}` `{o.what}`")
    return "\n".join(lines) + "\n"


def _torch_version() -> str:
    try:
        import torch
        return torch.__version__
    except ImportError:
        return "?"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--module", action="append", choices=sorted(MODULES), help="repeatable; default all three")
    p.add_argument("--per-module", type=int, default=20, help="mutants drawn per module (0: all)")
    p.add_argument("--seed", type=int, default=27)
    p.add_argument("--timeout", type=float, default=180.0, help="seconds per mutant's test run")
    p.add_argument("--out", type=Path, help="folder for mutation.json and README.md")
    args = p.parse_args(argv)
    t0 = time.monotonic()
    results = {m: check_module(m, args.per_module, args.seed, args.timeout) for m in (args.module or list(MODULES))}
    minutes = (time.monotonic() - t0) / 60
    for name, outs in results.items():
        killed = sum(o.status != "survived" for o in outs)
        print(f"{name}: {killed} / {len(outs)} killed")
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "mutation.json").write_text(json.dumps(
            {m: [asdict(o) for o in outs] for m, outs in results.items()}, indent=1) + "\n")
        (args.out / "README.md").write_text(_readme(results, args, minutes))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
