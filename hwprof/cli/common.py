"""Options and output shared by the sub-commands (--format, --out, model/input resolution)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from hwprof.files import write_atomic
from hwprof.report.tables import FORMATS, render

__all__ = ["add_output_options", "add_model_options", "emit"]


def add_output_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--format", choices=FORMATS, default="table", help="output format (default: table)")
    p.add_argument("--out", metavar="PATH", help="also write the output to PATH (atomically)")


def add_model_options(p: argparse.ArgumentParser, default_model: str | None = None) -> None:
    p.add_argument("model", nargs="?" if default_model is not None else None, default=default_model,
                   help="zoo name (see `hwprof count --list`), torchvision:NAME, timm:NAME or package.module:factory")
    p.add_argument("--input", metavar="SPEC", help="input shape without batch, e.g. 3x224x224 (default: the model's)")
    p.add_argument("--batch", type=int, default=1, help="batch size (default 1)")


def emit(text: str, out: str | None, df: pd.DataFrame | None = None, fmt: str = "table") -> None:
    """Print ``text``; with ``out``, write the chosen format of ``df`` (or ``text``) to that path."""
    print(text)
    if out:
        body = render(df, fmt) if df is not None and fmt != "table" else text
        write_atomic(Path(out), body if body.endswith("\n") else body + "\n")
        print(f"wrote {out}", file=sys.stderr)
