"""Memory levels: cache sizes from a (fake) sysfs tree, the working-set sweep's points with the op
overhead taken out, levels and their effective capacities, placement of a working set, spreads."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from hwprof.hardware.caches import CacheLevel, cpu_caches, parse_size
from hwprof.hardware.levels import (
    MemoryLevel,
    SweepPoint,
    level_of,
    level_spreads,
    memory_levels,
    sweep_points,
)

KiB, MiB, GB = 2**10, 2**20, 1e9


def _sysfs(root: Path, cpus: int = 2) -> Path:
    """A sysfs cache tree like this project's VM: per CPU a private 48K L1d, 64K L1i and 2048K L2,
    and one 491520K (480 MiB) L3 shared by every CPU."""
    for cpu in range(cpus):
        entries = [(1, "Data", "48K", str(cpu)), (1, "Instruction", "64K", str(cpu)), (2, "Unified", "2048K", str(cpu)),
                   (3, "Unified", "491520K", f"0-{cpus - 1}")]
        for i, (level, kind, size, shared) in enumerate(entries):
            d = root / f"cpu{cpu}" / "cache" / f"index{i}"
            d.mkdir(parents=True)
            for name, value in (("level", str(level)), ("type", kind), ("size", size), ("shared_cpu_list", shared)):
                (d / name).write_text(value + "\n")
    return root


def test_parse_size() -> None:
    assert parse_size("48K\n") == 48 * KiB and parse_size("480M") == 480 * MiB and parse_size("1G") == 2**30
    assert parse_size("32768") == 32768 and parse_size("2048KiB") == 2 * MiB
    with pytest.raises(ValueError, match="not a cache size"):
        parse_size("lots")


def test_cpu_caches_from_sysfs_count_private_levels_per_thread(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _sysfs(tmp_path)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    two = cpu_caches(threads=2, root=root)
    # 2 threads: the private L1d (48K) and L2 (2048K) count twice, the shared L3 once; no L1i
    assert [(c.name, c.capacity_bytes) for c in two] == [("L1", 96 * KiB), ("L2", 4 * MiB), ("LLC", 480 * MiB)]
    assert all(c.source == "sysfs" for c in two)
    one = cpu_caches(threads=1, root=root)
    assert [(c.name, c.capacity_bytes) for c in one] == [("L1", 48 * KiB), ("L2", 2 * MiB), ("LLC", 480 * MiB)]


def test_cpu_caches_without_sysfs_fall_back_to_sysconf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sizes = {"SC_LEVEL1_DCACHE_SIZE": 32 * KiB, "SC_LEVEL2_CACHE_SIZE": MiB, "SC_LEVEL3_CACHE_SIZE": 16 * MiB,
             "SC_LEVEL4_CACHE_SIZE": 0}
    monkeypatch.setattr("os.sysconf", lambda name: sizes[name])
    monkeypatch.setattr("os.sysconf_names", dict.fromkeys(sizes, 0))
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1, 2, 3})
    found = cpu_caches(threads=4, root=tmp_path / "absent")
    # L1 and L2 taken as private (x 4 threads), the last level shared
    assert [(c.name, c.capacity_bytes, c.source) for c in found] == [
        ("L1", 128 * KiB, "sysconf"), ("L2", 4 * MiB, "sysconf"), ("LLC", 16 * MiB, "sysconf")]


def test_sweep_points_take_the_op_overhead_out_and_leave_hidden_points_unresolved() -> None:
    # overhead 0.6 us: 64 KiB in 1.0 us is < 2 x 0.6 us -> unresolved (NaN), its raw rate kept;
    # 1 MiB in 8.6 us -> 1048576 / (8.6 - 0.6) us = 131.07 GB/s (raw 1048576 / 8.6 us = 121.93 GB/s)
    pts = sweep_points({1 * MiB: 8.6e-6, 64 * KiB: 1.0e-6}, overhead_s=0.6e-6)
    assert [p.working_set_bytes for p in pts] == [64 * KiB, MiB]
    assert math.isnan(pts[0].bytes_per_s) and pts[0].raw_bytes_per_s == pytest.approx(65536 / 1.0e-6)
    assert pts[1].bytes_per_s == pytest.approx(1048576 / 8.0e-6) and pts[1].raw_bytes_per_s == pytest.approx(121.93e9, rel=1e-4)
    assert sweep_points({MiB: 8e-6}, None)[0].bytes_per_s == pytest.approx(1048576 / 8e-6)   # no overhead known


def _staircase() -> list[SweepPoint]:
    """Resolved bandwidths (bytes/s) of a machine whose L3 share is 8 MiB although 64 MiB is reported:
    <= 32 KiB unresolved, 64 KiB .. 1 MiB 200 GB/s, 2 .. 8 MiB 80 GB/s, 16 .. 64 MiB 20 GB/s."""
    def bw(ws: int) -> float:
        return math.nan if ws <= 32 * KiB else 200 * GB if ws <= MiB else 80 * GB if ws <= 8 * MiB else 20 * GB
    return [SweepPoint(2**e, 1.0, bw(2**e), bw(2**e)) for e in range(14, 27)]


CACHES = [CacheLevel("L1", 1, 32 * KiB), CacheLevel("L2", 2, MiB), CacheLevel("LLC", 3, 64 * MiB)]


def test_levels_find_where_the_bandwidth_steps_down() -> None:
    levels = memory_levels(CACHES, _staircase(), 15 * GB)
    # L1: no resolved point -> no bandwidth, reported capacity.
    # L2: plateau over (32 KiB, 1 MiB] 200 GB/s; the next level's over (1, 64] MiB: max of
    #   [80, 80, 80, 20, 20, 20] = 80 GB/s; threshold sqrt(200 x 80) = 126.5: never crossed -> 1 MiB.
    # LLC: threshold sqrt(80 x 15) = 34.6 GB/s, crossed after 8 MiB -> effective 8 MiB, bandwidth
    #   the median over (1, 8] MiB = 80 GB/s; DRAM: the copy ceiling.
    assert levels == (MemoryLevel("L1", 32 * KiB, None, 32 * KiB, "sweep"), MemoryLevel("L2", MiB, 200 * GB, MiB, "sweep"),
                      MemoryLevel("LLC", 8 * MiB, 80 * GB, 64 * MiB, "sweep"), MemoryLevel("DRAM", None, 15 * GB, None, "copy"))


def test_a_cache_level_is_never_slower_than_main_memory_and_no_caches_leave_main_memory() -> None:
    slow = [SweepPoint(MiB, 1.0, 10 * GB, 10 * GB)]   # a sweep point below the copy ceiling (a busy round)
    levels = memory_levels([CacheLevel("L2", 2, 4 * MiB)], slow, 15 * GB)
    assert levels[0].bytes_per_s == 15 * GB
    assert memory_levels([], _staircase(), 15 * GB, "HBM") == (MemoryLevel("HBM", None, 15 * GB, None, "copy"),)


def test_level_of_places_a_working_set_and_borrows_the_next_bandwidth() -> None:
    levels = memory_levels(CACHES, _staircase(), 15 * GB)
    assert level_of(16 * KiB, levels) == ("L1", 200 * GB)       # L1 unresolved: the L2's bandwidth, a lower bound
    assert level_of(MiB, levels) == ("L2", 200 * GB)            # capacity inclusive
    assert level_of(MiB + 1, levels) == ("LLC", 80 * GB)
    assert level_of(32 * MiB, levels) == ("DRAM", 15 * GB)      # past the effective 8 MiB, inside the reported 64
    assert level_of(float("nan"), levels)[0] == "" and level_of(MiB, ())[0] == ""


def test_level_spreads_compare_the_levels_measured_by_each_round() -> None:
    levels = memory_levels(CACHES, _staircase(), 15 * GB)
    # round bandwidths of the L2 (median over its points): 200, 180, 100 GB/s -> (200 - 180) / 200 = 10%
    rounds = [[SweepPoint(MiB, 1.0, r * GB, r * GB)] for r in (200, 180, 100)]
    spreads = level_spreads(levels, rounds)
    assert spreads["L2"] == pytest.approx(0.10) and "L1" not in spreads   # unresolved: nothing to judge
    assert math.isnan(spreads["LLC"])                                     # no round resolved it


@pytest.mark.cuda
def test_gpu_levels_from_a_quick_sweep(tmp_path: Path) -> None:
    """On a GPU: the L2 from torch's device properties, main memory named by the part, the launch
    cost measured, and the sweep's points labelled with their level."""
    import torch

    from hwprof.hardware.caches import gpu_caches
    from hwprof.hardware.ceilings import measure_ceilings

    dev = torch.device("cuda", torch.cuda.current_device())
    (l2,) = gpu_caches(dev)
    assert l2.name == "L2" and l2.capacity_bytes == torch.cuda.get_device_properties(dev).L2_cache_size
    k = measure_ceilings("cuda", quick=True, cache_dir=tmp_path)
    assert [lv.name for lv in k.levels][0] == "L2" and k.levels[-1].name in ("HBM", "DRAM")
    assert k.levels[-1].bytes_per_s == k.bytes_per_s and (k.op_overhead_s or 0) > 0
    assert {p.level for p in k.sweep} <= {lv.name for lv in k.levels}
