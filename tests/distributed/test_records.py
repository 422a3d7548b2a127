"""Per-rank records gathered on rank 0: the rank table, spread, slowest rank, collectives over ranks, files."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from hwprof.distributed.collectives import Collective
from hwprof.distributed.records import DistributedMeasurement, RankRecord, user_paths
from hwprof.distributed.timeline import PhaseComm
from hwprof.measuring.records import Measurement


def _measurement(fwd_s: float, bwd_s: float, peak: int) -> Measurement:
    phases = [{"phase": p, "median_s": t, "iqr_s": 0.0, "min_s": t, "mean_s": t, "reps": 3, "iqr_over_median": 0.0}
              for p, t in (("fwd", fwd_s), ("bwd", bwd_s))]
    layers = [{"module": m, "type": "T", "is_leaf": False, "depth": 0, "calls": 1, "fwd_s": 1.0, "bwd_s": 1.0,
               "fwd_incl_s": 1.0, "bwd_incl_s": 1.0} for m in ("", "module", "module.blocks", "module.blocks.0")]
    return Measurement.from_dict({"run": {"model": "M", "device": "cpu", "dtype": "float32", "batch": 4},
                                  "config": {"mode": "train"}, "phases": phases, "layers": layers,
                                  "memory": {"alloc_trace_live_before_bytes": peak, "alloc_trace_window_peak_bytes": 0,
                                             "alloc_trace_net_bytes": 0, "alloc_trace_allocations": 1}})


def _rank(rank: int, fwd_s: float, bwd_s: float, peak: int, times: tuple[float, ...]) -> RankRecord:
    calls = (Collective("all_reduce", "allreduce_", "float32", 1000, "bwd", 2),
             Collective("all_reduce", "allreduce_", "float32", 3000, "bwd", 2))
    return RankRecord(rank, 2, "h", _measurement(fwd_s, bwd_s, peak), calls, times,
                      (PhaseComm("bwd", bwd_s, bwd_s / 2, 0.004, 0.001, 3),), ((), ()), resident_bytes=4000,
                      local_param_bytes=4000)


@pytest.fixture
def gathered() -> DistributedMeasurement:
    return DistributedMeasurement("M", "ddp", "gloo", 2, [_rank(0, 0.010, 0.030, 1000, (0.001, 0.003)),
                                                          _rank(1, 0.020, 0.030, 1000, (0.003, math.nan))])


def test_rank_table_spread_and_slowest_rank(gathered: DistributedMeasurement) -> None:
    t = gathered.rank_table()
    assert list(t.index) == [0, 1]
    assert t.loc[1, "iteration_s"] == pytest.approx(0.050) and t.loc[0, "exposed_comm_s"] == pytest.approx(0.001)
    # iteration 40 ms and 50 ms: (50 - 40) / 45 = 22.2%; equal peaks: 0
    assert gathered.spread()["iteration_s"] == pytest.approx(10 / 45)
    assert gathered.spread()["alloc_trace_peak_bytes"] == 0.0
    assert gathered.slowest_rank == 1


def test_each_call_time_is_the_median_over_ranks(gathered: DistributedMeasurement) -> None:
    row = gathered.collectives().set_index("kind").loc["all_reduce"]
    # call 1: median(1 ms, 3 ms) = 2 ms; call 2: rank 1 has none, rank 0's 3 ms -> 5 ms for 4000 B
    assert row["time_s"] == pytest.approx(0.005) and row["algbw_bytes_per_s"] == pytest.approx(4000 / 0.005)


def test_round_trip_through_json(gathered: DistributedMeasurement) -> None:
    back = DistributedMeasurement.from_dict(json.loads(json.dumps(gathered.to_dict())))
    pd.testing.assert_frame_equal(back.rank_table(), gathered.rank_table())
    assert back.ranks[1].collectives == gathered.ranks[1].collectives
    assert math.isnan(back.ranks[1].collective_times_s[1])


def test_ddp_layer_paths_are_the_users(gathered: DistributedMeasurement) -> None:
    m = user_paths(gathered.ranks[0].measurement, "ddp")
    assert list(m.layers.index) == ["", "blocks", "blocks.0"] and list(m.layers["depth"]) == [0, 1, 2]
    assert user_paths(gathered.ranks[0].measurement, "fsdp") is gathered.ranks[0].measurement
