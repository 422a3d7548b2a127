"""`hwprof count MODEL --input 3x224x224 --batch 1 [--mode inference|train] [--backward]`: the
analytical per-layer table and totals (what each --format holds: :mod:`hwprof.report.count_table`).

``--mode`` sets the model's mode (inference: batch norm on running statistics, dropout off;
train: batch statistics, dropout active) and ``--backward`` adds the backward pass; the two are
independent, so ``--backward`` never changes the forward count. Defaults are the API's
(:func:`hwprof.count`): inference, forward only.
"""

from __future__ import annotations

import argparse

from torch import nn

from hwprof import zoo
from hwprof.cli.common import (
    add_amp_option,
    add_model_options,
    add_output_options,
    build_model,
    dtype_arg,
    emit_all,
)
from hwprof.cli.parallel import add_predict_options
from hwprof.counting.counter import MODES, count
from hwprof.device import resolve_device
from hwprof.report.count_table import count_outputs


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p, default_model="mobilenet_v1")
    p.add_argument("--mode", choices=MODES, default="inference",
                   help="inference (default: eval, BN running stats, no dropout) or train (BN batch stats, dropout)")
    p.add_argument("--backward", action="store_true", help="also count the backward pass (in either mode)")
    p.add_argument("--dtype", type=dtype_arg, default=None, help="fp32|bf16|fp16 (default: the model's)")
    add_amp_option(p)
    p.add_argument("--device", default="cpu", help="whose kernels to count: cpu (default) or cuda (needs CUDA)")
    p.add_argument("--all", action="store_true", help="list every module, not just leaves")
    p.add_argument("--list", action="store_true", help="list the zoo's model names and exit")
    add_predict_options(p)
    p.add_argument("--conventions", action="store_true",
                   help="hf: decoder-only models: the exact count beside 2N, 6N and 6N + 12LHQT, and where they differ")
    add_output_options(p)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name in zoo.names():
            e = zoo.ZOO[name]
            print(f"{name:22s} {e.input_spec:14s} {e.description}")
        return 0
    if args.conventions:
        from hwprof.cli.generation import run_conventions
        return run_conventions(args)
    model, spec = _build_without_memory(args)
    device = resolve_device(args.device)
    c = count(model, spec, backward=args.backward, mode=args.mode, batch=args.batch, dtype=args.dtype, device=device,
              amp=args.amp)
    outputs = count_outputs(c, args.model, spec, all_modules=args.all)
    if args.parallel:
        outputs["table"] += "\n\n" + _collectives(args, model, spec)
    emit_all(args, outputs)
    return 0


def _collectives(args: argparse.Namespace, model: nn.Module, spec: str) -> str:
    """The collectives per step of each ``--world-size`` (the FLOPs above are per rank: ``--batch`` is per rank)."""
    from hwprof.cli.parallel import prediction_lines, world_sizes
    from hwprof.distributed.predict import predict

    lines = [f"per rank: the counts above ({args.parallel} keeps each rank's arithmetic; --batch is per rank)"]
    for n in world_sizes(args):
        p = predict(model, spec, args.parallel, n, mode="train" if args.backward else args.mode, optimizer=None,
                    batch=args.batch, dtype=args.dtype or "fp32", device="cuda" if args.device.startswith("cuda")
                    else "cpu", count_flops=False)
        lines += ["", *prediction_lines(p)]
    return "\n".join(lines)


def _build_without_memory(args: argparse.Namespace) -> tuple[nn.Module, str]:
    """Counting needs shapes only: build on meta (counted with CPU kernels, see ``count``), so a
    2-billion-parameter VGG16 head costs no memory; a model whose construction cannot run on meta
    is built normally."""
    try:
        return build_model(args, device="meta")
    except zoo.UnknownModelError:
        raise
    except Exception:  # e.g. an initialiser without a meta kernel
        return build_model(args)
