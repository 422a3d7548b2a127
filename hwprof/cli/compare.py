"""`hwprof compare DIR DIR [...]`: saved profiles joined per layer (hwprof.compare): time and
speedup, achieved FLOP/s, bound and efficiency in each run, the layers whose bound changed, and
with ``--out DIR`` the tables and a roofline of each layer's move (an arrow per layer)."""

from __future__ import annotations

import argparse

from hwprof.cli.common import add_force_option, command_line, out_folder, path_arg, whole_number
from hwprof.compare import compare, load_run, summary_lines, table, whole_table
from hwprof.errors import HwprofError
from hwprof.report.tables import FORMATS, render


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("runs", nargs="+", metavar="DIR", type=path_arg, help="two or more folders written by `hwprof profile --out`")
    p.add_argument("--labels", default=None, help="comma-separated names of the runs (default: the folder names)")
    p.add_argument("--top", type=whole_number(1), default=25, help="rows of the layer table, by the first run's time (default 25)")
    p.add_argument("--format", choices=FORMATS, default="table", help="what to print (default: table)")
    p.add_argument("--out", metavar="DIR", help="also write compare.csv, whole.csv, compare.md, compare.json and the "
                   "roofline plots of the moves into the folder DIR (complete or not at all)")
    add_force_option(p)


def run(args: argparse.Namespace) -> int:
    labels = args.labels.split(",") if args.labels else [None] * len(args.runs)
    if len(labels) != len(args.runs):
        raise HwprofError(f"--labels names {len(labels)} runs, but {len(args.runs)} folders are given")
    c = compare([load_run(d, lab) for d, lab in zip(args.runs, labels, strict=True)])
    if args.format == "table":
        print("\n".join([render(whole_table(c), "table"), "", render(table(c, args.top), "table"), "",
                         *summary_lines(c)]))
    else:
        print(render(c.layers, args.format).rstrip("\n"))
    with out_folder(args.out) as d:   # the tables and plots, with the manifest of every --out folder
        if d is not None:
            c.save(d, command=command_line(), top=args.top)
    return 0
