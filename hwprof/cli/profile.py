"""`hwprof profile [MODEL]`: per-layer roofline records; with no MODEL, the built-in default:
MobileNetV1 (seed 000) against its dense twin, side by side, on the best available device."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from tqdm import tqdm

from hwprof import zoo
from hwprof.cli.common import add_output_options
from hwprof.cli.parallel import add_launch_options
from hwprof.device import resolve_device
from hwprof.files import write_atomic
from hwprof.hardware.ceilings import Ceilings, measure_ceilings
from hwprof.profiler import Profile, profile
from hwprof.report.profile_report import comparison_lines, summary_lines, terminal_table
from hwprof.report.tables import render
from hwprof.spec import parse_spec

DEFAULT_PAIR = ("mobilenet_v1", "mobilenet_v1_dense")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None,
                   help="zoo name, torchvision:NAME, timm:NAME or package.module:factory "
                        "(default: MobileNetV1 vs its dense twin)")
    p.add_argument("--input", metavar="SPEC", help="input shape without batch, e.g. 3x224x224")
    p.add_argument("--batch", type=int, default=None, help="batch size (default 1; 8 for the default pair)")
    p.add_argument("--device", default="auto", help="auto|cpu|cuda (auto: cuda if available)")
    p.add_argument("--dtype", default=None, help="fp32|bf16|fp16 (default: the model's)")
    p.add_argument("--mode", choices=("inference", "train"), default="inference")
    p.add_argument("--optimizer", default=None, help="sgd|momentum|adam|adamw (train mode)")
    p.add_argument("--channels-last", action="store_true", help="run in channels_last memory format")
    p.add_argument("--budget", type=float, default=1.0, help="timing budget per phase, seconds (default 1)")
    p.add_argument("--top", type=int, default=25, help="rows of the terminal table, by time (default 25)")
    p.add_argument("--ceilings-cache", default=None, metavar="DIR",
                   help="where measured ceilings are cached (default $HWPROF_CACHE_DIR/ceilings or the user cache)")
    p.add_argument("--refresh-ceilings", action="store_true", help="re-measure the ceilings")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: quick (small) ceilings and a 0.1 s timing budget; numbers are not ceilings")
    add_launch_options(p)
    add_output_options(p)


def _run_one(name: str, args: argparse.Namespace, batch: int, ceilings: Ceilings) -> Profile:
    model, spec = zoo.build(name)
    return profile(model, args.input or spec, device=args.device, dtype=args.dtype, mode=args.mode,
                   optimizer=args.optimizer, channels_last=args.channels_last, batch=batch,
                   budget_s=0.1 if args.quick else args.budget, ceilings=ceilings, name=name,
                   progress=True)


def _show(p: Profile, args: argparse.Namespace) -> str:
    if args.format != "table":
        return render(p.layers, args.format)
    head = f"== {p.config['model']} on {p.ceilings.device_name}: {p.config['mode']}, {p.config['dtype']}, batch {p.config['batch']}"
    return "\n".join([head, render(terminal_table(p, top=args.top), "table"), "", *summary_lines(p)])


def run(args: argparse.Namespace) -> int:
    if args.parallel:
        return _run_parallel(args)
    command = "hwprof profile " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    names = [args.model] if args.model else list(DEFAULT_PAIR)
    batch = args.batch or (1 if args.model else 8)
    for name in names:  # fail fast (exit 2) on a bad name or spec, before anything is measured
        zoo.build(name, device="meta")
    if args.input:
        parse_spec(args.input)
    ceilings = measure_ceilings(resolve_device(args.device), refresh=args.refresh_ceilings,
                                cache_dir=args.ceilings_cache, quick=args.quick)
    profiles = []
    for name in tqdm(names, desc="profiling", unit="model", disable=len(names) < 2, file=sys.stderr):
        profiles.append(_run_one(name, args, batch, ceilings))
        ceilings = profiles[-1].ceilings   # re-measured when the cached ones were contradicted
    texts = [_show(p, args) for p in profiles]
    if not args.model:
        comp = comparison_lines(profiles[0], profiles[1])
        texts.append("== MobileNetV1 vs its dense twin (measured in this run)\n" + "\n".join(comp))
    print("\n\n".join(texts))
    if args.out:
        out = Path(args.out)
        for p in profiles:
            p.save(out / p.config["model"] if len(profiles) > 1 else out, command=command)
        if not args.model:
            write_atomic(out / "comparison.md", "# MobileNetV1 vs its dense twin\n\n"
                         + "\n".join(f"- {line}" for line in comp) + f"\n\nCommand: `{command}`\n")
        print(f"wrote {out}/", file=sys.stderr)
    return 0


def _run_parallel(args: argparse.Namespace) -> int:
    """``torchrun ... -m hwprof profile MODEL --parallel ddp|fsdp`` (:func:`hwprof.cli.parallel.profile_command`)."""
    from hwprof.cli.parallel import profile_command
    from hwprof.errors import HwprofError
    from hwprof.measuring.records import MeasureConfig

    if not args.model:
        raise HwprofError("--parallel needs a MODEL (the default MobileNetV1 pair runs on one device)")
    return profile_command(args, MeasureConfig(
        device=args.device, mode=args.mode, optimizer=args.optimizer, per_layer=True, per_op=True,
        batch=args.batch or 1, dtype=args.dtype, channels_last=args.channels_last,
        budget_s=0.1 if args.quick else args.budget))
