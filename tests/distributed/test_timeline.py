"""Compute / communication / exposed communication from made-up timelines (no profiler, no clock)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import pytest

from hwprof.distributed.timeline import (
    Span,
    backend_kind,
    intersect,
    pair_times,
    phase_breakdown,
    spans_of,
    total_ns,
    union,
)


def test_union_and_intersection_of_intervals() -> None:
    assert union([(5, 8), (0, 2), (1, 3), (8, 9), (4, 4)]) == [(0, 3), (5, 9)]
    assert total_ns([(0, 10), (5, 15), (20, 25)]) == 20
    assert intersect([(0, 10), (20, 30)], [(5, 25)]) == [(5, 10), (20, 25)]


def _step(t0: int) -> list[Span]:
    """One iteration at ``t0`` (ns): fwd [0, 30) computing [0, 10) and [20, 30), communicating [5, 25);
    bwd [30, 50) computing [30, 35), communicating [32, 50)."""
    return [Span("phase", "fwd", t0, t0 + 30), Span("compute", "aten::mm", t0, t0 + 10),
            Span("compute", "aten::add", t0 + 20, t0 + 30), Span("comm", "gloo:all_gather", t0 + 5, t0 + 25),
            Span("phase", "bwd", t0 + 30, t0 + 50), Span("compute", "aten::mm", t0 + 30, t0 + 35),
            Span("comm", "gloo:all_reduce", t0 + 32, t0 + 50)]


def test_exposed_communication_is_what_no_compute_overlaps() -> None:
    fwd, bwd = phase_breakdown(_step(0) + _step(100))
    # fwd: comm 20 ns, compute 20 ns, hidden = [5,10) + [20,25) = 10 ns -> exposed 10 ns
    assert (fwd.phase, fwd.iterations) == ("fwd", 2)
    assert (fwd.wall_s, fwd.compute_s, fwd.comm_s, fwd.exposed_comm_s) == pytest.approx((30e-9, 20e-9, 20e-9, 10e-9))
    assert fwd.overlap == pytest.approx(0.5)
    # bwd: comm [32, 50) = 18 ns, hidden [32, 35) = 3 ns -> exposed 15 ns
    assert (bwd.comm_s, bwd.exposed_comm_s) == pytest.approx((18e-9, 15e-9))
    assert phase_breakdown([Span("phase", "step", 0, 10)])[0].overlap is None


def test_collective_times_pair_by_position_per_iteration() -> None:
    spans = _step(0) + _step(100)
    spans[3] = Span("comm", "gloo:all_gather", 5, 35)        # iteration 1's first collective took 30 ns
    times, unseen = pair_times(spans, "fwd", 2)
    assert times == pytest.approx([(20e-9 + 30e-9) / 2, 18e-9])   # median of two = mean
    assert unseen == [[], []]
    times, unseen = pair_times(spans, "fwd", 1)            # the dispatcher saw one: the other is unseen
    assert unseen == [["all_reduce"], ["all_reduce"]]
    times, _ = pair_times(spans, "fwd", 3)
    assert math.isnan(times[2])


def test_backend_names_map_to_kinds() -> None:
    assert backend_kind("gloo:all_reduce") == "all_reduce"
    assert backend_kind("ncclDevKernel_AllGather_RING_LL(ncclDevKernelArgsStorage<4096ul>)") == \
        "all_gather_into_tensor"
    assert backend_kind("ncclKernel_ReduceScatter_RING_LL_Sum_float") == "reduce_scatter_tensor"
    assert backend_kind("gloo:broadcast") == "broadcast" and backend_kind("memcpy") == "unknown"


@dataclass
class _Event:
    """What spans_of reads of a profiler event."""

    n: str
    s: int
    e: int
    tid: int
    dev: str = "DeviceType.CPU"

    def name(self) -> str:
        return self.n

    def start_ns(self) -> int:
        return self.s

    def end_ns(self) -> int:
        return self.e

    def start_thread_id(self) -> int:
        return self.tid

    def device_type(self) -> str:
        return self.dev


def test_spans_on_cpu_leave_the_backend_threads_out_of_compute() -> None:
    events = [_Event("hwprof.phase:bwd", 0, 100, 1), _Event("aten::mm", 10, 20, 1), _Event("c10d::allreduce_", 20, 21, 1),
              _Event("gloo:all_reduce", 21, 90, 3), _Event("aten::copy_", 30, 40, 3),    # gloo's own copy: comm thread
              _Event("ncclKernel_AllReduce", 0, 5, 1, "DeviceType.CUDA")]
    spans = spans_of(events, "cpu")
    assert [(s.role, s.name) for s in spans] == [("phase", "bwd"), ("compute", "aten::mm"),
                                                 ("comm", "gloo:all_reduce")]
    cuda = spans_of(events + [_Event("ampere_sgemm", 5, 9, 1, "DeviceType.CUDA")], "cuda")
    assert [(s.role, s.name) for s in cuda] == [("phase", "bwd"), ("comm", "ncclKernel_AllReduce"),
                                                ("compute", "ampere_sgemm")]
