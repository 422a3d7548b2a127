"""`hwprof` command line. The cli package is the only place in hwprof that prints.

Each sub-command lives in ``hwprof/cli/<name>.py`` with ``add_arguments(parser)`` and
``run(args) -> int``. Known user errors (bad model name, bad --input, no CUDA, ...) are
printed as one line on stderr with exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

__all__ = ["main"]

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
}


def _user_errors() -> tuple[type[BaseException], ...]:
    from hwprof.errors import HwprofError
    from hwprof.spec import InputSpecError
    from hwprof.zoo import UnknownModelError
    return (HwprofError, InputSpecError, UnknownModelError)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hwprof", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="log progress at INFO level")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_) in COMMANDS.items():
        p = sub.add_parser(name, help=help_, description=help_)
        try:
            mod = importlib.import_module(module)
        except ImportError:
            p.set_defaults(_missing=module)
            continue
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if not args.command:
        parser.print_help()
        return 2
    if getattr(args, "_missing", None):
        print(f"hwprof: command '{args.command}' is not available in this build", file=sys.stderr)
        return 2
    try:
        return int(args._run(args) or 0)
    except _user_errors() as e:
        print(f"hwprof {args.command}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
