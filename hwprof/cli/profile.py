"""`hwprof profile [MODEL]`: per-layer roofline records; with no MODEL, the built-in default:
MobileNetV1 (seed 000) against its dense twin, side by side, on the best available device."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path

from tqdm import tqdm

from hwprof.cli.common import (
    MODEL_HELP,
    add_generation_options,
    add_input_options,
    add_output_options,
    build_model,
)
from hwprof.cli.generation import batch_list, run_profile
from hwprof.device import resolve_device
from hwprof.files import write_atomic
from hwprof.hardware.ceilings import Ceilings, measure_ceilings
from hwprof.profiler import Profile, profile
from hwprof.report.profile_report import comparison_lines, summary_lines, terminal_table
from hwprof.report.tables import render
from hwprof.spec import parse_spec

DEFAULT_PAIR = ("mobilenet_v1", "mobilenet_v1_dense")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None, help=MODEL_HELP + " (default: MobileNetV1 vs its dense twin)")
    add_input_options(p)
    p.add_argument("--batch", type=batch_list, default=None,
                   help="batch size (default 1; 8 for the default pair); with --generate a list, e.g. 1,4,16,64")
    add_generation_options(p)
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
    add_output_options(p)


def _run_one(name: str, args: argparse.Namespace, batch: int, ceilings: Ceilings) -> Profile:
    model, spec = build_model(args, name)
    return profile(model, spec, device=args.device, dtype=args.dtype, mode=args.mode,
                   optimizer=args.optimizer, channels_last=args.channels_last, batch=batch,
                   budget_s=0.1 if args.quick else args.budget, ceilings=ceilings, name=name,
                   progress=True)


def _show(p: Profile, args: argparse.Namespace) -> str:
    if args.format != "table":
        return render(p.layers, args.format)
    head = f"== {p.config['model']} on {p.ceilings.device_name}: {p.config['mode']}, {p.config['dtype']}, batch {p.config['batch']}"
    return "\n".join([head, render(terminal_table(p, top=args.top), "table"), "", *summary_lines(p)])


def run(args: argparse.Namespace) -> int:
    if args.generate:
        return run_profile(args)
    if args.batch and len(args.batch) > 1:
        from hwprof.errors import HwprofError
        raise HwprofError("a list of batch sizes needs --generate (one profile runs one batch size)")
    command = "hwprof profile " + " ".join(shlex.quote(a) for a in sys.argv[2:])
    names = [args.model] if args.model else list(DEFAULT_PAIR)
    batch = args.batch[0] if args.batch else (1 if args.model else 8)
    for name in names:  # fail fast (exit 2) on a bad name or spec, before anything is measured
        _, spec = build_model(args, name, device="meta")
        parse_spec(spec)
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
