"""Memory probes: the CUDA caching allocator, NVML device memory, and host RSS.

Three views of GPU memory, from smallest to largest (each includes the one before):

* **allocated** (``torch.cuda.max_memory_allocated``): bytes held by live tensors;
* **reserved** (``torch.cuda.max_memory_reserved``): what the caching allocator took from the
  driver; it keeps freed blocks for reuse, so reserved >= allocated;
* **NVML used** (``nvmlDeviceGetMemoryInfo().used``): the whole device as the driver sees it:
  reserved + the CUDA context (kernels, cuBLAS/cuDNN workspaces, ~0.5 GB) + other processes.
  Sampled by a thread every ``interval_s`` (default 5 ms) against a baseline taken before the run.

On the host: ``psutil`` RSS sampled in a thread against a baseline, and
``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (KiB on Linux, bytes on macOS) as a cross-check:
it is the lifetime peak of the process, not of this run.

The results are records: :class:`RunPeaks` (the whole run: NVML, RSS) and :class:`PhasePeak`
(the allocator during one timed phase); :class:`hwprof.measuring.records.MemoryRecord` joins
them with the allocator trace (:mod:`hwprof.measuring.alloc_trace`).

Reading a probe never creates a CUDA context: CUDA functions run only for a CUDA device that
is already initialised. NVML is optional: when ``pynvml`` is missing, the driver does not
match or access is denied, NVML fields are None and :attr:`MemoryProbes.notes` says why.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

__all__ = ["PeakSampler", "Nvml", "MemoryProbes", "PhasePeak", "RunPeaks", "allocator_peaks", "cuda_peaks",
           "cuda_current", "cuda_reset_peaks", "rss_bytes", "ru_maxrss_bytes"]

log = logging.getLogger(__name__)

_T = TypeVar("_T")


# --------------------------------------------------------------------------- torch allocator
def _cuda_ready(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_available() and torch.cuda.is_initialized()


def cuda_reset_peaks(device: torch.device) -> None:
    """``torch.cuda.reset_peak_memory_stats`` (no-op unless ``device`` is an initialised CUDA device)."""
    if _cuda_ready(device):
        torch.cuda.reset_peak_memory_stats(device)


def cuda_peaks(device: torch.device) -> tuple[int | None, int | None]:
    """(max_memory_allocated, max_memory_reserved) in bytes since the last reset; (None, None) off CUDA."""
    if not _cuda_ready(device):
        return None, None
    return int(torch.cuda.max_memory_allocated(device)), int(torch.cuda.max_memory_reserved(device))


def cuda_current(device: torch.device) -> tuple[int | None, int | None]:
    """(memory_allocated, memory_reserved) in bytes now; (None, None) off CUDA."""
    if not _cuda_ready(device):
        return None, None
    return int(torch.cuda.memory_allocated(device)), int(torch.cuda.memory_reserved(device))


# --------------------------------------------------------------------------- host
def rss_bytes() -> int | None:
    """Resident set size of this process (psutil), bytes."""
    try:
        import psutil
    except ImportError:
        return None
    return int(psutil.Process().memory_info().rss)


def ru_maxrss_bytes() -> int | None:
    """Lifetime peak RSS from ``getrusage``: ru_maxrss is KiB on Linux, bytes on macOS."""
    try:
        import resource
    except ImportError:   # Windows
        return None
    v = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(v if sys.platform == "darwin" else v * 1024)


# --------------------------------------------------------------------------- sampling
class PeakSampler:
    """Calls ``read()`` every ``interval_s`` in a daemon thread and keeps the maximum (bytes).

    One sample is taken on ``start()`` and one on ``stop()``, so a run shorter than the interval
    still has a peak. ``read`` returning None or raising stops nothing; the error is kept.
    """

    def __init__(self, read: Callable[[], int | None], interval_s: float = 0.005, name: str = "sampler") -> None:
        self.read = read
        self.interval_s = max(1e-4, interval_s)
        self.peak: int | None = None
        self.samples = 0
        self.error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name=f"hwprof-{name}", daemon=True)

    def _sample(self) -> None:
        try:
            v = self.read()
        except Exception as e:  # a failing probe must not kill the measurement
            self.error = f"{type(e).__name__}: {e}"
            return
        if v is not None:
            self.samples += 1
            self.peak = v if self.peak is None else max(self.peak, v)

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def start(self) -> PeakSampler:
        self._sample()
        self._thread.start()
        return self

    def stop(self) -> int | None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()
        self._sample()
        return self.peak


# --------------------------------------------------------------------------- NVML
def _import_pynvml() -> Any:
    import pynvml  # optional dependency, imported lazily
    return pynvml


class Nvml:
    """A lazily opened NVML handle for one CUDA device; ``handle`` is None and ``reason`` says why when unusable.

    The NVML device is found by UUID (robust to ``CUDA_VISIBLE_DEVICES`` reordering), else by index.
    """

    def __init__(self, device: torch.device) -> None:
        self.handle: Any = None
        self.reason: str | None = None
        self.nv: Any = None
        try:
            nv = _import_pynvml()
        except ImportError as e:
            self.reason = f"NVML unavailable: the 'pynvml' module (package nvidia-ml-py) is not importable ({e})"
            return
        try:
            nv.nvmlInit()
        except Exception as e:  # NVMLError_* (library not found, driver mismatch, no permission)
            self.reason = f"NVML unavailable: nvmlInit failed ({type(e).__name__}: {e}); NVML fields are None"
            return
        self.nv = nv
        try:
            self.handle = self._find_handle(nv, device)
        except Exception as e:
            self.reason = f"NVML unavailable: no handle for {device} ({type(e).__name__}: {e}); NVML fields are None"
            self.close()

    @staticmethod
    def _find_handle(nv: Any, device: torch.device) -> Any:
        index = device.index or 0
        uuid = None
        if device.type == "cuda" and torch.cuda.is_available():
            uuid = getattr(torch.cuda.get_device_properties(index), "uuid", None)
        if uuid is not None:
            text = str(uuid)
            try:
                return nv.nvmlDeviceGetHandleByUUID(text if text.startswith("GPU-") else f"GPU-{text}")
            except Exception:  # fall back to the index
                log.debug("NVML lookup by UUID %s failed; using index %d", text, index)
        return nv.nvmlDeviceGetHandleByIndex(index)

    @property
    def ok(self) -> bool:
        return self.handle is not None

    def used_bytes(self) -> int | None:
        """Device memory used (all processes + contexts), bytes."""
        if not self.ok:
            return None
        return int(self.nv.nvmlDeviceGetMemoryInfo(self.handle).used)

    def process_bytes(self) -> tuple[int | None, str | None]:
        """(this process's device memory in bytes, or None, and why it is None)."""
        if not self.ok:
            return None, None
        try:
            procs = self.nv.nvmlDeviceGetComputeRunningProcesses(self.handle)
        except Exception as e:
            return None, f"NVML per-process memory unavailable ({type(e).__name__}: {e})"
        for p in procs:
            if p.pid == os.getpid():
                used = getattr(p, "usedGpuMemory", None)
                if used is None:
                    return None, "NVML lists this process without its memory (not permitted by the driver)"
                return int(used), None
        return None, "NVML does not list this process (PID namespace of a container?); nvml_process_bytes is None"

    def info(self) -> dict[str, Any]:
        """Name, driver, memory total, clocks (MHz: current and max SM / memory), power limit (W)."""
        if not self.ok:
            return {}
        nv, h = self.nv, self.handle
        out: dict[str, Any] = {}
        queries: dict[str, Callable[[], Any]] = {
            "nvml_name": lambda: nv.nvmlDeviceGetName(h),
            "driver": lambda: nv.nvmlSystemGetDriverVersion(),
            "memory_total_bytes": lambda: int(nv.nvmlDeviceGetMemoryInfo(h).total),
            "sm_clock_mhz": lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_SM),
            "sm_clock_max_mhz": lambda: nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_SM),
            "mem_clock_mhz": lambda: nv.nvmlDeviceGetClockInfo(h, nv.NVML_CLOCK_MEM),
            "mem_clock_max_mhz": lambda: nv.nvmlDeviceGetMaxClockInfo(h, nv.NVML_CLOCK_MEM),
            "power_limit_w": lambda: nv.nvmlDeviceGetEnforcedPowerLimit(h) / 1000.0,
            "temperature_c": lambda: nv.nvmlDeviceGetTemperature(h, nv.NVML_TEMPERATURE_GPU),
        }
        for key, q in queries.items():
            try:
                v = q()
            except Exception:  # some queries are not supported on every GPU
                continue
            out[key] = v.decode() if isinstance(v, bytes) else v
        return out

    def close(self) -> None:
        if self.nv is not None:
            with contextlib.suppress(Exception):
                self.nv.nvmlShutdown()
            self.nv = None
            self.handle = None


# --------------------------------------------------------------------------- records
@dataclass(frozen=True)
class PhasePeak:
    """The CUDA caching allocator's peaks during one timed phase, bytes (None off CUDA):
    ``torch.cuda.max_memory_allocated`` / ``max_memory_reserved`` after a reset at the phase's start."""

    phase: str
    alloc_bytes: int | None = None
    reserved_bytes: int | None = None


@dataclass(frozen=True)
class RunPeaks:
    """The probes that watch the whole run, bytes (None where a probe does not apply or failed):
    NVML's device-wide used memory (sampled peak, baseline before the run, this process's share at
    the end) and the process's RSS (sampled peak, baseline, ``getrusage`` lifetime peak)."""

    nvml_used_peak_bytes: int | None = None
    nvml_baseline_bytes: int | None = None
    nvml_process_bytes: int | None = None
    rss_peak_bytes: int | None = None
    rss_baseline_bytes: int | None = None
    ru_maxrss_bytes: int | None = None

    def to_dict(self) -> dict[str, int | None]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunPeaks:
        return cls(**{f.name: d.get(f.name) for f in dataclasses.fields(cls)})


def allocator_peaks(device: torch.device, phase: str, fn: Callable[[], _T]) -> tuple[_T, PhasePeak]:
    """Run ``fn`` between a reset and a read of the CUDA allocator's peak counters: (its result, the phase's peaks)."""
    cuda_reset_peaks(device)
    out = fn()
    alloc, reserved = cuda_peaks(device)
    return out, PhasePeak(phase, alloc, reserved)


# --------------------------------------------------------------------------- all probes of a run
class MemoryProbes:
    """The probes that watch a whole measurement: baselines and sampling threads (RSS, NVML).

    Usage::

        with MemoryProbes(device) as probes:   # baselines + samplers start; samplers stop on exit
            ...
        probes.result()                        # RunPeaks (bytes; None where not measurable)
        probes.notes, probes.nvml_info         # why a probe is missing; NVML's device facts

    ``use_nvml`` defaults to ``device.type == "cuda"``. The allocator's per-phase peaks come from
    :func:`allocator_peaks`.
    """

    def __init__(self, device: torch.device, interval_s: float = 0.005, use_nvml: bool | None = None) -> None:
        self.device = device
        self.interval_s = interval_s
        self.use_nvml = device.type == "cuda" if use_nvml is None else use_nvml
        self.notes: list[str] = []
        self.nvml: Nvml | None = None
        self.nvml_info: dict[str, Any] = {}
        self._rss: PeakSampler | None = None
        self._nvml_sampler: PeakSampler | None = None
        self._rss_baseline: int | None = None
        self._nvml_baseline: int | None = None
        self._peaks = RunPeaks()

    def __enter__(self) -> MemoryProbes:
        self._rss_baseline = rss_bytes()
        self._rss = PeakSampler(rss_bytes, self.interval_s, "rss").start()
        if self.use_nvml:
            self.nvml = Nvml(self.device)
            if self.nvml.ok:
                self.nvml_info = self.nvml.info()
                self._nvml_baseline = self.nvml.used_bytes()
                self._nvml_sampler = PeakSampler(self.nvml.used_bytes, self.interval_s, "nvml").start()
            elif self.nvml.reason:
                self.notes.append(self.nvml.reason)
        return self

    def __exit__(self, *exc: object) -> None:
        process = None
        if self.nvml is not None and self.nvml.ok:
            process, why = self.nvml.process_bytes()
            if why:
                self.notes.append(why)
        nvml_peak = None
        if self._nvml_sampler is not None:
            nvml_peak = self._nvml_sampler.stop()
            if self._nvml_sampler.error:
                self.notes.append(f"NVML sampling failed: {self._nvml_sampler.error}")
        rss_peak = self._rss.stop() if self._rss is not None else None
        if self.nvml is not None:
            self.nvml.close()
        self._peaks = RunPeaks(nvml_used_peak_bytes=nvml_peak, nvml_baseline_bytes=self._nvml_baseline,
                               nvml_process_bytes=process, rss_peak_bytes=rss_peak,
                               rss_baseline_bytes=self._rss_baseline, ru_maxrss_bytes=ru_maxrss_bytes())

    def result(self) -> RunPeaks:
        """The whole-run peaks (after the block; all None before it ended)."""
        return self._peaks
