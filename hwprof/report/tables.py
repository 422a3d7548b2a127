"""Render DataFrames as text/CSV/JSON/Markdown (files are written by :mod:`hwprof.files`)."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from hwprof.files import to_jsonable

__all__ = ["FORMATS", "MiB", "render", "human", "human_bytes", "mib"]


FORMATS = ("table", "csv", "json", "md")

#: hwprof's unit convention: bytes of memory in binary units (base 1024) labelled KiB, MiB, GiB;
#: FLOPs, MACs and rates in decimal SI prefixes (base 1000): 8.24GFLOPs, 97.21GFLOP/s.
MiB = 2**20


def human(x: float | int | None, unit: str = "", base: int = 1000, sep: str = "") -> str:
    """12_345_678 -> '12.35M' (base 1000) or with base=1024 '11.77Mi'; ``unit`` follows the
    prefix after ``sep``. None/NaN -> '-'."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    prefixes = ["", "K", "M", "G", "T", "P", "E"]
    v = float(x)
    i = 0
    while abs(v) >= base and i < len(prefixes) - 1:
        v /= base
        i += 1
    p = prefixes[i] + ("i" if base == 1024 and i else "")
    if i == 0 and float(x).is_integer():
        return f"{int(x)}{sep}{unit}"
    return f"{v:.2f}{sep}{p}{unit}"


def human_bytes(n: float | int | None) -> str:
    """Bytes of memory, labelled in binary units: 16_924_000 -> '16.14 MiB', 512 -> '512 B',
    1_302_000_000 -> '1.21 GiB'. None/NaN -> '-'."""
    return human(n, "B", 1024, sep=" ")


def mib(n: Any) -> str:
    """A byte count as a bare number of MiB for a column or line labelled "MiB":
    1_048_576 -> '1.0', 1.5e9 -> '1,430.5'. None/NA/NaN -> '-'."""
    if n is None or n is pd.NA or (isinstance(n, float) and math.isnan(n)):
        return "-"
    return f"{float(n) / MiB:,.1f}"


def render(df: pd.DataFrame, fmt: str = "table", index: bool = True) -> str:
    """Render ``df`` as 'table' (aligned text), 'csv', 'json' (records) or 'md' (pipe table)."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {FORMATS}")
    if fmt == "csv":
        return df.to_csv(index=index)
    if fmt == "json":
        return json.dumps(to_jsonable(df.reset_index() if index else df), indent=1)
    if fmt == "md":
        return _markdown(df.reset_index() if index else df)
    return df.to_string(index=index)


def _markdown(df: pd.DataFrame) -> str:
    cols = [str(c) for c in df.columns]
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join(" --- " for _ in cols) + "|"]
    for row in df.itertuples(index=False):
        lines.append("| " + " | ".join("" if _isnan(v) else str(v) for v in row) + " |")
    return "\n".join(lines) + "\n"


def _isnan(v: Any) -> bool:
    return isinstance(v, float) and math.isnan(v)


