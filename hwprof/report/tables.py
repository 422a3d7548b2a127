"""Render DataFrames as text/CSV/JSON/Markdown (files are written by :mod:`hwprof.files`)."""

from __future__ import annotations

import json
import math
from typing import Any

import pandas as pd

from hwprof.files import to_jsonable

__all__ = ["FORMATS", "render", "human"]


FORMATS = ("table", "csv", "json", "md")


def human(x: float | int | None, unit: str = "", base: int = 1000) -> str:
    """12_345_678 -> '12.35M' (base 1000) or with base=1024 '11.77Mi'. None/NaN -> '-'."""
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
        return f"{int(x)}{unit}"
    return f"{v:.2f}{p}{unit}"


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


