"""`hwprof run [--steps 3:6] [--out DIR] -- python script.py ARGS...`: profile an unmodified script's own steps.

The script runs in this process (``runpy``, with ``sys.argv = [script, *ARGS]`` and its folder first
on ``sys.path``, as ``python script.py ARGS`` would run it) inside :func:`hwprof.capture`: only the
chosen steps carry hooks or modes, its stdout and stderr pass through untouched, and hwprof's own
report goes to stderr after the script ends (the script owns stdout). The exit code is the
script's own; a script that fails after the captured steps still gets its profile folder. A
script that never reaches the chosen steps gets one line saying how many steps it ran, and exit 2
when the script itself succeeded. Also ``hwprof run script.py ARGS`` and ``hwprof run -- python -m
package.module ARGS``.
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hwprof.cli.common import add_output_options, command_line, out_folder, path_arg, whole_number
from hwprof.errors import HwprofError

_PYTHONS = ("python", "python3", f"python{sys.version_info.major}.{sys.version_info.minor}")
VALUE_OPTIONS = ("--steps", "--top", "--ceilings-cache", "--format", "--out")
"""The options of ``hwprof run`` that take a value (``hwprof.cli._early`` stops reading at the script)."""


def own_arguments(argv: list[str]) -> list[str]:
    """The part of ``hwprof run ...``'s arguments that is hwprof's: up to ``--`` or the script's name, so that a
    script's own ``--out`` is never read as hwprof's."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        a = argv[i]
        if a == "--" or (not a.startswith("-") and a != "run"):
            break
        out.append(a)
        if a in VALUE_OPTIONS and i + 1 < len(argv):
            out.append(argv[i + 1])
            i += 1
        i += 1
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--steps", default="3:6", type=_steps, metavar="START:STOP",
                   help="the steps to capture, 0-based as Python's range (default 3:6: steps 3, 4 and 5; the first "
                        "is counted, the next timed and hooked, a fourth profiled per op)")
    p.add_argument("--top", type=whole_number(1), default=25, help="rows of the layer table, by time (default 25)")
    p.add_argument("--ceilings-cache", default=None, metavar="DIR", type=path_arg,
                   help="where measured ceilings are cached (default $HWPROF_CACHE_DIR/ceilings or the user cache)")
    p.add_argument("--quick", action="store_true", help="quick (small) ceilings: a smoke run")
    p.add_argument("--no-html", action="store_true", help="with --out: skip report.html")
    add_output_options(p)
    p.add_argument("script", nargs=argparse.REMAINDER, metavar="-- python script.py ARGS",
                   help="the script and its arguments (after --), run as `python script.py ARGS` would run it")


def _steps(text: str) -> str:
    from hwprof.capturing import parse_steps

    try:
        parse_steps(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None
    return text


@dataclass(frozen=True)
class Target:
    """What to run: a script path, or a module (``-m``), and its arguments."""

    path: Path | None
    module: str | None
    argv: list[str]

    @property
    def name(self) -> str:
        return self.path.stem if self.path is not None else str(self.module)


def target_of(words: list[str]) -> Target:
    """``[--] [python] script.py ARGS`` or ``[--] [python] -m module ARGS`` -> :class:`Target` (one-line
    :class:`HwprofError` when it names no script, or a script that does not exist)."""
    w = list(words)
    if w and w[0] == "--":
        w = w[1:]
    if w and (Path(w[0]).name in _PYTHONS or os.path.abspath(w[0]) == os.path.abspath(sys.executable)):
        w = w[1:]
    if not w:
        raise HwprofError("no script to run: hwprof run [--steps 3:6] -- python script.py ARGS")
    if w[0] == "-m":
        if len(w) < 2:
            raise HwprofError("-m needs a module name: hwprof run -- python -m package.module ARGS")
        return Target(None, w[1], [w[1], *w[2:]])
    if w[0].startswith("-"):
        raise HwprofError(f"python option {w[0]!r} is not supported: hwprof run runs `python script.py ARGS` "
                          "or `python -m module ARGS`")
    path = Path(w[0])
    if not path.is_file():
        raise HwprofError(f"script {w[0]!r}: no such file")
    return Target(path, None, [str(path), *w[1:]])


def run(args: argparse.Namespace) -> int:
    from hwprof.capturing import capture

    target = target_of(args.script)
    cap = capture(args.steps, name=target.name, ceilings=lambda device: _ceilings(args, device))   # after the script
    code = _run_script(target, cap)
    if cap.profile is None:
        print(f"hwprof run: {'error: ' if code == 0 else ''}no profile: {cap.missing}", file=sys.stderr)
        return 2 if code == 0 else code
    _report(cap.profile, args)
    return code


def _ceilings(args: argparse.Namespace, device: str) -> Any:
    from hwprof.hardware.ceilings import measure_ceilings

    return measure_ceilings(device=device, cache_dir=args.ceilings_cache, quick=args.quick)


def _run_script(target: Target, cap: Any) -> int:
    """Run the script under ``cap``; its exit code (``sys.exit``'s argument, 1 for an uncaught exception,
    whose traceback is printed from the script's own frames on, as Python prints it)."""
    saved_argv, saved_path = sys.argv, list(sys.path)
    sys.argv = list(target.argv)
    if target.path is not None:
        sys.path.insert(0, str(target.path.resolve().parent))
    try:
        with cap:
            try:
                if target.path is not None:
                    runpy.run_path(str(target.path), run_name="__main__")
                else:
                    runpy.run_module(str(target.module), run_name="__main__", alter_sys=True)
                return 0
            except SystemExit as e:
                return _exit_code(e.code)
            except KeyboardInterrupt:
                raise
            except BaseException as e:   # noqa: BLE001 - the script's own failure: shown as Python shows it
                _print_script_traceback(e, target)
                return 1
    finally:
        sys.argv, sys.path[:] = saved_argv, saved_path
        sys.stdout.flush()


def _exit_code(code: Any) -> int:
    """What the interpreter would exit with for ``sys.exit(code)``: None -> 0, an int -> itself, else 1
    (with the value printed on stderr, as Python does)."""
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)
    return 1


def _print_script_traceback(e: BaseException, target: Target) -> None:
    tb = e.__traceback__
    mine = str(Path(__file__).resolve().parent.parent)
    while tb is not None and (tb.tb_frame.f_code.co_filename.startswith(mine)
                              or tb.tb_frame.f_code.co_filename.endswith("runpy.py")):
        tb = tb.tb_next
    traceback.print_exception(type(e), e, tb, file=sys.stderr)


def _report(p: Any, args: argparse.Namespace) -> None:
    from hwprof.report.profile_report import summary_lines, terminal_table
    from hwprof.report.tables import render

    cfg = p.config
    head = f"== hwprof run: {cfg['model']} on {p.ceilings.device_name}: captured steps {args.steps}, {cfg['dtype']}"
    text = render(p.layers, args.format) if args.format != "table" else "\n".join(
        [head, render(terminal_table(p, top=args.top), "table"), "", *summary_lines(p)])
    print(text, file=sys.stderr)
    with out_folder(args.out) as d:
        if d is not None:
            p.save(d, command=command_line(), html=not args.no_html)
