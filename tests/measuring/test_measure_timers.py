"""time_fn and TimingStats with a scripted clock (no real timing noise), plus one real-clock check."""

from __future__ import annotations

import itertools
import logging
import time

import pytest
import torch
from measure_helpers import FakeClock
from torch import nn

from hwprof.measuring import timers
from hwprof.measuring.runner import measure
from hwprof.measuring.timers import TimingStats, time_fn

MS = 1_000_000  # ns


def scripted(clock: FakeClock, durations_ns: list[int]):
    """A fn whose n-th call takes durations_ns[n] on ``clock`` (cycling)."""
    it = itertools.cycle(durations_ns)
    return lambda: clock.advance(next(it))


def test_statistics_from_scripted_durations() -> None:
    clock = FakeClock()
    # timed reps see 5, 1, 4, 2, 3 ms: sorted 1..5 -> median 3, q25 2, q75 4 (numpy linear), min 1, mean 3
    stats = time_fn(scripted(clock, [5 * MS, 1 * MS, 4 * MS, 2 * MS, 3 * MS]), warmup=0, min_reps=5,
                    max_reps=5, budget_s=100, clock=clock)
    assert stats.times_s == pytest.approx([0.005, 0.001, 0.004, 0.002, 0.003])
    assert stats.reps == 5
    assert stats.median_s == pytest.approx(0.003)
    assert stats.iqr_s == pytest.approx(0.002)
    assert stats.min_s == pytest.approx(0.001)
    assert stats.mean_s == pytest.approx(0.003)
    assert stats.iqr_over_median == pytest.approx(2 / 3)
    assert stats.stop_reason == "max_reps"


def test_quartiles_interpolate_like_numpy() -> None:
    # [1, 2, 3, 10]: q25 at position 0.75 -> 1.75; q75 at 2.25 -> 3 + 0.25 * 7 = 4.75; median 2.5
    s = TimingStats([10.0, 1.0, 3.0, 2.0])
    assert s.median_s == pytest.approx(2.5)
    assert s.iqr_s == pytest.approx(3.0)
    assert set(s.to_dict()) >= {"median_s", "iqr_s", "min_s", "mean_s", "reps", "iqr_over_median", "times_s"}


def test_budget_stops_the_loop() -> None:
    clock = FakeClock()
    # 10 ms per rep, budget 0.1 s: the 10th rep reaches the budget; target_iqr=0 disables the stability stop
    stats = time_fn(scripted(clock, [10 * MS]), warmup=2, min_reps=3, max_reps=1000, budget_s=0.1,
                    target_iqr=0, clock=clock)
    assert stats.reps == 10
    assert stats.stop_reason == "budget"


def test_min_reps_beats_the_budget() -> None:
    clock = FakeClock()
    stats = time_fn(scripted(clock, [10 * MS]), warmup=0, min_reps=20, budget_s=0.01, target_iqr=0, clock=clock)
    assert stats.reps == 20


def test_stable_iqr_stops_after_min_reps() -> None:
    clock = FakeClock()
    stats = time_fn(scripted(clock, [1 * MS]), warmup=0, min_reps=7, budget_s=1e6, target_iqr=0.02, clock=clock)
    assert stats.reps == 7
    assert stats.stop_reason == "stable"


def test_unstable_runs_until_max_reps() -> None:
    clock = FakeClock()
    stats = time_fn(scripted(clock, [1 * MS, 2 * MS]), warmup=0, min_reps=4, max_reps=40, budget_s=1e6,
                    target_iqr=0.02, clock=clock)
    assert stats.reps == 40
    assert stats.stop_reason == "max_reps"


def test_warning_above_ten_percent(caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    with caplog.at_level(logging.WARNING, logger="hwprof.measuring.timers"):
        noisy = time_fn(scripted(clock, [1 * MS, 2 * MS]), warmup=0, min_reps=10, max_reps=10, clock=clock)
    assert noisy.noisy
    assert any("IQR/median" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="hwprof.measuring.timers"):
        # 100 vs 105 ms: IQR/median = 5% -> quiet
        quiet = time_fn(scripted(clock, [100 * MS, 105 * MS]), warmup=0, min_reps=10, max_reps=10, clock=clock)
    assert not quiet.noisy
    assert not caplog.records
    # the ceilings' trials keep the flag but not the warning (their rounds' agreement judges them)
    silent = time_fn(scripted(clock, [1 * MS, 2 * MS]), warmup=0, min_reps=10, max_reps=10, clock=clock,
                     warn_noisy=False)
    assert silent.noisy and not caplog.records


def test_setup_is_outside_the_timed_region() -> None:
    clock = FakeClock()
    calls = {"setup": 0}

    def setup() -> None:
        calls["setup"] += 1
        clock.advance(1_000 * MS)   # 1 s of setup per rep, never timed

    stats = time_fn(scripted(clock, [2 * MS]), setup=setup, warmup=3, min_reps=5, max_reps=5, clock=clock)
    assert stats.times_s == pytest.approx([0.002] * 5)
    assert calls["setup"] == 3 + 5   # warm-up reps get their setup too


def test_l2_flush_runs_in_setup_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The flush runs before every rep (warm-up included), after ``setup`` and outside the timed
    region: the spy wraps the real flusher, records each call and "takes" 1 s of the fake clock."""
    clock = FakeClock()
    events: list[str] = []
    real = timers.make_l2_flusher

    def spy(device: str | torch.device):  # type: ignore[no-untyped-def]
        flush = real(device)              # the real buffer and its write

        def flush_and_record() -> None:
            flush()
            events.append("flush")
            clock.advance(1_000 * MS)
        return flush_and_record

    def fn() -> None:
        events.append("fn")
        clock.advance(1 * MS)

    monkeypatch.setattr(timers, "make_l2_flusher", spy)
    stats = time_fn(fn, setup=lambda: events.append("setup"), l2_flush=True, warmup=1, min_reps=3, max_reps=3,
                    clock=clock)
    assert events == ["setup", "flush", "fn"] * 4          # 1 warm-up + 3 timed reps, each flushed after setup
    assert stats.times_s == pytest.approx([0.001] * 3)      # the flush's 1 s is not in any rep
    events.clear()
    time_fn(fn, setup=lambda: events.append("setup"), warmup=1, min_reps=3, max_reps=3, clock=clock)
    assert "flush" not in events                            # l2_flush=False: no flusher is made


def test_cpu_l2_flusher_zeroes_a_buffer_of_its_size(monkeypatch: pytest.MonkeyPatch) -> None:
    from torch.utils._python_dispatch import TorchDispatchMode

    class Ops(TorchDispatchMode):
        def __init__(self) -> None:
            super().__init__()
            self.seen: list[tuple[str, int, torch.dtype]] = []

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            self.seen.append((str(func), args[0].numel(), args[0].dtype))
            return func(*args, **(kwargs or {}))

    monkeypatch.setattr(timers, "_cpu_l2_bytes", lambda: 2 * 2**20)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 3)
    assert timers.l2_flush_bytes("cpu") == 24 * 2**20       # 4 x 2 MiB L2 x 3 threads = 24 MiB (> the 16 MiB floor)
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert timers.l2_flush_bytes("cpu") == 16 * 2**20       # 4 x 2 MiB x 1 = 8 MiB: the 16 MiB floor
    flush = timers.make_l2_flusher("cpu")
    with Ops() as ops:
        flush()
    assert ops.seen == [("aten.zero_.default", 16 * 2**20, torch.uint8)]   # one write of every byte


class Sleeper(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        time.sleep(0.010)
        return x


def test_real_clock_sleep_is_ten_milliseconds_in_seconds() -> None:
    m = measure(Sleeper(), torch.zeros(1), device="cpu", budget_s=0.25, warmup=1)
    median = m.phases.loc["fwd_nograd", "median_s"]
    assert median == pytest.approx(0.010, abs=0.001)   # seconds, not ms
    assert m.timings["fwd_nograd"].reps >= 10


def test_noisy_means_above_ten_percent_and_max_reps_defaults_to_1000() -> None:
    # [8, 10, 10, 12]: q25 8 + 0.75 x 2 = 9.5, q75 10 + 0.25 x 2 = 10.5, median 10: IQR/median exactly 10%
    assert TimingStats([8.0, 10.0, 10.0, 12.0]).iqr_over_median == 0.1
    assert not TimingStats([8.0, 10.0, 10.0, 12.0]).noisy          # "above" 10%: the bound itself is quiet
    assert TimingStats([8.0, 10.0, 10.0, 12.5]).noisy
    clock = FakeClock()
    # 1 and 2 ms alternating never get stable and the budget is never reached: the default max_reps stops it
    stats = time_fn(scripted(clock, [1 * MS, 2 * MS]), warmup=0, budget_s=1e6, clock=clock, warn_noisy=False)
    assert stats.reps == 1000 and stats.stop_reason == "max_reps"


def test_cpu_l2_size_is_read_from_sysfs(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    def level(name: str, lvl: int, size: str) -> None:
        d = tmp_path / name
        d.mkdir()
        (d / "level").write_text(f"{lvl}\n")
        (d / "size").write_text(f"{size}\n")

    real_path = timers.Path
    monkeypatch.setattr(timers, "Path", lambda p: tmp_path if p == "/sys/devices/system/cpu/cpu0/cache" else real_path(p))
    level("index0", 1, "48K")
    level("index2", 2, "1280K")                      # 1280 x 1024 = 1,310,720 B
    level("index3", 3, "48M")
    assert timers._cpu_l2_bytes() == 1280 * 2**10
    level("index4", 2, "2M")                         # the largest L2 listed: 2 x 2**20
    assert timers._cpu_l2_bytes() == 2 * 2**20
    for d in tmp_path.iterdir():
        (d / "level").write_text("1\n")
    assert timers._cpu_l2_bytes() == 2 * 2**20       # no L2 at all: 2 MiB


def test_a_forward_phase_frees_its_output_outside_the_timed_region() -> None:
    """The fwd phase's output (with its autograd graph) is still alive when a repetition's end mark is read,
    and gone by the next repetition's start mark: its teardown is untimed, as in a user's loop that keeps
    ``out`` for the loss."""
    import weakref

    from hwprof.measuring.runner import measure

    outputs: list[weakref.ref] = []
    model = torch.nn.Linear(4, 4)
    model.register_forward_hook(lambda m, i, o: outputs.append(weakref.ref(o)))
    alive_at_reads: list[int] = []

    class Clock:
        t = 0

        def now_ns(self) -> int:
            alive_at_reads.append(sum(r() is not None for r in outputs))
            self.t += 1000
            return self.t

    measure(model, "4", mode="train", device="cpu", warmup=1, min_reps=4, max_reps=4, budget_s=0.0,
            per_layer=False, alloc_trace=False, clock=Clock())
    # fwd phase: start mark with no output alive, end mark with exactly this repetition's output alive
    fwd_reads = alive_at_reads[1:9]            # after the budget's start read: 4 reps x (start, end)
    assert fwd_reads == [0, 1] * 4, alive_at_reads
