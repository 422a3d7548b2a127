"""A machine whose clocks, probes and trials are scripted, so that ``hwprof measure``, ``hwprof profile``
and ``hwprof ceilings`` print the same JSON on every machine (see README.md beside this file):

* the timers' default clock (``PerfCounterClock``, used by ``time_fn``, the per-layer and paired
  passes) returns 10 us more at every read: every timed call takes one step, a hooked module call
  spans its hooks' reads (a leaf 10 us, a parent with k children 2k + 1 steps, k + 1 of them its own);
* ``torch.profiler``'s CPU time of every event is 10 us (the per-op pass reads ``cpu_time_total``);
* the process's RSS is 100 MiB and its lifetime peak 200 MiB; one intra-op thread;
* the ceilings' trial (``device_trial``) replays fixed rates: fp32 GEMM 90 / 100 GFLOP/s at n = 256 /
  512, bf16 4x that, copy 20 GB/s, the working-set sweep 40, 150 and 50 GB/s at 64 KiB, 1 MiB and
  16 MiB, the per-op overhead 1 us; the caches 32 KiB L1, 4 MiB L2, 32 MiB LLC; date 2026-12-06,
  host "golden-host"; the ceilings cache in a temporary folder.

What stays machine-specific is masked after the run (:func:`mask`): device names, the torch build,
thread and core counts of the device record, the cache file's path, the profiler's timestamps.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
import torch

STEP_NS = 10_000
RSS_BYTES = 100 * 2**20
MAXRSS_BYTES = 200 * 2**20

# (path of keys from the top of the JSON) -> masked; "*" is any list index
MASKED = [("device", "name"), ("device", "cpu_name"), ("device", "torch_version"), ("device", "threads"),
          ("device", "interop_threads"), ("device", "cpu_count"), ("memory_timeline", "time_s"),
          ("device_name",), ("torch_version",), ("cache_file",),
          # the machine's load while the ceilings were measured (a real meter: psutil and the load average)
          ("load", "wall_s"), ("load", "cpus"), ("load", "threads"), ("load", "other_cpus"),
          ("load", "competing_share"), ("load", "loadavg_1m_before"), ("load", "loadavg_1m_after")]


class _StepClock:
    def __init__(self) -> None:
        self.t = 0

    def now_ns(self) -> int:
        self.t += STEP_NS
        return self.t


def _rates(mode: str, size: int) -> Any:
    from hwprof.hardware.ceilings import TrialResult

    if mode in ("fp32", "bf16"):
        rate = (1e11 if mode == "fp32" else 4e11) * (0.9 if size == 256 else 1.0)
        return TrialResult(rate, 2 * size**3 / rate, 10, 0.01)
    if mode == "copy":
        return TrialResult(2e10, 2 * size / 2e10, 10, 0.01)
    if mode == "sweep":
        rate = {2**16: 40e9, 2**20: 150e9, 2**24: 50e9}[size]
        return TrialResult(rate, size / rate, 10, 0.01)
    return TrialResult(1e6, 1e-6, 10, 0.01)      # overhead: ops per second


@contextlib.contextmanager
def fake_machine() -> Iterator[None]:
    from torch.autograd.profiler_util import FunctionEvent

    from hwprof.hardware import ceilings
    from hwprof.hardware.caches import CacheLevel
    from hwprof.measuring import probes, timers

    clock = _StepClock()
    threads = torch.get_num_threads()
    with pytest.MonkeyPatch.context() as mp, tempfile.TemporaryDirectory() as cache:
        mp.setattr(timers.PerfCounterClock, "now_ns", lambda self: clock.now_ns())
        mp.setattr(FunctionEvent, "cpu_time_total", property(lambda e: 10.0))
        mp.setattr(probes, "rss_bytes", lambda: RSS_BYTES)
        mp.setattr(probes, "ru_maxrss_bytes", lambda: MAXRSS_BYTES)
        mp.setattr(ceilings, "device_trial", lambda dev, budget_s, clock=None: _rates)
        mp.setattr(ceilings, "system_caches", lambda dev, threads=None: [
            CacheLevel("L1", 1, 32 * 2**10), CacheLevel("L2", 2, 4 * 2**20), CacheLevel("LLC", 3, 32 * 2**20)])
        mp.setattr(ceilings, "_today", lambda: "2026-12-06")
        mp.setattr(ceilings.socket, "gethostname", lambda: "golden-host")
        mp.setenv("HWPROF_CACHE_DIR", cache)
        torch.set_num_threads(1)
        try:
            yield
        finally:
            torch.set_num_threads(threads)


def _mask_at(node: Any, path: tuple[str, ...]) -> None:
    if not path:
        return
    key, rest = path[0], path[1:]
    items = list(enumerate(node)) if key == "*" and isinstance(node, list) else \
        [(key, node[key])] if isinstance(node, dict) and key in node else []
    for k, v in items:
        if rest:
            _mask_at(v, rest)
        elif v is not None:
            node[k] = "<masked>"


def mask(text: str) -> str:
    """The JSON ``text`` with the machine-specific values of :data:`MASKED` replaced by "<masked>"."""
    data = json.loads(text)
    for path in MASKED:
        if isinstance(data, list):
            for row in data:
                _mask_at(row, path)
        else:
            _mask_at(data, path)
    return json.dumps(data, indent=1) + "\n"
