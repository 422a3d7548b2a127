"""Render DataFrames as text/CSV/JSON/Markdown and write result files atomically."""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

__all__ = ["FORMATS", "render", "write_atomic", "write_json_atomic", "to_jsonable", "human"]

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


def to_jsonable(obj: Any) -> Any:
    """Recursively turn numpy/pandas/torch scalars and NaN into JSON-safe values (NaN -> None)."""
    if isinstance(obj, Mapping):
        return {str(k): to_jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [to_jsonable(v) for v in obj]
    if isinstance(obj, pd.DataFrame):
        return to_jsonable(obj.reset_index().to_dict(orient="records"))
    if hasattr(obj, "item") and callable(obj.item) and getattr(obj, "ndim", 1) == 0:
        obj = obj.item()
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    return str(obj)


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


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` to a temp file beside ``path`` then rename it into place (no half-written files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data.encode() if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> Path:
    return write_atomic(path, json.dumps(to_jsonable(obj), indent=1) + "\n")
