"""`hwprof count MODEL --input 3x224x224 --batch 1 [--backward]`: the analytical per-layer table."""

from __future__ import annotations

import argparse

from torch import nn

from hwprof import zoo
from hwprof.cli.common import add_model_options, add_output_options, emit
from hwprof.cli.parallel import add_predict_options
from hwprof.counting.counter import count
from hwprof.device import resolve_device
from hwprof.report.count_table import layer_table, totals_lines
from hwprof.report.tables import render


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p, default_model="mobilenet_v1")
    p.add_argument("--backward", action="store_true", help="also count the backward pass")
    p.add_argument("--dtype", default=None, help="fp32|bf16|fp16 (default: the model's)")
    p.add_argument("--device", default="cpu", help="whose kernels to count: cpu (default) or cuda (needs CUDA)")
    p.add_argument("--all", action="store_true", help="list every module, not just leaves")
    p.add_argument("--list", action="store_true", help="list the zoo's model names and exit")
    add_predict_options(p)
    add_output_options(p)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name in zoo.names():
            e = zoo.ZOO[name]
            print(f"{name:22s} {e.input_spec:14s} {e.description}")
        return 0
    model, default_spec = _build_without_memory(args.model)
    model.train(args.backward)  # inference counts in eval mode (BN uses running stats, no dropout)
    device = resolve_device(args.device)
    c = count(model, args.input or default_spec, backward=args.backward, batch=args.batch, dtype=args.dtype,
              device=device)
    table = layer_table(c, args.backward, all_modules=args.all)
    if args.format == "table":
        mode = "train mode, forward + backward" if args.backward else "eval mode, forward"
        text = f"{args.model} (input {args.input or default_spec}, batch {args.batch}, {mode})\n"
        text += render(table, "table") + "\n\n" + "\n".join(totals_lines(c, args.backward))
        if args.parallel:
            text += "\n\n" + _collectives(args, model, args.input or default_spec)
    else:
        text = render(table, args.format)
    emit(text, args.out, table, args.format)
    return 0


def _collectives(args: argparse.Namespace, model: nn.Module, spec: str) -> str:
    """The collectives per step of each ``--world-size`` (the FLOPs above are per rank: ``--batch`` is per rank)."""
    from hwprof.cli.parallel import prediction_lines, world_sizes
    from hwprof.distributed.predict import predict

    lines = [f"per rank: the counts above ({args.parallel} keeps each rank's arithmetic; --batch is per rank)"]
    for n in world_sizes(args):
        p = predict(model, spec, args.parallel, n, mode="train" if args.backward else "inference", optimizer=None,
                    batch=args.batch, dtype=args.dtype or "fp32", device="cuda" if args.device.startswith("cuda")
                    else "cpu", count_flops=False)
        lines += ["", *prediction_lines(p)]
    return "\n".join(lines)


def _build_without_memory(name: str) -> tuple[nn.Module, str]:
    """Counting needs shapes only: build on meta (counted with CPU kernels, see ``count``), so a
    2-billion-parameter VGG16 head costs no memory; a model whose construction cannot run on meta
    is built normally."""
    try:
        return zoo.build(name, device="meta")
    except zoo.UnknownModelError:
        raise
    except Exception:  # e.g. an initialiser without a meta kernel
        return zoo.build(name)
