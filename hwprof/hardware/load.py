"""How busy the machine was while ceilings were measured: the load average and other processes' CPU time.

A ceiling is the best of several interleaved rounds, and rounds that disagree flag it
(:data:`hwprof.hardware.ceilings.AGREEMENT_BOUND`). A *steady* load (another job running the
whole time, e.g. a second ``hwprof ceilings --refresh``) slows every round alike, so the rounds
agree on a roof that is half the real one. What sees it is the CPU time other processes used
meanwhile: ``psutil``'s system-wide busy CPU seconds (user, nice, system, irq, softirq) minus this
process's own, over the measurement's wall time, is ``other_cpus``, the cores they kept busy on
average. The part of it that could not run on cores the measurement left free
(``cpus - threads``), per core the measurement runs on, is ``competing_share``; above
:data:`LOAD_BOUND` the measurement is not cached (:func:`competed`). The 1-minute load averages
before and after (``os.getloadavg``) are recorded beside it, as a second, coarser witness.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["LOAD_BOUND", "MIN_JUDGED_S", "LoadMeter", "system_load", "load_record", "competed", "load_note", "quiet_load"]

LOAD_BOUND = 0.10
"""Largest ``competing_share`` of a CPU measurement that is still cached: other processes took at
most a tenth of the cores it ran on, so a roof is at most about 10% low (the rounds' own bound)."""

MIN_JUDGED_S = 0.5
"""Shortest measurement whose load is judged: CPU times tick in 10 ms steps, so over a shorter one
(a test's fake trials) a single tick of another process reads as a large share."""

LoadMeter = Callable[[], Callable[[], dict[str, Any]]]
"""``start()`` begins watching the machine; the function it returns stops and gives the
:func:`load_record` of the interval."""


def load_record(other_cpu_s: float, wall_s: float, cpus: int, threads: int,
                loadavg_before: float | None = None, loadavg_after: float | None = None) -> dict[str, Any]:
    """The load of an interval of ``wall_s`` seconds in which other processes used ``other_cpu_s``
    CPU seconds, on a machine of ``cpus`` CPUs, measured with ``threads`` threads (module docstring)."""
    wall = max(float(wall_s), 1e-9)
    other = max(0.0, float(other_cpu_s)) / wall
    used = max(1, min(threads, cpus))
    spare = max(0, cpus - threads)
    return {"wall_s": wall, "cpus": cpus, "threads": threads, "other_cpus": other,
            "competing_share": max(0.0, other - spare) / used,
            "loadavg_1m_before": loadavg_before, "loadavg_1m_after": loadavg_after}


def quiet_load() -> Callable[[], dict[str, Any]]:
    """A :data:`LoadMeter` that always sees an idle machine (nothing else running)."""
    import torch

    t0 = time.monotonic()
    return lambda: load_record(0.0, time.monotonic() - t0, os.cpu_count() or 1, torch.get_num_threads())


def _loadavg() -> float | None:
    try:
        return float(os.getloadavg()[0])
    except (OSError, AttributeError):     # not on every platform
        return None


def _busy_s(times: Any) -> float:
    """Busy CPU seconds of ``psutil.cpu_times()`` (every field but idle, iowait and steal; guest
    time is inside user time already)."""
    return sum(float(getattr(times, f, 0.0)) for f in ("user", "nice", "system", "irq", "softirq"))


def system_load() -> Callable[[], dict[str, Any]]:
    """The real :data:`LoadMeter`: ``psutil`` CPU times of the whole system and of this process,
    read at the start and when the returned function is called. Without psutil (optional on a
    device image) only the load averages are recorded and the load is not judged."""
    import torch
    try:
        import psutil
    except ImportError:
        return _loadavg_only(torch.get_num_threads())
    proc = psutil.Process()
    t0, sys0, me0, avg0 = time.monotonic(), _busy_s(psutil.cpu_times()), proc.cpu_times(), _loadavg()

    def stop() -> dict[str, Any]:
        wall = time.monotonic() - t0
        me1 = proc.cpu_times()
        mine = (me1.user + me1.system) - (me0.user + me0.system)
        other = _busy_s(psutil.cpu_times()) - sys0 - mine
        return load_record(other, wall, psutil.cpu_count() or os.cpu_count() or 1, torch.get_num_threads(),
                           avg0, _loadavg())
    return stop


def _loadavg_only(threads: int) -> Callable[[], dict[str, Any]]:
    t0, avg0 = time.monotonic(), _loadavg()
    return lambda: {"wall_s": time.monotonic() - t0, "cpus": os.cpu_count() or 1, "threads": threads,
                    "other_cpus": None, "competing_share": None, "loadavg_1m_before": avg0,
                    "loadavg_1m_after": _loadavg(), "note": "psutil not installed: other processes not seen"}


def competed(load: Mapping[str, Any] | None) -> bool:
    """Other processes took more than :data:`LOAD_BOUND` of the cores the measurement ran on (over at
    least :data:`MIN_JUDGED_S` seconds)."""
    share, wall = (load or {}).get("competing_share"), (load or {}).get("wall_s")
    return (isinstance(share, (int, float)) and math.isfinite(share) and share > LOAD_BOUND
            and isinstance(wall, (int, float)) and wall >= MIN_JUDGED_S)


def load_note(load: Mapping[str, Any]) -> str:
    """One sentence on a competed measurement: what the other processes used, against the bound."""
    avg = load.get("loadavg_1m_after")
    return (f"other processes kept {load['other_cpus']:.2f} of {load['cpus']} CPUs busy while the ceilings were "
            f"measured with {load['threads']} threads ({100 * load['competing_share']:.0f}% of the cores the "
            f"measurement ran on, bound {100 * LOAD_BOUND:.0f}%"
            + (f"; 1-minute load average {avg:.2f}" if isinstance(avg, (int, float)) else "")
            + "): every roof may be low by as much, so they are not cached")
