"""Peak bytes held by live tensors, replayed from torch's own allocator events: on the CPU the
analogue of ``torch.cuda.max_memory_allocated``, and on both devices its split into the
tensors ops return and the scratch memory kernels use inside themselves.

RSS is a poor measure of what a model needs on the CPU: glibc keeps freed blocks, torch's
libraries map their own memory, and an earlier run's freed memory serves a later one without
raising it. torch's allocators report every allocation and free to ``torch.profiler`` when
``profile_memory=True`` (on the CPU ``c10::ProfiledCPUMemoryReporter``, on CUDA the caching
allocator, which reports each block's size: one ``[memory]`` event per call, ``alloc_size``
> 0 for an allocation, < 0 for a free, with the block's ``ptr`` and device). This module runs
a block under the profiler and replays the events of one device type:

    window_peak = max over time of  sum(alloc_size of the blocks allocated in the window and still live)
    peak        = live_before + window_peak

``live_before`` is what was allocated before the window and stays live through it (on the
CPU the model's parameters and buffers and the inputs, :func:`storage_bytes`; on CUDA
``torch.cuda.memory_allocated()`` at the start), because the profiler only sees blocks
allocated while it runs. Frees of blocks allocated before the window are ignored for the
same reason: they would subtract bytes ``live_before`` may not hold. On the CPU the sizes are
the bytes requested (no rounding); memory a kernel takes from another allocator (OpenMP
stacks, a library's own pools) is not seen.

Kernel workspaces: an aten op may allocate buffers it frees before returning (oneDNN
reorders a convolution's weights into a blocked layout, an LSTM keeps a workspace, cuDNN
takes a convolution workspace from the caching allocator). A
replay on fake tensors sees only an op's outputs, so these transients are what it misses.
:func:`op_transients` gives each outermost aten op's workspace peak (the most bytes it held at
once in allocations it frees before returning); the largest is reported as
``max_op_transient_bytes`` with its op, with the op running at the peak and the part of the
peak that is its workspace (``workspace_at_peak_bytes``). The same replay without any op's
workspace gives ``peak_without_workspace_bytes``: the peak of the tensors ops return, which
is what a replay of op outputs on fake tensors can predict.

The replay is also kept as a :class:`MemoryTimeline` (``AllocTrace.timeline``): the live bytes
after each allocator event with the op it happened in, at most :data:`MAX_TIMELINE_POINTS`
points (past that, the lowest and the highest point of each run of events, so that the line
keeps its envelope and its peak), for the reports' memory timelines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

import torch

__all__ = ["AllocTrace", "MemoryTimeline", "MAX_TIMELINE_POINTS", "memory_timeline", "window_peak_bytes",
           "workspace_at", "allocation_events", "op_transients", "workspace_peak_bytes", "storage_bytes",
           "inner_tensors", "alloc_trace_peak", "summarize"]


MAX_TIMELINE_POINTS = 2000
"""Most points a :class:`MemoryTimeline` keeps (a few hundred kB of JSON in ``measurement.json``)."""


@dataclass(frozen=True)
class MemoryTimeline:
    """Live tensor bytes over the allocator-trace pass (:func:`memory_timeline`). Per point:
    ``time_s`` seconds since the first allocator event, ``live_bytes`` = ``live_before_bytes`` + the
    bytes allocated in the window and still live after the event, ``op`` the outermost dispatched
    aten op the event happened in ("" outside any op). ``events``: allocator events replayed (more
    than the points when the series was thinned to :data:`MAX_TIMELINE_POINTS`)."""

    time_s: tuple[float, ...] = ()
    live_bytes: tuple[int, ...] = ()
    op: tuple[str, ...] = ()
    events: int = 0

    @property
    def peak_index(self) -> int:
        """Index of the first point at the highest ``live_bytes`` (-1 when empty)."""
        return max(range(len(self.live_bytes)), key=self.live_bytes.__getitem__, default=-1)

    def to_dict(self) -> dict[str, Any]:
        return {"time_s": list(self.time_s), "live_bytes": list(self.live_bytes), "op": list(self.op),
                "events": self.events}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MemoryTimeline:
        return cls(tuple(float(t) for t in d["time_s"]), tuple(int(b) for b in d["live_bytes"]),
                   tuple(str(o) for o in d["op"]), int(d.get("events", len(d["time_s"]))))


@dataclass(frozen=True)
class AllocTrace:
    """Result of :func:`alloc_trace_peak` (bytes). ``peak_bytes = live_before_bytes + window_peak_bytes``;
    ``net_bytes``: allocated in the window and still live at its end; ``allocations``: count;
    ``max_op_transient_bytes`` / ``max_op_transient_op``: the largest workspace one aten op
    allocated and freed inside itself (see :func:`op_transients`; 0 / "" when none);
    ``peak_op`` / ``workspace_at_peak_bytes``: the outermost aten op running when the peak was
    reached and the part of the peak that is its workspace (:func:`workspace_at`);
    ``peak_without_workspace_bytes``: ``live_before_bytes`` + the peak of the same replay with
    every op's workspace allocations (and their frees) left out, i.e. the peak of the tensors
    the ops return, which is what a replay of op outputs on fake tensors predicts. ``timeline``: the
    replay over time (:class:`MemoryTimeline`), not part of the flat :meth:`to_dict` summary.
    ``peak_excess_bytes``: how much the peak may be too high because frees went unrecorded. A
    block whose address is allocated again while the replay still holds it was freed unseen
    (the profiler records a thread's allocator events only while that thread carries its
    state, and a collective backend's worker thread can drop the last reference to a buffer
    after its work ended); it is counted live until its address returns. The excess is the
    peak minus the peak of the same replay without those blocks: 0 when every free was seen,
    or when the unseen ones do not reach the peak. ``unfreed_at_peak_bytes``: the part of
    ``net_bytes`` allocated up to the peak (so counted in it) and never seen freed: 0 when the
    peak holds only blocks whose fate the window saw; otherwise each such block was either really
    live at the end or freed unseen, and the peak is too high by up to this. A block allocated
    after the peak and never seen freed does not touch the peak, so a trace with ``net_bytes > 0``
    can still have an exact peak."""

    live_before_bytes: int
    window_peak_bytes: int
    net_bytes: int
    allocations: int
    max_op_transient_bytes: int = 0
    max_op_transient_op: str = ""
    peak_op: str = ""
    workspace_at_peak_bytes: int = 0
    peak_without_workspace_bytes: int = 0
    peak_excess_bytes: int = 0
    unfreed_at_peak_bytes: int = 0
    timeline: MemoryTimeline | None = field(default=None, compare=False, repr=False)

    @property
    def peak_bytes(self) -> int:
        return self.live_before_bytes + self.window_peak_bytes

    def to_dict(self) -> dict[str, int | str]:
        """The scalar fields and ``peak_bytes`` (the timeline is kept apart: :meth:`MemoryTimeline.to_dict`)."""
        return {**{f.name: getattr(self, f.name) for f in fields(self) if f.name != "timeline"},
                "peak_bytes": self.peak_bytes}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AllocTrace:
        """Inverse of :meth:`to_dict` (``peak_bytes`` is derived, so it is not read)."""
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d and f.name != "timeline"})


Event = tuple[int, int, int]
"""(time_ns, ptr, alloc_size) of one allocator event."""


def _live_series(events: Iterable[Event]) -> list[tuple[Event, int]]:
    """Every event in time order with the live bytes after it (the replay of :func:`window_peak_bytes`)."""
    live: dict[int, int] = {}
    cur = 0
    out: list[tuple[Event, int]] = []
    for e in sorted(events, key=lambda e: e[0]):
        _, ptr, size = e
        if size > 0:
            cur += size - live.get(ptr, 0)   # a missed free: the block was reused
            live[ptr] = size
        elif size < 0 and ptr in live:
            cur -= live.pop(ptr)
        out.append((e, cur))
    return out




def _envelope(values: list[int], max_points: int) -> list[int]:
    """Indices of ``values`` to keep: all of them when they are at most ``max_points``, else, for each of
    ``max_points // 2`` runs of consecutive values, the first lowest and the first highest (in order). The
    first highest value overall is kept, so a thinned series has the same peak at the same place."""
    n = len(values)
    if n <= max_points:
        return list(range(n))
    runs = max(max_points // 2, 1)
    keep: list[int] = []
    for r in range(runs):
        run = range(r * n // runs, (r + 1) * n // runs)
        keep += sorted({min(run, key=values.__getitem__), max(run, key=values.__getitem__)})
    return keep


def memory_timeline(events: Iterable[Event], live_before_bytes: int, op_of: dict[Event, str] | None = None,
                    max_points: int = MAX_TIMELINE_POINTS) -> MemoryTimeline:
    """The live bytes after each allocator event (:func:`_live_series`) + ``live_before_bytes``, with the op
    ``op_of`` gives each event, thinned to ``max_points`` by :func:`_envelope`."""
    series = _live_series(events)
    if not series:
        return MemoryTimeline()
    keep = _envelope([cur for _, cur in series], max_points)
    t0, ops = series[0][0][0], op_of or {}
    return MemoryTimeline(tuple((series[i][0][0] - t0) / 1e9 for i in keep),
                          tuple(live_before_bytes + series[i][1] for i in keep),
                          tuple(ops.get(series[i][0], "") for i in keep), len(series))


class _Replay(NamedTuple):
    peak: int
    net: int
    allocations: int
    t_peak: int | None
    peak_excess: int
    unfreed_at_peak: int


def _replay_once(events: list[tuple[int, int, int]], skip: set[int]) -> tuple[int, int, int, int | None, set[int], int]:
    """One pass over time-sorted events, leaving out the allocations whose indices are in ``skip``: (peak, net,
    allocations, time of the peak, indices of the allocations whose address was allocated again while live,
    bytes of the allocations made up to the peak that are still live at the end)."""
    live: dict[int, tuple[int, int]] = {}          # ptr -> (size, index of its allocation)
    cur = peak = count = 0
    t_peak: int | None = None
    i_peak = -1
    missed: set[int] = set()
    for i, (t, ptr, size) in enumerate(events):
        if size > 0:
            if ptr in live:          # a missed free: the block was reused
                cur -= live[ptr][0]
                missed.add(live[ptr][1])
            count += 1
            if i in skip:
                live.pop(ptr, None)
                continue
            live[ptr] = (size, i)
            cur += size
            if cur > peak:
                peak, t_peak, i_peak = cur, t, i
        elif size < 0 and ptr in live:
            cur -= live.pop(ptr)[0]
    unfreed_at_peak = sum(size for size, i in live.values() if i <= i_peak)
    return peak, cur, count, t_peak, missed, unfreed_at_peak


def _replay(events: Iterable[tuple[int, int, int]]) -> _Replay:
    """(peak, net, allocations, time of the peak, peak excess, unfreed at the peak) of :func:`window_peak_bytes`.
    A block whose address is allocated again while it is live had its free go unrecorded: it is counted
    live until its address returns, and ``peak_excess`` is how much that can add to the peak (the peak
    minus that of the same replay without those blocks). ``unfreed_at_peak``: bytes of the blocks
    allocated up to the peak and still live at the end (never seen freed)."""
    ordered = sorted(events, key=lambda e: e[0])
    peak, net, count, t_peak, missed, unfreed = _replay_once(ordered, set())
    low = _replay_once(ordered, missed)[0] if missed else peak
    return _Replay(peak, net, count, t_peak, peak - low, unfreed)


def window_peak_bytes(events: Iterable[tuple[int, int, int]]) -> tuple[int, int, int]:
    """(peak, net, allocations) of the live bytes allocated inside a window.

    ``events``: (time_ns, ptr, alloc_size) in any order; sorted by time here (ties keep their
    order). An allocation adds its size and makes ``ptr`` live; a free (size < 0) of a live
    ``ptr`` subtracts the size that ``ptr`` was allocated with; a free of any other ``ptr``
    (allocated before the window) is ignored.
    """
    r = _replay(events)
    return r.peak, r.net, r.allocations


def _freed_inside(events: list[tuple[int, int, int]]) -> set[int]:
    """Indices (in time order) of the allocations among ``events`` freed later among them."""
    open_at: dict[int, int] = {}
    freed: set[int] = set()
    for i, (_, ptr, size) in enumerate(events):
        if size > 0:
            open_at[ptr] = i
        elif size < 0 and ptr in open_at:
            freed.add(open_at.pop(ptr))
    return freed


def workspace_at(op_events: Iterable[tuple[int, int, int]], t_ns: int) -> int:
    """Bytes that one op allocated at or before ``t_ns``, still held at ``t_ns``, and freed later
    inside the op: the op's workspace in flight at that moment (its outputs excluded)."""
    events = sorted(op_events, key=lambda e: e[0])
    freed = _freed_inside(events)
    live: dict[int, int] = {}
    for i, (t, ptr, size) in enumerate(events):
        if t > t_ns:
            break
        if size > 0:
            if i in freed:
                live[ptr] = size
        else:
            live.pop(ptr, None)
    return sum(live.values())


def _workspace_events(op_events: Iterable[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
    """The events of one op's workspace, in time order: the allocations it frees itself and those frees."""
    events = sorted(op_events, key=lambda e: e[0])
    freed = _freed_inside(events)
    out: list[tuple[int, int, int]] = []
    open_ptrs: set[int] = set()
    for i, (t, ptr, size) in enumerate(events):
        if size > 0 and i in freed:
            open_ptrs.add(ptr)
            out.append((t, ptr, size))
        elif size < 0 and ptr in open_ptrs:
            open_ptrs.discard(ptr)
            out.append((t, ptr, size))
    return out


def workspace_peak_bytes(op_events: Iterable[tuple[int, int, int]]) -> int:
    """The most bytes one op held at once in allocations it also freed (its workspace):
    the maximum over time of :func:`workspace_at`."""
    return window_peak_bytes(_workspace_events(op_events))[0]


def _is_allocation(e: Any) -> bool:
    return type(e.extra_fields).__name__ == "_ExtraFields_Allocation"


def _allocation(e: Any, device_type: str) -> tuple[int, int, int] | None:
    """(time_ns, ptr, alloc_size) of a profiler ``[memory]`` event on ``device_type``, else None."""
    if not _is_allocation(e):
        return None
    ef = e.extra_fields
    if torch.device(ef.device).type != device_type:
        return None
    return int(e.start_time_ns), int(ef.ptr), int(ef.alloc_size)


def allocation_events(prof: Any, device_type: str = "cpu") -> list[tuple[int, int, int]]:
    """(time_ns, ptr, alloc_size) of every allocator event on ``device_type`` in a finished
    ``torch.profiler.profile(profile_memory=True)`` session, from its event tree."""
    out: list[tuple[int, int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        a = _allocation(e, device_type)
        if a is not None:
            out.append(a)
        stack.extend(e.children)
    return out


def _outermost_ops(prof: Any, device_type: str) -> list[tuple[str, int, int, list[tuple[int, int, int]]]]:
    """(name, start_ns, end_ns, allocator events under it) of every dispatched op: the outermost
    ``aten::`` op with a kernel of its own, found by descending through CompositeImplicitAutograd
    ops (``aten::conv2d``, ``aten::lstm``) as a ``TorchDispatchMode`` does, so that what a
    composite op's parts return stays an output, not a workspace
    (:func:`hwprof.measuring.op_times.is_composite_implicit`)."""
    from hwprof.measuring.op_times import is_composite_implicit

    out: list[tuple[str, int, int, list[tuple[int, int, int]]]] = []

    def events_under(e: Any, acc: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        for c in e.children:
            if _is_allocation(c):
                a = _allocation(c, device_type)
                if a is not None:
                    acc.append(a)
            else:
                events_under(c, acc)
        return acc

    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        if e.name.startswith("aten::") and not is_composite_implicit(e.name):
            end = getattr(e, "end_time_ns", None)
            out.append((e.name, int(e.start_time_ns), int(end) if end is not None else int(e.start_time_ns),
                        events_under(e, [])))
            continue
        stack.extend(e.children)
    return out


def op_transients(prof: Any, device_type: str = "cpu") -> list[tuple[str, int]]:
    """(op name, transient bytes) for every dispatched ``aten::`` op (see :func:`_outermost_ops`) of a finished
    ``profile(profile_memory=True)`` session that allocated on ``device_type`` inside itself.

    transient = :func:`workspace_peak_bytes` of the allocator events in the op's subtree: the
    most bytes held at once in allocations the op frees before it returns (its outputs,
    allocated before or after, are not counted)."""
    return [(name, workspace_peak_bytes(events)) for name, _, _, events in _outermost_ops(prof, device_type)
            if events]


def inner_tensors(t: torch.Tensor) -> list[torch.Tensor]:
    """The plain tensors that hold ``t``'s memory: ``t`` itself, or for a tensor subclass that wraps
    others (``__tensor_flatten__``: a DTensor's local shard, a quantized pair) its inner tensors,
    recursively. A wrapper's own storage is a placeholder with no memory behind it."""
    from torch.utils._python_dispatch import is_traceable_wrapper_subclass

    if not is_traceable_wrapper_subclass(t):
        return [t]
    names, _ = t.__tensor_flatten__()  # type: ignore[attr-defined]
    inner = (getattr(t, name) for name in names)   # a DTensor also lists its (non-tensor) device mesh
    return [x for v in inner if isinstance(v, torch.Tensor) for x in inner_tensors(v)]


def storage_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (non-tensors skipped; views and shared
    storages counted once; a wrapper subclass such as a DTensor counted by its inner tensors)."""
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            continue
        for inner in inner_tensors(t):
            s = inner.untyped_storage()
            key = s.data_ptr()
            if key in seen:
                continue
            seen.add(key)
            total += s.nbytes()
    return total


def alloc_trace_peak(run: Callable[[], None], live_before_bytes: int, device_type: str = "cpu") -> AllocTrace:
    """Run ``run`` once under ``torch.profiler`` with ``profile_memory=True`` and return the peak
    of tensor bytes on ``device_type`` ("cpu" or "cuda"; see the module docstring). ``run`` must
    drop what it allocates if the caller wants ``net_bytes`` to be 0; on CUDA the device is
    synchronised before the profiler stops."""
    from torch.profiler import ProfilerActivity

    from hwprof.measuring.sessions import quiet_profile

    activities = [ProfilerActivity.CPU]
    if device_type == "cuda":
        activities.append(ProfilerActivity.CUDA)
    with quiet_profile(activities=activities, profile_memory=True) as prof:
        run()
        if device_type == "cuda":
            torch.cuda.synchronize()
    return summarize(prof, live_before_bytes, device_type)


def summarize(prof: Any, live_before_bytes: int, device_type: str = "cpu") -> AllocTrace:
    """:class:`AllocTrace` of a finished ``profile(profile_memory=True)`` session."""
    events = allocation_events(prof, device_type)
    r = _replay(events)
    peak, net, count, t_peak, excess = r.peak, r.net, r.allocations, r.t_peak, r.peak_excess
    ops = _outermost_ops(prof, device_type)
    scratch = [(name, _workspace_events(ev)) for name, _, _, ev in ops if ev]
    op, transient = max(((name, window_peak_bytes(ws)[0]) for name, ws in scratch), key=lambda t: t[1],
                        default=("", 0))
    scratch_events = {e for _, ws in scratch for e in ws}
    tensors_peak = window_peak_bytes(e for e in events if e not in scratch_events)[0]
    peak_op, at_peak = "", 0
    if t_peak is not None:
        for name, start, end, ev in ops:
            if start <= t_peak <= end:
                peak_op, at_peak = name, workspace_at(ev, t_peak)
                break
    timeline = memory_timeline(events, int(live_before_bytes), {e: name for name, _, _, ev in ops for e in ev})
    return AllocTrace(int(live_before_bytes), peak, net, count, int(transient), op if transient > 0 else "",
                      peak_op, at_peak, int(live_before_bytes) + tensors_peak, excess, r.unfreed_at_peak,
                      timeline=timeline)
