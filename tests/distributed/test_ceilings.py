"""The communication ceiling: trials with a fake timing, cache per backend and world size, placement."""

from __future__ import annotations

import datetime
import math
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
import torch
import torch.distributed as dist

from hwprof.distributed.ceilings import (
    QUICK_SIZES,
    CollectiveCeilings,
    collective_trial,
    curve_spread,
    measure_collective_ceilings,
    place,
)
from hwprof.hardware.ceilings import Trial, TrialResult


@pytest.fixture
def gloo_of_one() -> Iterator[None]:
    """A real gloo group of one rank in this process (collectives run, nothing is sent)."""
    dist.init_process_group("gloo", rank=0, world_size=1, store=dist.HashStore(),
                            timeout=datetime.timedelta(seconds=30))
    yield
    dist.destroy_process_group()


def _fake_trial(calls: list[tuple[str, int]], jitter: float = 0.0):  # type: ignore[no-untyped-def]
    """busbw = size / 1e-3 s per call (rounds differ by ``jitter`` from the second on)."""
    def trial(kind: str, size: int) -> TrialResult:
        calls.append((kind, size))
        rnd = sum(1 for k, s in calls if (k, s) == (kind, size)) - 1
        t = 1e-3 * (1 + jitter * rnd)
        return TrialResult(size / t, t, 3)
    return trial


def test_best_rounds_are_cached_per_backend_and_world_size(gloo_of_one: None, tmp_path: Path) -> None:
    calls: list[tuple[str, int]] = []
    k = measure_collective_ceilings(cache_dir=tmp_path, quick=True, rounds=2, trial=_fake_trial(calls))
    assert (k.backend, k.world_size, k.source) == ("gloo", 1, "measured")
    assert len(calls) == 2 * 4 * len(QUICK_SIZES)                  # 2 rounds x 4 collectives x 6 sizes
    assert k.busbw["all_reduce"][1024] == pytest.approx(1024 / 1e-3)
    assert k.cache_file is not None and "collectives-gloo-1ranks" in Path(k.cache_file).name
    again = measure_collective_ceilings(cache_dir=tmp_path, quick=True, rounds=2, trial=_fake_trial(calls))
    assert again.source == "cache" and len(calls) == 48 and again.busbw == k.busbw


def test_rounds_that_disagree_are_flagged_and_not_cached(gloo_of_one: None, tmp_path: Path) -> None:
    k = measure_collective_ceilings(cache_dir=tmp_path, quick=True, rounds=2, trial=_fake_trial([], jitter=0.5))
    # the second round is 1.5x slower: (1 - 1/1.5) = 33% apart, above the 10% bound
    assert set(k.flagged) == {"all_reduce", "all_gather_into_tensor", "reduce_scatter_tensor", "broadcast"}
    assert k.cache_file is None and not list(tmp_path.rglob("*.json"))


def test_one_real_trial_reports_the_message_size_over_its_time(gloo_of_one: None) -> None:
    # on one rank the bus factor of all_reduce is 2(1-1)/1 = 0 and that of broadcast 1
    trial = collective_trial(torch.device("cpu"), 1, budget_s=0.001)
    r = trial("broadcast", 4096)
    assert r.rate_per_s == pytest.approx(4096 / r.time_s) and r.reps >= 2
    assert trial("all_reduce", 4096).rate_per_s == 0.0


def test_the_curve_is_interpolated_in_log_log_and_placed() -> None:
    k = CollectiveCeilings("gloo", 2, "cpu", "cpu0", "h", "2.13", "2026-01-01", "measured",
                           busbw={"all_reduce": {1024: 1e6, 4096: 4e6, 16384: 1.6e7}})
    # between 1 KiB (1 MB/s) and 4 KiB (4 MB/s) busbw grows as the size: 2 KiB -> 2 MB/s
    assert k.busbw_at("all_reduce", 2048) == pytest.approx(2e6)
    assert k.busbw_at("all_reduce", 100) == 1e6 and k.busbw_at("all_reduce", 2**30) == 1.6e7
    assert k.busbw_at("broadcast", 2048) is None and k.peak("all_reduce") == 1.6e7
    table = pd.DataFrame({"phase": ["bwd", "fwd"], "kind": ["all_reduce", "broadcast"], "calls": [1, 1],
                          "bytes": [2048, 8], "mean_message_bytes": [2048.0, 8.0], "busbw_bytes_per_s": [1e6, 1.0]})
    placed = place(table, k)
    assert placed["of_ceiling"].iloc[0] == pytest.approx(0.5) and math.isnan(placed["of_ceiling"].iloc[1])
    assert CollectiveCeilings.from_dict(k.to_dict()) == k


def test_a_curve_is_judged_by_the_agreement_of_its_rounds_at_the_median_size() -> None:
    # best two rounds 10% apart at 1 KiB, 50% at 4 KiB, 2% at 16 KiB: median 10%
    rates = {1024: (100.0, 90.0), 4096: (100.0, 50.0), 16384: (100.0, 98.0)}
    trials = [Trial(r, "all_reduce", size, rate, 1.0) for size, pair in rates.items() for r, rate in enumerate(pair)]
    assert curve_spread(trials)["all_reduce"] == pytest.approx(0.10)
    assert math.isnan(curve_spread(trials[:1])["all_reduce"])
