"""Compute, communication and exposed communication per phase, from a profiled timeline.

The communication pass (:func:`hwprof.distributed.measure.comm_pass`) runs a few training
iterations under ``torch.profiler`` with each phase inside ``record_function("hwprof.phase:<phase>")``.
From the recorded events (:func:`spans_of`):

* **communication** spans are the backend's own records of each collective while it ran: on
  the CPU (gloo) the ``gloo:<collective>`` ranges its worker threads record around the
  algorithm; on CUDA (NCCL) the NCCL kernels on the GPU. These are what ran, whether or not
  the collective went through the dispatcher.
* **compute** spans are the ``aten::`` ops on every other CPU thread (CPU runs), or the
  non-NCCL kernels (CUDA runs).

Per phase window ``W`` (one per iteration), with ``|.|`` the length of a union of intervals::

    comm_s         = |comm ∩ W|
    compute_s      = |compute ∩ W|
    exposed_comm_s = |comm ∩ W| - |comm ∩ compute ∩ W|     communication nothing overlapped

so ``exposed_comm_s`` is the time the phase spent only communicating: what a faster network
would save, and what overlapping (bucketing, prefetching) has not hidden. Per-phase values are
medians over the iterations. A collective's time is its backend span; spans are paired in
order with the collectives the dispatcher recorded for one step (:func:`pair_times`).

All functions here are pure: they take spans, not profilers, so they are tested on made-up
timelines.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Span", "union", "total_ns", "intersect", "phase_breakdown", "spans_of", "backend_kind", "pair_times",
           "PHASE_PREFIX", "PhaseComm"]

PHASE_PREFIX = "hwprof.phase:"

Interval = tuple[int, int]


@dataclass(frozen=True)
class Span:
    """One timed range (ns): ``role`` is "phase" (name = the phase), "comm" (name = the backend's
    collective, e.g. "gloo:all_reduce") or "compute"."""

    role: str
    name: str
    start_ns: int
    end_ns: int


def union(intervals: Iterable[Interval]) -> list[Interval]:
    """Sorted, disjoint intervals covering the same points as ``intervals`` (touching ones merged)."""
    out: list[Interval] = []
    for s, e in sorted((s, e) for s, e in intervals if e > s):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def total_ns(intervals: Iterable[Interval]) -> int:
    """Length of the union of ``intervals``."""
    return sum(e - s for s, e in union(intervals))


def intersect(a: Iterable[Interval], b: Iterable[Interval]) -> list[Interval]:
    """The intersection of two unions of intervals, as disjoint intervals."""
    ua, ub = union(a), union(b)
    out: list[Interval] = []
    i = j = 0
    while i < len(ua) and j < len(ub):
        s, e = max(ua[i][0], ub[j][0]), min(ua[i][1], ub[j][1])
        if e > s:
            out.append((s, e))
        if ua[i][1] < ub[j][1]:
            i += 1
        else:
            j += 1
    return out


@dataclass(frozen=True)
class PhaseComm:
    """Per-iteration medians for one phase (seconds): the phase's wall time, its compute, its communication
    and the communication no compute overlapped; ``iterations`` the number of windows."""

    phase: str
    wall_s: float
    compute_s: float
    comm_s: float
    exposed_comm_s: float
    iterations: int

    @property
    def overlap(self) -> float | None:
        """Share of the communication hidden under compute: 1 - exposed / comm (None without communication)."""
        return 1 - self.exposed_comm_s / self.comm_s if self.comm_s > 0 else None


def phase_breakdown(spans: Sequence[Span]) -> list[PhaseComm]:
    """:class:`PhaseComm` per phase name, in the order phases first appear (see the module docstring)."""
    comm = union((s.start_ns, s.end_ns) for s in spans if s.role == "comm")
    compute = union((s.start_ns, s.end_ns) for s in spans if s.role == "compute")
    hidden = intersect(comm, compute)
    per_phase: dict[str, list[tuple[int, int, int, int]]] = {}
    for w in (s for s in spans if s.role == "phase"):
        window = [(w.start_ns, w.end_ns)]
        c = total_ns(intersect(comm, window))
        per_phase.setdefault(w.name, []).append(
            (w.end_ns - w.start_ns, total_ns(intersect(compute, window)), c, c - total_ns(intersect(hidden, window))))
    def med_s(rows: list[tuple[int, int, int, int]], k: int) -> float:
        return float(statistics.median(r[k] for r in rows)) * 1e-9

    return [PhaseComm(name, med_s(rows, 0), med_s(rows, 1), med_s(rows, 2), med_s(rows, 3), len(rows))
            for name, rows in per_phase.items()]


_BACKEND_KINDS = (("allreduce", "all_reduce"), ("all_reduce", "all_reduce"), ("reducescatter", "reduce_scatter_tensor"),
                  ("reduce_scatter", "reduce_scatter_tensor"), ("allgather", "all_gather_into_tensor"),
                  ("all_gather", "all_gather_into_tensor"), ("broadcast", "broadcast"), ("alltoall", "all_to_all"),
                  ("all_to_all", "all_to_all"), ("sendrecv", "send"), ("send", "send"), ("recv", "recv"),
                  ("reduce", "reduce"), ("gather", "gather"), ("scatter", "scatter"), ("barrier", "barrier"))


def backend_kind(name: str) -> str:
    """The collective kind a backend span names ("gloo:all_reduce", "ncclDevKernel_AllGather_RING_LL(...)");
    "unknown" when it names none. Note that gloo runs a reduce_scatter_tensor as an all_reduce."""
    low = name.lower().split("(")[0]
    for key, kind in _BACKEND_KINDS:
        if key in low:
            return kind
    return "unknown"


def _is_comm(name: str, device_type: str) -> bool:
    return name.startswith("gloo:") if device_type == "cpu" else "nccl" in name.lower()


def spans_of(events: Iterable[Any], device: str) -> list[Span]:
    """Phase, communication and compute spans of finished profiler events (``kineto_results.events()``:
    objects with ``name()``, ``start_ns()``, ``end_ns()``, ``start_thread_id()``, ``device_type()``).

    ``device`` "cpu": communication = ``gloo:*`` ranges, compute = ``aten::*`` ops on threads that
    record no communication; "cuda": communication = NCCL kernels, compute = every other kernel."""
    events = list(events)
    spans: list[Span] = []
    comm_threads = {e.start_thread_id() for e in events if e.name().startswith("gloo:")}
    for e in events:
        name, on_gpu = e.name(), "CUDA" in str(e.device_type())
        if name.startswith(PHASE_PREFIX) and not on_gpu:
            spans.append(Span("phase", name.removeprefix(PHASE_PREFIX), e.start_ns(), e.end_ns()))
        elif device == "cpu" and not on_gpu:
            if name.startswith("gloo:"):
                spans.append(Span("comm", name, e.start_ns(), e.end_ns()))
            elif name.startswith("aten::") and e.start_thread_id() not in comm_threads:
                spans.append(Span("compute", name, e.start_ns(), e.end_ns()))
        elif device == "cuda" and on_gpu:
            spans.append(Span("comm" if _is_comm(name, "cuda") else "compute", name, e.start_ns(), e.end_ns()))
    return spans


def iterations(spans: Sequence[Span], first_phase: str) -> list[Interval]:
    """The iteration windows: from each start of ``first_phase`` to the next one (the last runs to the end of
    the last span)."""
    starts = sorted(s.start_ns for s in spans if s.role == "phase" and s.name == first_phase)
    end = max((s.end_ns for s in spans), default=0)
    return [(s, starts[i + 1] if i + 1 < len(starts) else end) for i, s in enumerate(starts)]


def pair_times(spans: Sequence[Span], first_phase: str, calls: int) -> tuple[list[float], list[list[str]]]:
    """Per collective of one step (``calls`` of them, in issue order): the median over iterations of the
    duration (s) of the backend span at the same position in that iteration (NaN where an iteration
    had fewer); and per iteration the backend kinds of its spans beyond ``calls`` (collectives the
    dispatcher did not see)."""
    per_iter: list[list[Span]] = []
    for s0, s1 in iterations(spans, first_phase):
        per_iter.append(sorted((s for s in spans if s.role == "comm" and s0 <= s.start_ns < s1),
                               key=lambda s: s.start_ns))
    times = []
    for i in range(calls):
        d = [(it[i].end_ns - it[i].start_ns) * 1e-9 for it in per_iter if i < len(it)]
        times.append(statistics.median(d) if d else float("nan"))
    extra = [[backend_kind(s.name) for s in it[calls:]] for it in per_iter]
    return times, extra
