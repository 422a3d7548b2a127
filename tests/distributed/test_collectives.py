"""Collective kinds, message bytes, bus bandwidth and the dispatch-level counter (on torch's fake process group)."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator

import pytest
import torch
import torch.distributed as dist

from hwprof.distributed.collectives import (
    Collective,
    CollectiveCounter,
    bus_factor,
    busbw,
    collective_table,
    kind_of,
    message_bytes,
)
from hwprof.distributed.predict import fake_process_group


def test_kinds_from_every_spelling_of_a_c10d_op() -> None:
    assert kind_of("allreduce_") == kind_of("c10d::allreduce_") == kind_of("c10d.allreduce_.default") == "all_reduce"
    assert kind_of("c10d::_allgather_base_") == "all_gather_into_tensor"
    assert kind_of("_reduce_scatter_base_") == "reduce_scatter_tensor"
    assert kind_of("aten::mm") is None and kind_of("c10d::wait") is None


def test_bus_factor_is_nccl_tests_convention() -> None:
    # all_reduce 2(n-1)/n, all_gather / reduce_scatter (n-1)/n, broadcast 1
    assert bus_factor("all_reduce", 2) == 1.0 and bus_factor("all_reduce", 8) == 1.75
    assert bus_factor("all_gather_into_tensor", 8) == 0.875 and bus_factor("reduce_scatter_tensor", 4) == 0.75
    assert bus_factor("broadcast", 8) == 1.0 and bus_factor("all_reduce", 1) == 0.0
    with pytest.raises(ValueError):
        bus_factor("all_reduce", 0)


def test_busbw_is_bytes_over_time_times_the_factor() -> None:
    # 1 GB all-reduced in 0.5 s on 4 ranks: algbw 2 GB/s, busbw 2 * 2*3/4 = 3 GB/s
    assert busbw("all_reduce", 1e9, 0.5, 4) == pytest.approx(3e9)
    assert math.isnan(busbw("all_reduce", 1e9, 0.0, 4))


def test_message_bytes_are_buffer_gather_output_and_scatter_input() -> None:
    small, big = torch.empty(10), torch.empty(40)   # 40 B and 160 B
    assert message_bytes("allreduce_", ([big],)) == 160
    assert message_bytes("_allgather_base_", (big, small)) == 160         # output = 4 ranks x 40 B
    assert message_bytes("_reduce_scatter_base_", (small, big)) == 160    # input, the unreduced whole
    assert message_bytes("barrier", (small,)) == 0


@pytest.fixture
def fake_group() -> Iterator[None]:
    with fake_process_group(4), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        yield


def test_counter_records_what_dispatches_on_a_fake_group(fake_group: None) -> None:
    counter = CollectiveCounter(4)
    t = torch.ones(8)                                             # 32 B
    with counter:
        counter.phase = "fwd"
        dist.all_reduce(t)
        torch.mm(torch.ones(2, 2), torch.ones(2, 2))              # not a collective: passes through
        out = torch.empty(32)
        dist.all_gather_into_tensor(out, t)
        counter.next_iteration()
        counter.phase = "bwd"
        dist.reduce_scatter_tensor(torch.empty(2), t)
        dist.broadcast(t, src=0)
    got = [(c.kind, c.bytes, c.phase, c.iteration, c.group_size, c.dtype) for c in counter.calls]
    assert got == [("all_reduce", 32, "fwd", 0, 4, "float32"), ("all_gather_into_tensor", 128, "fwd", 0, 4, "float32"),
                   ("reduce_scatter_tensor", 32, "bwd", 1, 4, "float32"), ("broadcast", 32, "bwd", 1, 4, "float32")]


def test_counter_reads_the_size_of_a_subgroup(fake_group: None) -> None:
    sub = dist.new_group([0, 1])
    counter = CollectiveCounter(4)
    with counter:
        dist.all_reduce(torch.ones(3), group=sub)
    assert counter.calls[0].group_size == 2


def test_table_sums_calls_and_derives_bandwidths() -> None:
    calls = [Collective("all_reduce", "allreduce_", "float32", 1000, "bwd", 2),
             Collective("all_reduce", "allreduce_", "float32", 3000, "bwd", 2),
             Collective("broadcast", "broadcast_", "int64", 80, "fwd", 2)]
    t = collective_table(calls, [0.001, 0.003, math.nan]).set_index("kind")
    ar = t.loc["all_reduce"]
    # 4000 B in 4 ms: algbw 1e6 B/s; on 2 ranks busbw = algbw * 2(1)/2
    assert (ar["calls"], ar["bytes"], ar["mean_message_bytes"]) == (2, 4000, 2000)
    assert ar["time_s"] == pytest.approx(0.004) and ar["algbw_bytes_per_s"] == pytest.approx(1e6)
    assert ar["busbw_bytes_per_s"] == pytest.approx(1e6)
    assert math.isnan(t.loc["broadcast", "time_s"])    # no time: no bandwidth, never a zero
    with pytest.raises(ValueError):
        collective_table(calls, [0.1])
