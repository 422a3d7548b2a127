"""`hwprof profile [MODEL]`: per-layer roofline records; with no MODEL, the built-in default:
MobileNetV1 (seed 000) against its dense twin, side by side, on the best available device.

Order of work: every model is built and run once on the target device, dtype and mode (one
repetition of each timed phase) before anything long, so a broken model or input fails in
seconds, naming the layer; then the ceilings, then the profiles. The default pair's time ratio
comes from :func:`hwprof.measuring.paired.time_paired` (the two models alternate, A B A B ...),
printed as the median of the per-pair ratios with their q25-q75 spread: the two profiles' own
whole-model times are measured minutes apart, so their ratio moves with the machine's load.

``--out DIR``: one model writes its profile files into DIR; the default pair writes
``DIR/mobilenet_v1/``, ``DIR/mobilenet_v1_dense/`` and ``DIR/comparison.md``; both add
``DIR/manifest.json`` (see :mod:`hwprof.cli.common`).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hwprof.cli.common import (
    MODEL_HELP,
    add_amp_option,
    add_generation_options,
    add_input_options,
    add_output_options,
    build_model,
    command_line,
    dtype_arg,
    out_folder,
    path_arg,
    positive_seconds,
    progress_enabled,
    whole_number,
)
from hwprof.cli.generation import batch_list, run_profile
from hwprof.cli.parallel import add_launch_options
from hwprof.device import resolve_device
from hwprof.files import write_atomic
from hwprof.hardware.ceilings import Ceilings, measure_ceilings
from hwprof.profiler import Profile, profile
from hwprof.report.profile_report import comparison_lines, summary_lines, terminal_table
from hwprof.report.tables import human, render
from hwprof.spec import parse_spec

DEFAULT_PAIR = ("mobilenet_v1", "mobilenet_v1_dense")
TWIN_HEADER = "== MobileNetV1 vs its dense twin (measured in this run)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default=None, help=MODEL_HELP + " (default: MobileNetV1 vs its dense twin)")
    add_input_options(p)
    p.add_argument("--batch", type=batch_list, default=None,
                   help="batch size (default 1; 8 for the default pair); with --generate a list, e.g. 1,4,16,64")
    add_generation_options(p)
    p.add_argument("--device", default="auto", help="auto|cpu|cuda (auto: cuda if available)")
    p.add_argument("--dtype", type=dtype_arg, default=None, help="fp32|bf16|fp16 (default: the model's)")
    add_amp_option(p)
    p.add_argument("--mode", choices=("inference", "train"), default="inference")
    p.add_argument("--optimizer", default=None, choices=("sgd", "momentum", "adam", "adamw"),
                   help="train mode: also step this optimizer")
    p.add_argument("--channels-last", action="store_true", help="run in channels_last memory format")
    p.add_argument("--budget", type=positive_seconds, default=1.0, help="timing budget per phase, seconds (default 1)")
    p.add_argument("--top", type=whole_number(1), default=25, help="rows of the terminal table, by time (default 25)")
    p.add_argument("--ceilings-cache", default=None, metavar="DIR", type=path_arg,
                   help="where measured ceilings are cached (default $HWPROF_CACHE_DIR/ceilings or the user cache)")
    p.add_argument("--refresh-ceilings", action="store_true", help="re-measure the ceilings")
    p.add_argument("--quick", action="store_true",
                   help="smoke run: quick (small) ceilings and a 0.1 s timing budget; numbers are not ceilings")
    p.add_argument("--no-html", action="store_true",
                   help="with --out: skip report.html (the interactive page; needs plotly: pip install 'hwprof[html]')")
    add_launch_options(p)
    add_output_options(p)


@dataclass
class _Model:
    name: str
    module: nn.Module
    spec: str


def _budget_s(args: argparse.Namespace) -> float:
    return 0.1 if args.quick else float(args.budget)


def _build_and_run_once(name: str, args: argparse.Namespace, batch: int) -> _Model:
    """Build ``name`` and run it once on the target device, dtype, format and mode (one repetition
    of each phase, no per-layer/per-op/trace pass): a model or input that fails does so here, in
    seconds, as ``InputShapeError`` naming the layer (or ``MeasurementError``), before the ceilings."""
    from hwprof.measuring.runner import measure

    model, spec = build_model(args, name)
    measure(model, spec, device=args.device, mode=args.mode, optimizer=args.optimizer, batch=batch,
            dtype=args.dtype, channels_last=args.channels_last, budget_s=0.0, warmup=0, min_reps=1, max_reps=1,
            alloc_trace=False, amp=args.amp)
    return _Model(name, model, spec)


def _run_one(m: _Model, args: argparse.Namespace, batch: int, ceilings: Ceilings) -> Profile:
    return profile(m.module, m.spec, device=args.device, dtype=args.dtype, mode=args.mode,
                   optimizer=args.optimizer, channels_last=args.channels_last, batch=batch,
                   budget_s=_budget_s(args), ceilings=ceilings, name=m.name, progress=progress_enabled(), amp=args.amp)


def _show(p: Profile, args: argparse.Namespace) -> str:
    if args.format != "table":
        return render(p.layers, args.format)
    amp = f" (autocast {p.config['amp']})" if p.config.get("amp") else ""
    head = (f"== {p.config['model']} on {p.ceilings.device_name}: {p.config['mode']}, {p.config['dtype']}{amp}, "
            f"batch {p.config['batch']}")
    return "\n".join([head, render(terminal_table(p, top=args.top), "table"), "", *summary_lines(p)])


def run(args: argparse.Namespace) -> int:
    from hwprof.cli.measure import check_optimizer

    check_optimizer(args)
    if args.generate:
        return run_profile(args)
    if args.batch and len(args.batch) > 1:
        from hwprof.errors import HwprofError
        raise HwprofError("a list of batch sizes needs --generate (one profile runs one batch size)")
    if args.parallel:
        return _run_parallel(args)
    names = [args.model] if args.model else list(DEFAULT_PAIR)
    batch = args.batch[0] if args.batch else (1 if args.model else 8)
    for name in names:  # fail fast (exit 2) on a bad name or spec, before anything is built for real
        _, spec = build_model(args, name, device="meta")
        parse_spec(spec)
    models = [_build_and_run_once(name, args, batch) for name in names]
    ceilings = measure_ceilings(resolve_device(args.device), refresh=args.refresh_ceilings,
                                cache_dir=args.ceilings_cache, quick=args.quick)
    profiles = []
    for m in models:
        profiles.append(_run_one(m, args, batch, ceilings))
        ceilings = profiles[-1].ceilings   # re-measured when the cached ones were contradicted
    texts = [_show(p, args) for p in profiles]
    comp: list[str] = []
    if not args.model:
        comp = twin_lines(profiles[0], profiles[1], _time_twins(models, args, batch), args.mode == "train",
                          threads=torch.get_num_threads())
        texts.append(TWIN_HEADER + "\n" + "\n".join(comp))
    print("\n\n".join(texts))
    _save(args, profiles, comp)
    return 0


def _save(args: argparse.Namespace, profiles: list[Profile], comp: list[str]) -> None:
    command = command_line()
    with out_folder(args.out) as d:
        if d is None:
            return
        for p in profiles:
            p.save(d / p.config["model"] if len(profiles) > 1 else d, command=command, html=not args.no_html)
        if comp:
            write_atomic(d / "comparison.md", "# MobileNetV1 vs its dense twin\n\n"
                         + "\n".join(f"- {line}" for line in comp) + f"\n\nCommand: `{command}`\n")


def _time_twins(models: list[_Model], args: argparse.Namespace, batch: int) -> Any:
    """The two models timed in alternation (:func:`~hwprof.measuring.paired.time_paired`), on the
    profile's device, dtype, memory format and mode; reference = MobileNetV1."""
    from hwprof.measuring.paired import model_call, time_paired
    from hwprof.placement import model_float_dtype
    from hwprof.spec import as_input_tuple, parse_dtype

    dev = resolve_device(args.device)
    calls = {}
    for m in models:
        dtype = parse_dtype(args.dtype) if args.dtype else model_float_dtype(m.module)
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        module = m.module.to(device=dev, dtype=dtype, memory_format=fmt)  # type: ignore[call-overload]
        xs = tuple(x.contiguous(memory_format=fmt) if isinstance(x, torch.Tensor) and x.dim() == 4 else x
                   for x in as_input_tuple(m.spec, batch=batch, dtype=dtype, device=dev))
        calls[m.name] = model_call(module, xs, train=args.mode == "train")
    budget = _budget_s(args)
    return time_paired(calls, device=dev, warmup=1, min_rounds=3 if args.quick else 5, budget_s=2 * budget)


def twin_lines(sep: Profile, dense: Profile, paired: Any, train: bool, threads: int = 1) -> list[str]:
    """The comparison lines: the depthwise layers' share (:func:`comparison_lines`, from the
    profile of MobileNetV1), then the twin's FLOPs ratio against its paired time ratio:
    median of the per-pair ratios dense / MobileNetV1, with their q25-q75 spread; and a warning
    when the CPU was contended (:func:`_contention_lines`; ``threads``: this run's torch threads)."""
    lines = [ln for ln in comparison_lines(sep, dense) if not ln.startswith("Dense twin:")]
    a, b = sep.config["model"], dense.config["model"]
    r = paired.ratio(b)
    ta, tb = paired.stats(a).median_s, paired.stats(b).median_s
    fa, fb = float(sep.summary["flops"]), float(dense.summary["flops"])
    what = "forward + backward" if train else "forward"
    lines.append(
        f"Dense twin: {fb / fa:.1f}x the FLOPs of MobileNetV1 for {r.median:.1f}x the time "
        f"(median of {r.n} alternating pairs, q25-q75 {r.q25:.2f}-{r.q75:.2f}x; {what} {tb * 1e3:.2f} ms vs "
        f"{ta * 1e3:.2f} ms); achieved {human(fb / tb)}FLOP/s vs {human(fa / ta)}FLOP/s.")
    return lines + _contention_lines(paired, threads)


def _contention_lines(paired: Any, threads: int) -> list[str]:
    """A warning when other processes competed for the CPU during the paired timing: the 1-minute
    load average, minus this run's own ``threads``, at least 1 (one other busy process or more).
    Pairing cancels a load that drifts; a load that changes the models' relative cost (each of
    MobileNetV1's many small ops waits for the scheduler) it cannot."""
    loads = [v for v in paired.load_average if v is not None]
    if paired.device != "cpu" or not loads or max(loads) - threads < 1:
        return []
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [f"Warning: the 1-minute load average was {max(loads):.1f} on {cpus} CPUs during this comparison (this "
            f"run's {threads} threads included): other processes competed for the cores. Pairing cancels a load "
            "that drifts, not one that changes the models' relative cost; rerun on a quiet machine."]


def _run_parallel(args: argparse.Namespace) -> int:
    """``torchrun ... -m hwprof profile MODEL --parallel ddp|fsdp`` (:func:`hwprof.cli.parallel.profile_command`)."""
    from hwprof.cli.parallel import profile_command
    from hwprof.errors import HwprofError
    from hwprof.measuring.records import MeasureConfig

    if not args.model:
        raise HwprofError("--parallel needs a MODEL (the default MobileNetV1 pair runs on one device)")
    return profile_command(args, MeasureConfig(
        device=args.device, mode=args.mode, optimizer=args.optimizer, per_layer=True, per_op=True,
        batch=args.batch[0] if args.batch else 1, dtype=args.dtype, channels_last=args.channels_last,
        budget_s=0.1 if args.quick else args.budget))
