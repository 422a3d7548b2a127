"""Ceilings: best of interleaved trials (fake trial functions, no real benchmark), their spread and
flag, the per-machine user cache, the typed record, the datasheet table and device resolution."""

from __future__ import annotations

import json
import math
import os
import socket
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from hwprof.cli import main
from hwprof.device import describe_device, device_name, resolve_device
from hwprof.files import to_jsonable
from hwprof.hardware import ceilings as C
from hwprof.hardware.caches import CacheLevel
from hwprof.hardware.ceilings import Ceilings, Trial, TrialResult, cache_path, measure_ceilings
from hwprof.hardware.datasheet import DATASHEET, lookup, resolve
from hwprof.hardware.levels import MemoryLevel
from hwprof.hardware.load import quiet_load

# what the CPU plan runs with quick=True: GEMM n 256, 512 for fp32 and bf16, one 64 MiB copy, a
# working-set sweep of 64 KiB, 1 MiB and 16 MiB, and the one-element copy of the op overhead
QUICK_PLAN = {"fp32": (256, 512), "bf16": (256, 512), "copy": (64 * 2**20,), "sweep": (2**16, 2**20, 2**24),
              "overhead": (1,)}
QUICK_SWEEP = (2**16, 2**20, 2**24)


class FakeTrials:
    """A trial function replaying rates: ``rates[mode][round][size_index]`` (FLOP/s or bytes/s),
    each repetition taking ``time_s``; records the calls in order."""

    def __init__(self, rates: dict[str, list[list[float]]], time_s: float = 1e-3) -> None:
        self.rates, self.time_s = rates, time_s
        self.calls: list[tuple[str, int]] = []
        self.seen: dict[str, int] = {}

    def __call__(self, mode: str, size: int) -> TrialResult:
        self.calls.append((mode, size))
        i = self.seen.get(mode, 0)
        self.seen[mode] = i + 1
        per_round = self.rates[mode]
        n_sizes = len(per_round[0])
        rate = per_round[i // n_sizes][i % n_sizes]
        if mode == "sweep":      # the sweep's time is what counts: working set / rate
            return TrialResult(rate, size / rate)
        if mode == "overhead":   # ops per second
            return TrialResult(rate, 1 / rate)
        return TrialResult(rate, self.time_s)


# sweep bandwidths (bytes/s) at 64 KiB, 1 MiB, 16 MiB and the op overhead (1 us: 1e6 ops/s)
SWEEP_RATES = [40e9, 150e9, 50e9]
OVERHEAD_RATE = 1e6


def steady(fp32: float = 1e11, bf16: float = 4e11, copy: float = 2e10, rounds: int = 3) -> FakeTrials:
    """Rates that agree between rounds (the larger GEMM 10% faster), so nothing is flagged."""
    return FakeTrials({"fp32": [[0.9 * fp32, fp32]] * rounds, "bf16": [[0.9 * bf16, bf16]] * rounds,
                       "copy": [[copy]] * rounds, "sweep": [SWEEP_RATES] * rounds,
                       "overhead": [[OVERHEAD_RATE]] * rounds})


# the caches the tests report: 32 KiB L1, 4 MiB L2, 32 MiB LLC (not the machine's own)
CACHES = [CacheLevel("L1", 1, 32 * 2**10), CacheLevel("L2", 2, 4 * 2**20), CacheLevel("LLC", 3, 32 * 2**20)]


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test here caches under its own HWPROF_CACHE_DIR, never the user's, and sees an idle
    machine (the fake trials take no CPU; the suite's machine may be busy with anything):
    tests/hardware/test_ceilings_cache.py drives the load rule with its own meters."""
    monkeypatch.setenv("HWPROF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(C, "system_load", quiet_load)
    return tmp_path / "cache"


def test_trials_interleave_rounds_over_modes_and_sizes() -> None:
    fake = steady()
    trials, notes = C.run_trials(QUICK_PLAN, 3, fake, budget_s=1.0)
    one_round = [("fp32", 256), ("fp32", 512), ("bf16", 256), ("bf16", 512), ("copy", 64 * 2**20),
                 *(("sweep", ws) for ws in QUICK_SWEEP), ("overhead", 1)]
    assert fake.calls == one_round * 3 and not notes   # round after round, every (mode, size) once each
    assert [t.round for t in trials] == [0] * 9 + [1] * 9 + [2] * 9


def test_ceiling_is_the_best_trial_and_spread_the_gap_between_the_best_two_rounds() -> None:
    # fp32 rounds (fastest size per round): 80, 100, 95 GFLOP/s -> ceiling 100, spread (100 - 95) / 100 = 5%
    fake = FakeTrials({"fp32": [[70e9, 80e9], [90e9, 100e9], [95e9, 60e9]]})
    trials, _ = C.run_trials({"fp32": (256, 512)}, 3, fake, budget_s=1.0)
    best, spread = C.best_of_trials(trials)
    assert best == {"fp32": 100e9}
    assert spread["fp32"] == pytest.approx(0.05)


def test_slow_size_drops_larger_sizes_and_a_failing_mode_is_noted() -> None:
    def trial(mode: str, size: int) -> TrialResult:
        if mode == "bf16":
            raise RuntimeError("bf16 GEMM not supported\nsecond line")
        return TrialResult(1e9, 0.5 if size == 512 else 1e-3)   # n=512 takes 0.5 s > budget 1.0 / 5

    trials, notes = C.run_trials({"fp32": (256, 512, 1024), "bf16": (256,)}, 2, trial, budget_s=1.0)
    assert sorted({t.size for t in trials}) == [256, 512]            # 1024 never ran
    assert len(trials) == 4                                           # 2 sizes x 2 rounds
    assert notes == ["bf16 n=256 failed in round 1: RuntimeError: bf16 GEMM not supported"]


def test_rounds_below_two_are_refused() -> None:
    with pytest.raises(ValueError, match="rounds must be >= 2"):
        C.run_trials(QUICK_PLAN, 1, steady(), budget_s=1.0)


def test_measure_caches_per_machine_in_the_user_cache_then_reads_it(_cache_dir: Path, tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    k = measure_ceilings(device="cpu", quick=True, trial=steady(), caches=CACHES)
    assert k.source == "measured" and not k.flagged
    assert k.roof("fp32") == 1e11 and k.roof("bf16") == 4e11 and k.bytes_per_s == 2e10
    assert k.spread == {"fp32": 0.0, "bf16": 0.0, "bytes_per_s": 0.0, "L2_bytes_per_s": 0.0, "LLC_bytes_per_s": 0.0}
    assert k.host == socket.gethostname() and k.threads == torch.get_num_threads()
    files = list(_cache_dir.glob("ceilings/*.json"))
    assert files == [cache_path(None, k.device_name, quick=True)] and k.cache_file == str(files[0])
    assert socket.gethostname().replace(" ", "_") in files[0].name and f"__{torch.get_num_threads()}threads" in files[0].name
    assert not (tmp_path / "results").exists()                       # nothing in the current folder
    saved = json.loads(files[0].read_text())
    assert saved["flop_per_s"]["fp32"] == 1e11 and len(saved["trials"]) == 27 and len(saved["levels"]) == 4
    never = FakeTrials({})                                            # a cache hit runs no trial
    again = measure_ceilings(device="cpu", quick=True, trial=never)
    assert again.source == "cache" and never.calls == [] and again.roof("fp32") == 1e11
    assert again.trials == k.trials and again.spread == k.spread
    assert again.levels == k.levels and again.sweep == k.sweep and again.op_overhead_s == k.op_overhead_s
    fresh = measure_ceilings(device="cpu", quick=True, refresh=True, trial=steady(fp32=2e11))
    assert fresh.source == "measured" and fresh.roof("fp32") == 2e11


def test_disagreeing_rounds_are_flagged_and_not_cached(_cache_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    # fp32 rounds 54.8 vs 114.9 vs 60 GFLOP/s (a busy machine): best two 114.9 and 60 -> spread 47.8% > 10%
    fake = FakeTrials({"fp32": [[50e9, 54.8e9], [100e9, 114.9e9], [55e9, 60e9]], "bf16": [[1e11, 1e11]] * 3,
                       "copy": [[2e10]] * 3, "sweep": [SWEEP_RATES] * 3, "overhead": [[OVERHEAD_RATE]] * 3})
    with caplog.at_level("WARNING"):
        k = measure_ceilings(device="cpu", quick=True, trial=fake, caches=CACHES)
    assert k.flagged == ("fp32",) and k.spread["fp32"] == pytest.approx((114.9 - 60) / 114.9)
    assert k.roof("fp32") == 114.9e9                                  # still the best trial
    assert not list(_cache_dir.glob("ceilings/*.json")) and k.cache_file is None
    assert any("fp32 ceiling not trusted: best two rounds 47.8% apart" in n for n in k.notes)
    assert "not cached" in caplog.text and "hwprof ceilings --refresh --device cpu" in caplog.text


def test_a_cache_level_whose_rounds_disagree_is_left_out_and_the_rest_cached(_cache_dir: Path) -> None:
    # the 1 MiB point (L2) at 150, 100, 100 GB/s over three rounds: best two 33% apart > 10%;
    # the 64 KiB and 16 MiB points and every roof agree
    sweep = [SWEEP_RATES, [40e9, 100e9, 50e9], [40e9, 100e9, 50e9]]
    fake = FakeTrials({"fp32": [[1e11, 1e11]] * 3, "bf16": [[4e11, 4e11]] * 3, "copy": [[2e10]] * 3,
                       "sweep": sweep, "overhead": [[OVERHEAD_RATE]] * 3})
    k = measure_ceilings(device="cpu", quick=True, trial=fake, caches=CACHES)
    # 1/3 apart in rate; 36.8% once the 1 us op overhead is taken out of each time: above the 10% bound
    assert not k.flagged and k.spread["L2_bytes_per_s"] > 0.10 and k.spread["LLC_bytes_per_s"] <= 0.10
    l2 = next(lv for lv in k.levels if lv.name == "L2")
    assert l2.bytes_per_s is None and l2.source == "untrusted" and l2.capacity_bytes is not None
    assert any("L2 bandwidth not trusted: best two rounds" in n for n in k.notes)
    assert k.cache_file is not None and Path(k.cache_file).exists()   # the roofs are cached
    again = measure_ceilings(device="cpu", quick=True, caches=CACHES)
    assert again.source == "cache" and next(lv for lv in again.levels if lv.name == "L2").bytes_per_s is None


def test_unreadable_or_flagged_cache_is_remeasured(_cache_dir: Path) -> None:
    path = cache_path(None, device_name(torch.device("cpu")), quick=True)
    path.parent.mkdir(parents=True)
    path.write_text("{not json")
    assert measure_ceilings(device="cpu", quick=True, trial=steady()).source == "measured"
    flagged = Ceilings("cpu", "x", "2.13", "2026-11-24", "measured", {"fp32": 1.0}, flagged=("fp32",))
    path.write_text(json.dumps(flagged.to_dict()))
    assert measure_ceilings(device="cpu", quick=True, trial=steady()).source == "measured"


def test_cache_dir_default_and_file_name(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HWPROF_CACHE_DIR", str(tmp_path / "c"))
    assert C.default_cache_dir() == tmp_path / "c" / "ceilings"
    monkeypatch.delenv("HWPROF_CACHE_DIR")
    import platformdirs

    assert C.default_cache_dir() == Path(platformdirs.user_cache_dir("hwprof")) / "ceilings"
    assert C.default_cache_dir().is_absolute() and Path(os.getcwd()) not in C.default_cache_dir().parents
    p = cache_path(tmp_path, "NVIDIA H100 80GB HBM3 / (x)", quick=False, threads=4, host="node 1")
    assert p.parent == tmp_path and "/" not in p.name and " " not in p.name
    assert p.name.startswith("NVIDIA_H100_80GB_HBM3_x__node_1__torch-") and p.name.endswith("__4threads.json")
    assert cache_path(tmp_path, "a", quick=False, threads=2) != cache_path(tmp_path, "a", quick=False, threads=4)
    assert cache_path(tmp_path, "a", False, host="h1") != cache_path(tmp_path, "a", False, host="h2")


def test_ceilings_round_trip_and_one_way_to_ask_for_a_roof() -> None:
    trials = (Trial(0, "bf16", 8192, 7.5e14, 1.5e-3, 20, math.nan), Trial(1, "bf16", 8192, 7.4e14, 1.5e-3))
    k = Ceilings("cuda", "NVIDIA H100 80GB HBM3", "2.11", "2026-11-01", "measured", {"bf16": 7.5e14}, 3e12,
                 trials=trials, spread={"bf16": 0.0133, "bytes_per_s": math.nan})
    assert k.roof("bf16") == 7.5e14 and k.bytes_per_s == 3e12
    back = Ceilings.from_dict(json.loads(json.dumps(to_jsonable(k.to_dict()))))   # through JSON (NaN -> null)
    assert back.roof("bf16") == 7.5e14 and back.trials[1] == trials[1] and math.isnan(back.trials[0].iqr_over_median)
    assert math.isnan(back.spread["bytes_per_s"]) and back.spread["bf16"] == 0.0133
    with pytest.raises(KeyError, match=r"no 'int4' roof .* \(roofs: \['bf16'\]\)"):
        k.roof("int4")
    with pytest.raises(TypeError):
        k["bf16"]   # type: ignore[index]   # no dict-style access: one way to ask


def test_device_trial_runs_a_tiny_gemm_and_copy() -> None:
    """The real trial function on tiny sizes (a smoke check of the plumbing, not a benchmark)."""
    trial = C.device_trial(torch.device("cpu"), budget_s=0.001)
    gemm, copy = trial("fp32", 16), trial("copy", 4096)
    assert gemm.rate_per_s == pytest.approx(2 * 16**3 / gemm.time_s)    # 2 n^3 FLOPs per GEMM
    assert copy.rate_per_s == pytest.approx(2 * 4096 / copy.time_s)    # bytes read + written
    assert gemm.reps >= 5


def test_datasheet_lookup() -> None:
    h100 = lookup("NVIDIA H100 80GB HBM3")
    assert h100 is not None and h100["key"] == "H100 SXM"
    assert h100["bf16"] == pytest.approx(989e12, rel=1e-3)     # dense, not the 1979 sparse figure
    assert h100["tf32"] == pytest.approx(495e12, rel=1e-3)
    assert h100["bytes_per_s"] == pytest.approx(3.35e12)
    assert lookup("NVIDIA H100 PCIe")["key"] == "H100 PCIe"
    assert lookup("NVIDIA H200")["key"] == "H200"
    assert lookup("NVIDIA A100-SXM4-80GB")["key"] == "A100 SXM 80GB"
    assert lookup("NVIDIA A100-SXM4-40GB")["key"] == "A100 SXM 40GB"
    assert lookup("NVIDIA A100-PCIE-40GB")["key"] == "A100 PCIe 40GB"
    assert lookup("NVIDIA A100 80GB PCIe")["key"] == "A100 PCIe 80GB"
    assert lookup("NVIDIA L4")["key"] == "L4"
    assert lookup("NVIDIA L40S")["key"] == "L40S"
    assert lookup("NVIDIA GeForce RTX 4090")["key"] == "RTX 4090"
    assert lookup("Tesla V100-SXM2-16GB")["key"] == "V100 SXM2"
    assert lookup("NVIDIA GeForce RTX 2080 Ti")["key"] == "RTX 2080 Ti"
    assert lookup("Intel(R) Xeon(R) Processor") is None
    for entry in DATASHEET.values():
        assert entry["fp32"] > 0 and entry["bytes_per_s"] > 0
        assert entry["bf16"] is None or entry["bf16"] >= entry["fp32"]


def test_from_datasheet() -> None:
    k = Ceilings.from_datasheet("NVIDIA H100 80GB HBM3")
    assert k is not None and k.source == "datasheet" and k.roof("bf16") == pytest.approx(989.4e12)
    assert k.datasheet_roof("bytes_per_s") == pytest.approx(3.35e12)


def test_resolve_device_and_description() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    info = describe_device(torch.device("cpu"))
    assert info["type"] == "cpu" and info["threads"] == torch.get_num_threads()
    assert not torch.cuda.is_initialized()


def _seed_cache(make: Callable[[], FakeTrials]) -> Ceilings:
    return measure_ceilings(device="cpu", quick=True, trial=make(), caches=CACHES)


def test_ceilings_cli_reads_the_cache(capsys: pytest.CaptureFixture[str]) -> None:
    k = _seed_cache(steady)   # the CLI then reads the cache: no benchmark runs in this test
    assert main(["ceilings", "--device", "cpu", "--quick"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[0].startswith(f"{k.device_name} (cpu, torch {torch.__version__}")
    assert "source cache" in out and "best of 3 rounds" in out and f"cached in {k.cache_file}" in out
    assert "fp32_flop_per_s" in out and "100.00GFLOP/s" in out and "0.0%" in out
    assert main(["ceilings", "--device", "cpu", "--quick", "--format", "csv"]) == 0
    assert capsys.readouterr().out.startswith("ceiling,measured,datasheet,ratio,spread")


def test_measured_levels_from_the_sweep_and_the_op_overhead() -> None:
    k = measure_ceilings(device="cpu", quick=True, trial=steady(), caches=CACHES)
    assert k.op_overhead_s == pytest.approx(1e-6)                       # 1 / 1e6 ops per second
    # 64 KiB: 65536 B / 40 GB/s = 1.64 us < 2 x 1 us overhead -> unresolved;
    # 1 MiB: 1048576 / 150e9 = 6.99 us -> 1048576 B / (6.99 - 1.00) us = 175.0 GB/s (L2);
    # 16 MiB: 16777216 / 50e9 = 335.5 us -> 16777216 B / 334.5 us = 50.15 GB/s (LLC); DRAM the 20 GB/s copy
    names = [(lv.name, lv.capacity_bytes) for lv in k.levels]
    assert names == [("L1", 32 * 2**10), ("L2", 4 * 2**20), ("LLC", 32 * 2**20), ("DRAM", None)]
    bws = [lv.bytes_per_s for lv in k.levels]
    assert bws[0] is None and bws[1] == pytest.approx(1048576 / (1048576 / 150e9 - 1e-6))
    assert bws[2] == pytest.approx(16777216 / (16777216 / 50e9 - 1e-6)) and bws[3] == 2e10
    assert [p.level for p in k.sweep] == ["L2", "L2", "LLC"]             # 64 KiB > the 32 KiB L1
    assert any(n.startswith("L1: bandwidth not resolved") for n in k.notes)
    assert k.level_for(2 * 2**20) == ("L2", bws[1]) and k.level_for(1 * 2**10) == ("L1", bws[1])
    assert k.level_for(2**30) == ("DRAM", 2e10)


def test_a_cache_without_levels_is_measured_again(_cache_dir: Path) -> None:
    """A ceilings file of an earlier hwprof (no sweep) is not reused: the levels would be missing."""
    old = measure_ceilings(device="cpu", quick=True, trial=steady(), caches=CACHES)
    path = Path(old.cache_file or "")
    saved = json.loads(path.read_text())
    for key in ("levels", "sweep", "op_overhead_s"):
        del saved[key]
    path.write_text(json.dumps(saved))
    fresh = measure_ceilings(device="cpu", quick=True, trial=steady(fp32=3e11), caches=CACHES)
    assert fresh.source == "measured" and fresh.roof("fp32") == 3e11 and fresh.levels


def test_ceilings_without_levels_fall_back_to_main_memory() -> None:
    bare = Ceilings("cpu", "x", "2.13", "2026-11-24", "measured", {"fp32": 1e11}, 2e10)
    assert bare.memory_levels() == (MemoryLevel("DRAM", None, 2e10, None, "measured"),)
    assert bare.level_for(10.0) == ("DRAM", 2e10)
    assert Ceilings("cpu", "x", "2.13", "2026-11-24", "measured", {"fp32": 1e11}).memory_levels() == ()


def test_named_devices_and_derating() -> None:
    assert resolve("h100")["key"] == "H100 SXM" and resolve("A100")["key"] == "A100 SXM 80GB"
    assert resolve("MI300X")["key"] == "MI300X" and lookup("AMD Instinct MI300X")["key"] == "MI300X"
    assert resolve("l40s")["key"] == "L40S" and resolve("no such gpu") is None
    bare = Ceilings.from_datasheet("H100")
    assert bare is not None and bare.device_name == "H100 SXM" and bare.roof("bf16") == pytest.approx(989.4e12)
    assert [(lv.name, lv.capacity_bytes, lv.bytes_per_s) for lv in bare.levels] == [
        ("L2", 50 * 2**20, None), ("HBM", None, 3.35e12)]                 # L2 size only: no datasheet bandwidth
    assert bare.level_for(10 * 2**20) == ("L2", 3.35e12) and bare.op_overhead_s is None
    assert any("not derated" in n for n in bare.notes) and any("0 s per op assumed" in n for n in bare.notes)
    # derated by a measured H100's ratios: bf16 x 0.75 = 742.05 TFLOP/s, bandwidth x 0.9 = 3.015 TB/s
    k = Ceilings.from_datasheet("H100", {"bf16": 0.75, "bytes_per_s": 0.9}, "measured H100, 2026-11-01", 4e-6)
    assert k is not None and k.roof("bf16") == pytest.approx(742.05e12) and k.bytes_per_s == pytest.approx(3.015e12)
    assert k.roof("fp32") == pytest.approx(66.9e12) and k.op_overhead_s == 4e-6
    assert any("derated by measured efficiencies (measured H100, 2026-11-01): bf16 x 0.75, bytes_per_s x 0.90" in n
               for n in k.notes)
    assert Ceilings.from_datasheet("L4").levels[-1].name == "DRAM"      # GDDR6, not HBM


def test_ceilings_cli_prints_and_plots_the_levels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _seed_cache(steady)
    assert main(["ceilings", "--device", "cpu", "--quick", "--plot", str(tmp_path / "sweep.png")]) == 0
    out = capsys.readouterr().out
    assert "memory levels (working-set copy sweep, best of the rounds; op overhead 1.00 us taken out):" in out
    assert "L2_bytes_per_s" in out and "175.04GB/s" in out             # 1048576 B / (6.9905 - 1.0000) us
    assert "not resolved" in out and "unresolved" in out                # L1, and the 64 KiB point
    assert (tmp_path / "sweep.png").stat().st_size > 1000 and (tmp_path / "sweep.svg").exists()


def test_copy_repeated_back_to_back_reports_the_time_per_copy(monkeypatch: pytest.MonkeyPatch) -> None:
    """The GPU sweep's batches of copies: one timed repetition runs ``repeat`` copies, and time and
    rate are per copy."""
    calls: list[int] = []

    def bench(fn: Callable[[], None], dev: torch.device, budget_s: float, clock: object = None) -> TrialResult:
        with pytest.MonkeyPatch.context() as m:
            m.setattr(torch.Tensor, "copy_", lambda self, src: calls.append(1) or self)
            fn()
        return TrialResult(0.0, 8e-6 * len(calls))   # 8 us per copy

    monkeypatch.setattr(C, "_bench", bench)
    r = C.copy_bytes_per_s(4096, torch.device("cpu"), repeat=4)
    assert len(calls) == 4 and r.time_s == pytest.approx(8e-6)          # 32 us for the batch of 4 -> 8 us each
    assert r.rate_per_s == pytest.approx(2 * 4096 / 8e-6)                 # 1.024 GB/s: one copy's bytes per copy


def test_ceilings_timed_with_another_clock_are_never_cached(_cache_dir: Path) -> None:
    class CpuClock:
        def now_ns(self) -> int:
            return 0

    k = measure_ceilings(device="cpu", quick=True, trial=steady(), caches=CACHES, clock=CpuClock())
    assert k.cache_file is None and not list(_cache_dir.glob("ceilings/*.json"))
    assert "timed with CpuClock, not perf_counter: not cached" in k.notes
    _seed_cache(steady)                      # a cached perf_counter record is not taken for it either
    again = measure_ceilings(device="cpu", quick=True, trial=steady(fp32=7e11), caches=CACHES, clock=CpuClock())
    assert again.source == "measured" and again.roof("fp32") == 7e11


def test_the_sweep_runs_every_size_even_a_slow_one() -> None:
    """A loaded machine can make a small copy take over budget / 5: the GEMMs stop there, the
    sweep does not (a level it skipped would have no bandwidth)."""
    def trial(mode: str, size: int) -> TrialResult:
        return TrialResult(1e9, 0.5)                                   # every repetition over 1.0 / 5
    trials, _ = C.run_trials({"fp32": (256, 512), "sweep": (2**16, 2**20, 2**24)}, 2, trial, budget_s=1.0,
                             every_size=("sweep",))
    assert sorted({t.size for t in trials if t.mode == "fp32"}) == [256]
    assert sorted({t.size for t in trials if t.mode == "sweep"}) == [2**16, 2**20, 2**24]
