"""How much of the code that only a CUDA device runs a test run executed.

    python -m coverage run --source=hwprof,bench -m pytest -q tests
    python tests/gpu/cuda_coverage.py [--data .coverage] [--root .] [--missing]

A line is **CUDA-only** when it lies in

* the body of an ``if`` whose test names CUDA (``dev.type == "cuda"``, ``self.cuda``,
  ``torch.cuda.is_available()``, ``_cuda_ready(device)``, ...), or its ``else`` when the test is
  negated (``not ...``, ``!= "cuda"``, an ``or`` of negations, an ``and`` with a negated
  CUDA check: ``device == "cuda" and not torch.cuda.is_available()`` is the no-GPU error); a
  negated test whose body ends in
  ``return`` or ``raise`` and has no ``else`` (a guard clause) makes the statements after it in
  the same block CUDA-only;
* one of the functions and classes of :data:`CUDA_ONLY` (called only for a CUDA device).

One-line conditional expressions (``a if cuda else b``) are not told apart: line coverage
cannot. The files are hwprof's and the bench scripts the GPU session runs (:data:`FILES`).
Prints, per file, the CUDA-only statements and how many ran, then the total.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

FILES = ("hwprof/**/*.py", "bench/memory_validation.py", "bench/gpu_verify_measure.py", "bench/test_ceiling_probe.py")

CUDA_ONLY = {
    "hwprof/measuring/timers.py": ("_reps_cuda", "_EventPool"),
    "hwprof/measuring/paired.py": ("_cuda_batch",),
    "hwprof/measuring/probes.py": ("Nvml",),
    "hwprof/hardware/ceilings.py": ("_tf32",),
    "hwprof/memory/fit.py": ("capped_cuda_memory",),
    "bench/test_ceiling_probe.py": ("_events_median_s", "hand_bf16_gemm_flop_per_s", "hand_copy_bytes_per_s"),
}
"""Functions and classes called only for a CUDA device (their bodies are CUDA-only)."""


def _mentions_cuda(node: ast.AST, source: str) -> bool:
    """The test names CUDA; a membership test (``dtype not in CUDA_MIN_CAPABILITY``, ``device not in
    ("cuda", "cpu")``) checks a value, not the device, and does not count."""
    if isinstance(node, ast.Compare) and any(isinstance(op, (ast.In, ast.NotIn)) for op in node.ops):
        return False
    return "cuda" in (ast.get_source_segment(source, node) or "").lower()


def _negated(test: ast.expr, source: str = "", guard: bool = False) -> bool:
    """A test that holds when there is no CUDA: ``not ...``, ``!= "cuda"``, an ``or`` of such tests; unless ``guard``, also an ``and`` with one (``device == "cuda" and not
    torch.cuda.is_available()``: its body is the no-GPU error, but what follows it runs either way)."""
    if isinstance(test, ast.UnaryOp) and isinstance(test.op, ast.Not):
        return True
    if isinstance(test, ast.Compare) and all(isinstance(op, ast.NotEq) for op in test.ops):
        return True
    if isinstance(test, ast.BoolOp) and isinstance(test.op, ast.Or):
        return all(_negated(v, source, guard) for v in test.values)
    return (not guard and isinstance(test, ast.BoolOp)
            and any(_negated(v, source) and _mentions_cuda(v, source) for v in test.values))


def _lines(stmts: list[ast.stmt]) -> set[int]:
    out: set[int] = set()
    for s in stmts:
        out.update(range(s.lineno, (s.end_lineno or s.lineno) + 1))
    return out


def cuda_lines(source: str, only: tuple[str, ...] = ()) -> set[int]:
    """Line numbers of ``source`` that only a CUDA device runs (see the module docstring)."""
    tree = ast.parse(source)
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in only:
            out |= _lines(node.body)
        for field in ("body", "orelse", "finalbody", "handlers"):
            block = getattr(node, field, None)
            if isinstance(block, list):
                out |= _guards(block, source)
        if isinstance(node, ast.If) and _mentions_cuda(node.test, source):
            out |= _lines(node.orelse if _negated(node.test, source) else node.body)
    return out


def _guards(block: list[ast.stmt], source: str) -> set[int]:
    """Statements after a negated CUDA guard clause (``if not cuda: return``) in ``block``."""
    for i, s in enumerate(block):
        if (isinstance(s, ast.If) and not s.orelse and _negated(s.test, source, guard=True)
                and _mentions_cuda(s.test, source)
                and isinstance(s.body[-1], (ast.Return, ast.Raise))):
            return _lines(block[i + 1:])
    return set()


def report(data: str, root: Path, missing: bool = False) -> tuple[int, int]:
    """Print per file (CUDA-only statements, executed); return the totals."""
    import coverage

    cov = coverage.Coverage(data_file=data)
    cov.load()
    total = ran = 0
    for pattern in FILES:
        for path in sorted(root.glob(pattern)):
            rel = path.relative_to(root).as_posix()
            lines = cuda_lines(path.read_text(), CUDA_ONLY.get(rel, ()))
            if not lines:
                continue
            _, statements, _, miss, _ = cov.analysis2(str(path))   # a file never imported: all missed
            cuda = lines & set(statements)
            hit = cuda - set(miss)
            total, ran = total + len(cuda), ran + len(hit)
            extra = f"  missed: {sorted(cuda - hit)}" if missing and cuda - hit else ""
            print(f"{rel:48s} {len(hit):4d} / {len(cuda):4d}{extra}")
    print(f"{'total':48s} {ran:4d} / {total:4d} = {100 * ran / max(total, 1):.1f}%")
    return ran, total


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=".coverage", help="coverage data file")
    p.add_argument("--root", default=".", help="the checkout the data was measured on")
    p.add_argument("--missing", action="store_true", help="list the CUDA-only lines that did not run")
    args = p.parse_args(argv)
    report(args.data, Path(args.root).resolve(), args.missing)
    return 0


if __name__ == "__main__":
    sys.exit(main())
