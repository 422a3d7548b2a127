"""Memory levels: bandwidth per level of the memory hierarchy from a working-set sweep.

The sweep times ``dst.copy_(src)`` over working sets ``W = 2 x buffer`` bytes (source + destination)
from a few KiB to beyond the last cache (:mod:`hwprof.hardware.ceilings` runs it). Each timing is
``t(W) = o + W / B(W)``: a fixed per-op cost ``o`` (dispatch, kernel launch: the "overhead" trial,
a one-element copy) plus the transfer at the bandwidth ``B`` of the level ``W`` fits in. So

    bytes_per_s(W)     = W / (t(W) - o)        (the bandwidth the time model max(F/P, W/B) + o uses)
    raw_bytes_per_s(W) = W / t(W)

and a point is *resolved* only when the transfer is at least half of the time (``t >= 2 o``):
below that the op's own cost hides the cache (on a CPU, working sets of a few tens of KiB).

Levels (:func:`memory_levels`), given the cache sizes the system reports (``reported_bytes``) and
main memory's bandwidth (the large-copy ceiling):

1. nominal ranges ``(C[i-1], C[i]]`` of the reported capacities; a level's plateau is the highest
   resolved bandwidth in its range (main memory's: the copy ceiling);
2. effective capacity of a cache: walking up its range, the last point before the bandwidth falls
   below the geometric mean of its own plateau and the next level's (where the curve steps
   down). A VM's share of a shared L3, or a cache partitioned between tenants, shows here as an
   effective capacity below the reported one;
3. each level's bandwidth is then the median of the resolved points in its effective range, and
   never below a larger level's (a smaller working set is never predicted slower).

A level without a resolved point keeps ``bytes_per_s`` None: placement (:func:`level_of`) then
uses the next larger level's bandwidth, a lower bound.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from hwprof.hardware.caches import CacheLevel

__all__ = ["MemoryLevel", "SweepPoint", "sweep_points", "memory_levels", "level_of", "level_spreads",
           "RESOLVED_FACTOR"]

RESOLVED_FACTOR = 2.0
"""A sweep point is resolved when its time is at least this many times the per-op overhead."""


@dataclass(frozen=True)
class SweepPoint:
    """One working set of the sweep: the best (lowest) median time over the rounds, its bandwidth
    with the op overhead taken out (NaN when unresolved), the raw bandwidth, and its level."""

    working_set_bytes: int
    time_s: float
    bytes_per_s: float
    raw_bytes_per_s: float
    level: str = ""


@dataclass(frozen=True)
class MemoryLevel:
    """One level of the memory hierarchy as the roofline uses it.

    ``capacity_bytes``: the effective capacity (None for main memory: unbounded);
    ``bytes_per_s``: its bandwidth (None when no sweep point resolved it);
    ``reported_bytes``: the capacity the system reports (None for main memory);
    ``source``: where the bandwidth comes from ("sweep", "copy", "datasheet", ...)."""

    name: str
    capacity_bytes: int | None
    bytes_per_s: float | None
    reported_bytes: int | None = None
    source: str = ""

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> MemoryLevel:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


def sweep_points(times_s: Mapping[int, float], overhead_s: float | None) -> list[SweepPoint]:
    """Per working set (bytes) -> best time: the points, ascending, with the formulas of the module docstring."""
    o = overhead_s if overhead_s is not None and overhead_s > 0 else 0.0
    out = []
    for ws, t in sorted(times_s.items()):
        resolved = t > 0 and t >= RESOLVED_FACTOR * o
        bw = ws / (t - o) if resolved and t > o else math.nan
        out.append(SweepPoint(int(ws), float(t), bw, ws / t if t > 0 else math.nan))
    return out


def _median(values: Sequence[float]) -> float | None:
    ok = [v for v in values if v == v]
    return float(statistics.median(ok)) if ok else None


def _max(values: Sequence[float]) -> float | None:
    ok = [v for v in values if v == v]
    return float(max(ok)) if ok else None


def _in(points: Sequence[SweepPoint], lo: float, hi: float) -> list[SweepPoint]:
    return [p for p in points if lo < p.working_set_bytes <= hi]


def _effective(points: Sequence[SweepPoint], lo: float, hi: int, threshold: float) -> int:
    """The last working set in (lo, hi] before the resolved bandwidth falls below ``threshold``
    (after having been above it); ``hi`` when it never falls."""
    last_above: int | None = None
    for p in _in(points, lo, hi):
        if p.bytes_per_s != p.bytes_per_s:
            continue
        if p.bytes_per_s >= threshold:
            last_above = p.working_set_bytes
        elif last_above is not None:
            return last_above
    return hi


def memory_levels(caches: Sequence[CacheLevel], points: Sequence[SweepPoint], main_bytes_per_s: float | None,
                  main_name: str = "DRAM", main_source: str = "copy") -> tuple[MemoryLevel, ...]:
    """The levels (caches ascending, then main memory) from the reported caches, the sweep points and
    main memory's bandwidth, by the three steps of the module docstring."""
    caps = [c.capacity_bytes for c in caches]
    nominal = [_max([p.bytes_per_s for p in _in(points, caps[i - 1] if i else 0, cap)])
               for i, cap in enumerate(caps)] + [main_bytes_per_s]
    eff: list[int] = []
    for i, cap in enumerate(caps):
        nxt = next((b for b in nominal[i + 1:] if b), None)
        lo = eff[-1] if eff else 0
        own = nominal[i]
        eff.append(_effective(points, lo, cap, math.sqrt(own * nxt)) if own and nxt else cap)
    bws: list[float | None] = [_median([p.bytes_per_s for p in _in(points, eff[i - 1] if i else 0, e)])
                               for i, e in enumerate(eff)] + [main_bytes_per_s]
    floor = main_bytes_per_s
    for i in range(len(bws) - 2, -1, -1):   # never slower than a larger level
        b = bws[i]
        if b is not None and floor is not None:
            bws[i] = max(b, floor)
        floor = bws[i] if bws[i] is not None else floor
    levels = [MemoryLevel(c.name, e, bws[i], c.capacity_bytes, "sweep") for i, (c, e) in enumerate(zip(caches, eff, strict=True))]
    return (*levels, MemoryLevel(main_name, None, main_bytes_per_s, None, main_source))


def level_spreads(levels: Sequence[MemoryLevel], rounds: Sequence[Sequence[SweepPoint]]) -> dict[str, float]:
    """Per cache level with a bandwidth: ``(best round - second-best round) / best round`` of the
    level's bandwidth measured in each round alone (median of that round's resolved points in the
    level's effective range); NaN with fewer than two rounds resolving it."""
    out = {}
    lo = 0
    for lv in levels:
        if lv.capacity_bytes is None:
            break
        if lv.bytes_per_s is not None:
            per_round = sorted((b for r in rounds if (b := _median([p.bytes_per_s for p in _in(r, lo, lv.capacity_bytes)]))),
                               reverse=True)
            out[lv.name] = (per_round[0] - per_round[1]) / per_round[0] if len(per_round) > 1 else math.nan
        lo = lv.capacity_bytes
    return out


def level_of(working_set_bytes: float, levels: Sequence[MemoryLevel]) -> tuple[str, float]:
    """(level name, bandwidth in bytes/s) for a working set: the smallest level that holds it (main
    memory when none does); a level without a bandwidth takes the next larger level's. NaN
    bandwidth when no level has one; ("", NaN) without levels or with a NaN working set."""
    if not levels or working_set_bytes != working_set_bytes:
        return "", math.nan
    i = next((j for j, lv in enumerate(levels) if lv.capacity_bytes is None or working_set_bytes <= lv.capacity_bytes),
             len(levels) - 1)
    bw = next((lv.bytes_per_s for lv in levels[i:] if lv.bytes_per_s), None)
    return levels[i].name, float(bw) if bw else math.nan
