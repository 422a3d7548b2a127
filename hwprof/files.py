"""Result files: atomic writes (a temp file beside the target, renamed into place) and JSON-safe values.

Below every stage: measuring, hardware, memory, the join and the reports all write through it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import pandas as pd

__all__ = ["write_atomic", "write_json_atomic", "to_jsonable", "atomic_dir", "read_json_record"]

log = logging.getLogger(__name__)
T = TypeVar("T")


def read_json_record(path: Path, from_dict: Callable[[Any], T], what: str) -> T | None:
    """``from_dict`` of the JSON in ``path`` (a cache file); None when it does not exist, or when it
    cannot be read or parsed (logged: ``ignoring unreadable <what> <path> (<error>); measuring``)."""
    if not path.exists():
        return None
    try:
        return from_dict(json.loads(path.read_text()))
    except (OSError, ValueError, TypeError, KeyError) as e:
        log.warning("ignoring unreadable %s %s (%s); measuring", what, path, e)
        return None


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


def write_atomic(path: str | os.PathLike[str], data: str | bytes) -> Path:
    """Write ``data`` to a temp file beside ``path`` then rename it into place (no half-written files)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
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
    """:func:`write_atomic` of ``obj`` as indented JSON (through :func:`to_jsonable`)."""
    return write_atomic(path, json.dumps(to_jsonable(obj), indent=1) + "\n")


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Build an output folder completely or not at all.

    Yields a fresh temporary sibling folder (``.<name>.tmp-XXXX``) to write into; on a clean exit
    it replaces ``path`` (an existing folder of that name is moved aside first and removed only
    once the new one is in place); on any exception, KeyboardInterrupt included, the temporary
    folder is removed and ``path`` is left as it was. ``path`` that exists and is not a folder
    raises ``NotADirectoryError`` before anything is written."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"{target} exists and is not a folder")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f".{target.name}.old-", dir=target.parent))
        os.replace(target, old / target.name)
    try:
        os.replace(tmp, target)
    except BaseException:
        if old is not None:
            os.replace(old / target.name, target)
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    os.chmod(target, 0o777 & ~_umask())


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
