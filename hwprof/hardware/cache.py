"""The ceilings cache on disk: a file validated on read, a lock beside it, an unusable folder survived.

Several hwprof processes may share one cache folder (a user's terminals, a CI machine's jobs).
:class:`CacheFile` makes that safe:

* **read**: the JSON must have the shape of a ceilings record (:func:`ceilings_problem`: an
  object, names as strings, every rate a positive finite number); a damaged file (garbage, a
  list, ``{"flop_per_s": "fast"}``, negative roofs, a folder in its place) is ignored with one
  warning naming the command that measures it again;
* **lock**: measuring and writing happen under a file lock (``filelock``) beside the file, so a
  second process that wants to measure waits for the first and can then reuse its fresh result
  (:meth:`CacheFile.fresh_since`) instead of competing with it for the cores;
* **an unusable folder** (read-only, a file where the folder should be, not creatable) is one
  warning: the ceilings are measured and used, and not cached. Never a traceback.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from hwprof.files import write_json_atomic

__all__ = ["CacheFile", "ceilings_problem", "LOCK_TIMEOUT_S", "now"]

log = logging.getLogger(__name__)
T = TypeVar("T")

LOCK_TIMEOUT_S = 900.0
"""How long a process waits for another one measuring the same ceilings (a full CUDA
measurement takes a few minutes) before it measures without caching."""


def _rate(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v > 0


def _number_or_none(v: Any) -> bool:
    return v is None or (isinstance(v, (int, float)) and not isinstance(v, bool))


def _roofs_problem(d: Mapping[str, Any]) -> str | None:
    roofs = d.get("flop_per_s")
    if not isinstance(roofs, dict) or not roofs:
        return f"flop_per_s is {type(roofs).__name__ if roofs is not None else 'missing'}, not roofs by name"
    for key, v in roofs.items():
        if v is not None and not _rate(v):
            return f"flop_per_s[{key!r}] is {v!r}, not a positive rate"
    if not any(_rate(v) for v in roofs.values()):
        return "no roof has a rate"
    for key in ("bytes_per_s", "op_overhead_s"):
        if d.get(key) is not None and not _rate(d[key]):
            return f"{key} is {d[key]!r}, not a positive number"
    return None


def _levels_problem(d: Mapping[str, Any]) -> str | None:
    for key in ("levels", "sweep", "trials"):
        items = d.get(key, [])
        if items is None:
            continue
        if not isinstance(items, list) or not all(isinstance(x, dict) for x in items):
            return f"{key} is not a list of records"
    for lv in d.get("levels") or []:
        if not isinstance(lv.get("name"), str):
            return "a memory level without a name"
        for key in ("bytes_per_s", "capacity_bytes", "reported_bytes"):
            if lv.get(key) is not None and not _rate(lv[key]):
                return f"level {lv['name']!r}: {key} is {lv[key]!r}, not a positive number"
    for p in d.get("sweep") or []:
        if not _rate(p.get("working_set_bytes")) or not all(_number_or_none(p.get(k)) for k in
                                                            ("time_s", "bytes_per_s", "raw_bytes_per_s")):
            return "a sweep point without numbers"
    for t in d.get("trials") or []:
        if not isinstance(t.get("mode"), str) or not all(_number_or_none(t.get(k)) and t.get(k) is not None
                                                         for k in ("round", "size", "rate_per_s", "time_s")):
            return "a trial without its mode, round, size, rate and time"
    return None


def ceilings_problem(d: Any) -> str | None:
    """What is wrong with ``d`` as the JSON of a ceilings record (``Ceilings.to_dict``), or None:
    an object with ``device_type`` and ``device_name`` strings, roofs by name (at least one a
    positive finite FLOP/s; NaN is saved as null), positive bandwidths and overhead, memory levels,
    sweep points and trials as records of numbers, ``spread`` numbers by name, ``flagged`` names."""
    if not isinstance(d, dict):
        return f"a JSON {type(d).__name__}, not an object"
    for key in ("device_type", "device_name"):
        if not isinstance(d.get(key), str):
            return f"{key} is {d.get(key)!r}, not a name"
    problem = _roofs_problem(d) or _levels_problem(d)
    if problem:
        return problem
    spread, flagged = d.get("spread") or {}, d.get("flagged") or []
    if not isinstance(spread, dict) or not all(_number_or_none(v) for v in spread.values()):
        return "spread is not numbers by name"
    if not isinstance(flagged, list) or not all(isinstance(f, str) for f in flagged):
        return "flagged is not a list of names"
    if d.get("threads") is not None and not (isinstance(d["threads"], int) and d["threads"] > 0):
        return f"threads is {d['threads']!r}"
    return None


class CacheFile:
    """One cache file (``path``) of measured ceilings of ``device``, its lock, and what to say when
    either cannot be used (each said once, in one line)."""

    def __init__(self, path: Path, refresh_hint: str) -> None:
        self.path = path
        self.refresh_hint = refresh_hint
        self.usable = True

    def _unusable(self, why: str) -> None:
        if self.usable:
            log.warning("ceilings cache %s is not usable (%s): measuring, and not caching", self.path.parent, why)
        self.usable = False

    def read(self, from_dict: Callable[[Any], T]) -> T | None:
        """The cached record (``from_dict`` of the JSON), or None: absent, or damaged (one warning)."""
        try:
            if self.path.is_dir():
                self._unusable(f"{self.path.name} is a folder, not a file; remove it")
                return None
            if not self.path.exists():
                return None
            d = json.loads(self.path.read_text())
            problem = ceilings_problem(d)
            if problem is None:
                return from_dict(d)
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            problem = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        except OSError as e:
            problem = e.strerror or str(e)
        log.warning("ignoring damaged ceilings cache %s (%s); measuring (`%s` measures and replaces it)",
                    self.path, problem, self.refresh_hint)
        return None

    def fresh_since(self, t: float) -> bool:
        """The file was written at or after ``t`` (``time.time()``): by another process that held the lock."""
        try:
            return self.path.is_file() and self.path.stat().st_mtime >= t
        except OSError:
            return False

    @contextlib.contextmanager
    def locked(self) -> Iterator[bool]:
        """Hold the cache's lock for the block (waiting, with one line, while another process does);
        yields False, with one line, when the lock cannot be had (unusable folder, timeout)."""
        import filelock

        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            lock = filelock.FileLock(str(self.path) + ".lock")
            try:
                lock.acquire(timeout=0)
            except filelock.Timeout:
                log.warning("waiting for another hwprof that is measuring these ceilings (lock %s)", lock.lock_file)
                lock.acquire(timeout=LOCK_TIMEOUT_S)
        except filelock.Timeout:
            log.warning("gave up waiting %.0f s for the ceilings cache lock %s.lock: measuring, and not caching",
                        LOCK_TIMEOUT_S, self.path)
            self.usable = False
            yield False
            return
        except OSError as e:
            self._unusable(e.strerror or str(e))
            yield False
            return
        try:
            yield True
        finally:
            lock.release()

    def write(self, record: Mapping[str, Any]) -> bool:
        """Write ``record`` atomically; False, with one line, when the folder does not take it."""
        if not self.usable:
            return False
        if self.path.is_dir():
            self._unusable(f"{self.path.name} is a folder, not a file; remove it")
            return False
        try:
            write_json_atomic(self.path, record)
        except OSError as e:
            self._unusable(e.strerror or str(e))
            return False
        return True



def now() -> float:
    """``time.time()``, the clock file modification times are kept in (:meth:`CacheFile.fresh_since`)."""
    return time.time()
