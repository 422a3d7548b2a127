"""`hwprof` command line. The cli package is the only place in hwprof that prints.

Each sub-command lives in ``hwprof/cli/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``. Known user errors (bad model name, bad --input, no CUDA, an unusable
--out, ...) are printed as one line on stderr with exit code 2; Ctrl-C, SIGTERM and SIGHUP print
one line and exit with 128 + the signal's number (:mod:`hwprof.cli.signals`). ``--out`` is checked before the commands are imported (see :mod:`hwprof.cli.common`).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import NoReturn

from hwprof.cli.common import (
    Invocation,
    check_out_dir,
    configure_logging,
    input_paths,
    quiet_profiler_log,
    reset_invocation,
    set_invocation,
)
from hwprof.cli.failures import TRACEBACK_ENV, explain, watch_models
from hwprof.cli.signals import describe, ending_signals, exit_code

__all__ = ["main", "build_parser", "OPTIONAL_DEPENDENCIES"]

# sub-command -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "count": ("hwprof.cli.count", "analytical FLOPs/MACs/params/bytes per layer (fake tensors, no compute)"),
    "measure": ("hwprof.cli.measure", "timed forward/backward/step and memory probes on cpu or cuda"),
    "ceilings": ("hwprof.cli.ceilings", "measure this machine's peak FLOP/s per dtype and memory bandwidth"),
    "profile": ("hwprof.cli.profile", "count + measure + ceilings joined into per-layer roofline records"),
    "memory": ("hwprof.cli.memory", "predict training/inference memory and validate against measured peaks"),
    "study": ("hwprof.cli.study", "studies: `hwprof study depthwise`"),
    "predict": ("hwprof.cli.predict", "predicted time per layer and model from counts and ceilings (or a named GPU)"),
    "compare": ("hwprof.cli.compare", "two or more saved profiles joined per layer: speedup, bound changes, moves"),
    "run": ("hwprof.cli.run", "profile chosen steps of an unmodified script: hwprof run [--steps 3:6] -- python train.py"),
}

OPTIONAL_DEPENDENCIES: frozenset[str] = frozenset({"matplotlib", "torchvision", "timm", "pynvml"})
"""Packages hwprof works without (extras, model sources, NVML): a command whose import fails
because one of them is missing is reported as not available; any other ImportError is a bug
and propagates."""

INTERRUPTED_RC = 130   # 128 + SIGINT, what shells report for a job ended by Ctrl-C


def _user_errors() -> tuple[type[BaseException], ...]:
    from hwprof.errors import HwprofError
    from hwprof.spec import InputSpecError
    from hwprof.zoo import UnknownModelError
    return (HwprofError, InputSpecError, UnknownModelError)


def _missing_optional(e: ImportError) -> str | None:
    """The missing optional package behind ``e``, or None when ``e`` is not that (a real error)."""
    if not isinstance(e, ModuleNotFoundError) or not e.name:
        return None
    top = e.name.split(".")[0]
    return top if top in OPTIONAL_DEPENDENCIES else None


class UsageError(Exception):
    """A command line the parser refuses (unknown option, bad value): one line, exit code 2."""


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are :class:`UsageError` (``main`` prints one line) instead of the usage
    text, the message and ``sys.exit(2)``; sub-parsers are of this class too."""

    def error(self, message: str) -> NoReturn:  # type: ignore[override]
        raise UsageError(" ".join(message.split()))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="hwprof", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        try:
            mod = importlib.import_module(module)
        except ImportError as e:
            missing = _missing_optional(e)
            if missing is None:
                raise
            p.set_defaults(_missing=missing)
            continue
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


class _EarlyParser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]  # the real parser reports it
        raise ValueError(message)


def _early(argv: list[str]) -> argparse.Namespace:
    """The command name, -v and --out as given, read without importing the commands (torch)."""
    pre = _EarlyParser(add_help=False, allow_abbrev=False)
    pre.add_argument("-v", "--verbose", action="store_true")
    pre.add_argument("--out")
    pre.add_argument("--force", action="store_true")
    pre.add_argument("command", nargs="?")
    first = next((i for i, a in enumerate(argv) if not a.startswith("-")), None)
    if first is not None and argv[first] == "run":   # `hwprof run -- python train.py --out X`: the script's own
        argv = argv[:first + 1] + _run_own(argv[first + 1:])
    try:
        return pre.parse_known_args(argv)[0]
    except ValueError:   # left to the real parser to report
        return argparse.Namespace(command=None, out=None, verbose=False, force=False)


def _run_own(argv: list[str]) -> list[str]:
    from hwprof.cli.run import own_arguments  # torch-free, like this module
    return own_arguments(argv)


def main(argv: list[str] | None = None) -> int:
    """Run ``hwprof argv``; the exit code: 0 done, 1 nothing measured, 2 user error, 128 + n for
    signal n (130 Ctrl-C, 143 SIGTERM, 129 SIGHUP: :mod:`hwprof.cli.signals`). Called as the
    program (``argv`` None), signals after the first stay ignored until the process exits."""
    token = None
    command = None
    try:
        with ending_signals(keep_ignoring=argv is None):
            args = list(sys.argv[1:] if argv is None else argv)
            early = _early(args)
            command = early.command
            token = set_invocation(Invocation(early.command or "hwprof", tuple(args)))
            return _main(args, early)
    except KeyboardInterrupt as e:
        if os.environ.get("RANK", "0") == "0":   # under torchrun only rank 0 speaks (the launcher stops the rest)
            print(f"hwprof{' ' + command if command else ''}: {describe(e)}", file=sys.stderr)
        return exit_code(e)
    finally:
        if token is not None:
            reset_invocation(token)


def _main(argv: list[str], early: argparse.Namespace) -> int:
    configure_logging(early.verbose)
    quiet_profiler_log()
    if early.out is not None:   # before the commands (and torch) are imported
        from hwprof.errors import OutputPathError
        try:
            check_out_dir(early.out, force=early.force, inputs=())
        except OutputPathError as e:
            print(f"hwprof{' ' + early.command if early.command else ''}: error: {e}", file=sys.stderr)
            return 2
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except UsageError as e:
        print(f"hwprof{' ' + early.command if early.command in COMMANDS else ''}: error: {e} (see hwprof "
              f"{early.command + ' ' if early.command in COMMANDS else ''}--help)", file=sys.stderr)
        return 2
    if not args.command:
        parser.print_help()
        return 2
    set_invocation(Invocation(args.command, tuple(argv), getattr(args, "device", None),
                              getattr(args, "format", None), bool(getattr(args, "force", False)), input_paths(args)))
    if getattr(args, "_missing", None):
        print(f"hwprof {args.command}: error: this command needs the optional package '{args._missing}', "
              "which is not installed", file=sys.stderr)
        return 2
    with watch_models():   # the models built, to name a failing module (hwprof.cli.failures)
        try:
            if getattr(args, "out", None) is not None:
                check_out_dir(args.out)
            return int(args._run(args) or 0)
        except _user_errors() as e:
            print(f"hwprof {args.command}: error: {explain(e, args.command) or e}", file=sys.stderr)
            return 2
        except Exception as e:   # the model's own failure is one line; any other exception is a bug: traceback
            line = None if os.environ.get(TRACEBACK_ENV) else explain(e, args.command)
            if line is None:
                raise
            print(f"hwprof {args.command}: error: {line}", file=sys.stderr)
            return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
