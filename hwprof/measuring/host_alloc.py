"""Peak bytes held by live CPU tensors, from torch's own CPU allocator: the CPU analogue of
``torch.cuda.max_memory_allocated``.

RSS is a poor measure of what a model needs on the CPU: glibc keeps freed blocks, torch's
libraries map their own memory, and an earlier run's freed memory serves a later one without
raising it. torch's CPU allocator reports every allocation and free to ``torch.profiler``
when ``profile_memory=True`` (``c10::ProfiledCPUMemoryReporter``: one ``[memory]`` event per
call, ``alloc_size`` > 0 for an allocation, < 0 for a free, with the block's ``ptr``). This
module runs a block under the profiler and replays those events:

    window_peak = max over time of  sum(alloc_size of the blocks allocated in the window and still live)
    peak        = live_before + window_peak

``live_before`` is what was allocated before the window and stays live through it (the
model's parameters and buffers, the inputs: :func:`storage_bytes`), because the reporter
only follows blocks allocated while profiling (a free of an older block is not reported as
a size). Frees of blocks allocated before the window are ignored for the same reason: they
would subtract bytes ``live_before`` may not hold. Sizes are the bytes requested (no
rounding), as the allocator reports them; memory a kernel takes from another allocator
(OpenMP stacks, a library's own pools) is not seen.

Kernel workspaces: an aten op may allocate buffers it frees before returning (oneDNN
reorders a convolution's weights into a blocked layout, an LSTM keeps a workspace). A
replay on fake tensors sees only an op's outputs, so these transients are what it misses.
:func:`op_transients` gives each outermost aten op's transient peak (peak of the bytes
allocated inside it minus what is still live when it returns); the largest is reported as
``max_op_transient_bytes`` with its op.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from typing import Any

import torch

__all__ = ["HostAllocPeak", "window_peak_bytes", "allocation_events", "op_transients", "storage_bytes",
           "host_alloc_peak"]


@dataclass(frozen=True)
class HostAllocPeak:
    """Result of :func:`host_alloc_peak` (bytes). ``peak_bytes = live_before_bytes + window_peak_bytes``;
    ``net_bytes``: allocated in the window and still live at its end; ``allocations``: count;
    ``max_op_transient_bytes`` / ``max_op_transient_op``: the largest workspace one aten op
    allocated and freed inside itself (see :func:`op_transients`; 0 / "" when none)."""

    live_before_bytes: int
    window_peak_bytes: int
    net_bytes: int
    allocations: int
    max_op_transient_bytes: int = 0
    max_op_transient_op: str = ""

    @property
    def peak_bytes(self) -> int:
        return self.live_before_bytes + self.window_peak_bytes

    def to_dict(self) -> dict[str, int | str]:
        return {**asdict(self), "peak_bytes": self.peak_bytes}


def window_peak_bytes(events: Iterable[tuple[int, int, int]]) -> tuple[int, int, int]:
    """(peak, net, allocations) of the live bytes allocated inside a window.

    ``events``: (time_ns, ptr, alloc_size) in any order; sorted by time here (ties keep their
    order). An allocation adds its size and makes ``ptr`` live; a free (size < 0) of a live
    ``ptr`` subtracts the size that ``ptr`` was allocated with; a free of any other ``ptr``
    (allocated before the window) is ignored.
    """
    live: dict[int, int] = {}
    cur = peak = count = 0
    for _, ptr, size in sorted(events, key=lambda e: e[0]):
        if size > 0:
            if ptr in live:          # a missed free: the block was reused
                cur -= live[ptr]
            live[ptr] = size
            cur += size
            count += 1
            peak = max(peak, cur)
        elif size < 0 and ptr in live:
            cur -= live.pop(ptr)
    return peak, cur, count


def allocation_events(prof: Any, device_type: str = "cpu") -> list[tuple[int, int, int]]:
    """(time_ns, ptr, alloc_size) of every allocator event on ``device_type`` in a finished
    ``torch.profiler.profile(profile_memory=True)`` session, from its event tree."""
    out: list[tuple[int, int, int]] = []
    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        ef = e.extra_fields
        if type(ef).__name__ == "_ExtraFields_Allocation" and torch.device(ef.device).type == device_type:
            out.append((int(e.start_time_ns), int(ef.ptr), int(ef.alloc_size)))
        stack.extend(e.children)
    return out


def op_transients(prof: Any, device_type: str = "cpu") -> list[tuple[str, int]]:
    """(op name, transient bytes) for every outermost ``aten::`` op of a finished
    ``profile(profile_memory=True)`` session that allocated on ``device_type`` inside itself.

    transient = peak of the bytes allocated inside the op (its whole subtree) minus the bytes of
    those allocations still live when it returns (its outputs); computed with
    :func:`window_peak_bytes` on the op's own events."""
    out: list[tuple[str, int]] = []

    def events_under(e: Any, acc: list[tuple[int, int, int]]) -> list[tuple[int, int, int]]:
        for c in e.children:
            ef = c.extra_fields
            if type(ef).__name__ == "_ExtraFields_Allocation":
                if torch.device(ef.device).type == device_type:
                    acc.append((int(c.start_time_ns), int(ef.ptr), int(ef.alloc_size)))
            else:
                events_under(c, acc)
        return acc

    stack = list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        e = stack.pop()
        if e.name.startswith("aten::"):
            events = events_under(e, [])
            if events:
                peak, net, _ = window_peak_bytes(events)
                out.append((e.name, peak - net))
            continue
        stack.extend(e.children)
    return out


def storage_bytes(tensors: Iterable[Any]) -> int:
    """Bytes of the distinct storages behind ``tensors`` (non-tensors skipped; views and shared
    storages counted once)."""
    seen: set[int] = set()
    total = 0
    for t in tensors:
        if not isinstance(t, torch.Tensor):
            continue
        s = t.untyped_storage()
        key = s.data_ptr()
        if key in seen:
            continue
        seen.add(key)
        total += s.nbytes()
    return total


def host_alloc_peak(run: Callable[[], None], live_before_bytes: int) -> HostAllocPeak:
    """Run ``run`` once under ``torch.profiler`` with ``profile_memory=True`` and return the peak
    of CPU tensor bytes (see the module docstring). ``run`` must drop what it allocates if the
    caller wants ``net_bytes`` to be 0."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        run()
    peak, net, count = window_peak_bytes(allocation_events(prof, "cpu"))
    op, transient = max(op_transients(prof, "cpu"), key=lambda t: t[1], default=("", 0))
    return HostAllocPeak(int(live_before_bytes), peak, net, count, int(transient), op if transient > 0 else "")
