"""`hwprof count MODEL --input 3x224x224 --batch 1 [--backward]`: the analytical per-layer table."""

from __future__ import annotations

import argparse

from hwprof import zoo
from hwprof.cli.common import add_model_options, add_output_options, emit
from hwprof.counting.counter import count
from hwprof.report.count_table import layer_table, totals_lines
from hwprof.report.tables import render


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_model_options(p, default_model="mobilenet_v1")
    p.add_argument("--backward", action="store_true", help="also count the backward pass")
    p.add_argument("--dtype", default=None, help="fp32|bf16|fp16 (default: the model's)")
    p.add_argument("--all", action="store_true", help="list every module, not just leaves")
    p.add_argument("--list", action="store_true", help="list the zoo's model names and exit")
    add_output_options(p)


def run(args: argparse.Namespace) -> int:
    if args.list:
        for name in zoo.names():
            e = zoo.ZOO[name]
            print(f"{name:22s} {e.input_spec:14s} {e.description}")
        return 0
    model, default_spec = zoo.build(args.model, device="meta" if args.model == "gpt_7b" else None)
    model.train(args.backward)  # inference counts in eval mode (BN uses running stats, no dropout)
    c = count(model, args.input or default_spec, backward=args.backward, batch=args.batch, dtype=args.dtype)
    table = layer_table(c, args.backward, all_modules=args.all)
    if args.format == "table":
        mode = "train mode, forward + backward" if args.backward else "eval mode, forward"
        text = f"{args.model} (input {args.input or default_spec}, batch {args.batch}, {mode})\n"
        text += render(table, "table") + "\n\n" + "\n".join(totals_lines(c, args.backward))
    else:
        text = render(table, args.format)
    emit(text, args.out, table, args.format)
    return 0
