"""A fake CUDA device on the CPU, so that hwprof's CUDA-only branches run in CI.

What it checks is the **code path, not the numbers**: every ``torch.cuda`` function, event method
and NVML query hwprof calls exists under that name with those arguments (the stand-ins mirror
torch's and pynvml's signatures, and ``tests/gpu/test_fake_layer.py`` checks that they do), the
values come back in the units the real ones use (``Event.elapsed_time`` in milliseconds, memory in
bytes, NVML power in milliwatts), and the order of work is the one CUDA needs (an event is read
only after a synchronisation that covers it). Tensors stay on the CPU; times come from a fake
clock; the allocator's bytes are those of the tensors created for the device, not what a GPU
would hold.

Pieces (all installed by :func:`install`, undone by the ``monkeypatch`` that installed them):

* ``torch.cuda``: ``is_available``, ``device_count``, ``current_device``, ``is_initialized``,
  ``init``, ``get_device_name``, ``get_device_properties``, ``get_device_capability``,
  ``synchronize``, ``Event``, ``device`` (context manager), ``get_rng_state`` /
  ``set_rng_state`` (``torch.random.fork_rng``), the allocator statistics
  (``memory_allocated``, ``memory_reserved``, ``max_memory_allocated``, ``max_memory_reserved``,
  ``reset_peak_memory_stats``, ``empty_cache``), ``mem_get_info``,
  ``set_per_process_memory_fraction`` / ``get_per_process_memory_fraction``, ``nvtx.range_push`` /
  ``range_pop``, ``torch._C._cuda_clearCublasWorkspaces``; ``torch.cuda.OutOfMemoryError`` is
  torch's own class, raised by the fake allocator beyond its capacity.
* ``pynvml``: a module with ``nvmlInit``, the handle lookups, ``nvmlDeviceGetMemoryInfo`` (total,
  free, used), per-process memory, name, driver, clocks, power limit, temperature.
* :class:`CudaOnCpu`, a ``TorchFunctionMode``: a tensor asked for on ``"cuda"`` (a factory's
  ``device=``, ``Tensor.to``, ``Module.to``, ``Tensor.cuda``) is made on the CPU instead and its
  storage counted by the fake allocator until it dies. Under a ``FakeTensorMode`` (counting, the
  memory replay) "cuda" stays CUDA: fake CUDA tensors dispatch to CUDA's kernels, as on a GPU.
"""

from __future__ import annotations

import contextlib
import os
import sys
import types
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensor
from torch.overrides import TorchFunctionMode

SEGMENT_BYTES = 2 * 2**20
"""The fake caching allocator reserves in 2 MiB segments (the real one's small-segment size)."""


def _round_up(n: int, to: int) -> int:
    return -(-n // to) * to


@dataclass
class FakeProperties:
    """``torch.cuda.get_device_properties`` of the fake device (field names as torch's
    ``_CudaDeviceProperties``; the test checks them against torch's stub)."""

    name: str
    major: int
    minor: int
    multi_processor_count: int
    total_memory: int
    L2_cache_size: int
    uuid: str


@dataclass
class FakeGpu:
    """The fake device's state: its facts, its clock, its allocator, the calls made to it.

    ``clock``: anything with ``now_ns()``; ``Event.record`` stamps an event with it (default: a
    clock that advances ``event_step_ns`` per read, so every event pair spans a whole number of
    steps). ``capacity_bytes`` (default ``total_memory_bytes``) is where the allocator raises
    ``torch.cuda.OutOfMemoryError``; ``set_per_process_memory_fraction`` moves it.
    ``kernel_us``: the device time (microseconds) of the one kernel the fake profiler gives each
    aten op of that name in a profiled run (``"aten::mm"``); ``default_kernel_us`` that of the kernel
    each other innermost aten op gets, unless it runs inside a listed one. They are not CPU times
    and not zero, so a reader of the wrong field gets other numbers.
    """

    name: str = "NVIDIA H200"
    capability: tuple[int, int] = (9, 0)
    total_memory_bytes: int = 2 * 2**30
    l2_cache_bytes: int = 4 * 2**20
    sm_count: int = 132
    uuid: str = "GPU-00000000-fake-0000-0000-000000000000"
    driver: str = "580.00 (fake)"
    context_bytes: int = 500 * 2**20
    event_step_ns: int = 1_000_000
    kernel_us: dict[str, float] = field(default_factory=dict)
    default_kernel_us: float = 1.0
    clock: Any = None
    fraction: float = 1.0
    allocated_bytes: int = 0
    reserved_bytes: int = 0
    peak_allocated_bytes: int = 0
    peak_reserved_bytes: int = 0
    calls: dict[str, int] = field(default_factory=dict)
    _live: dict[int, int] = field(default_factory=dict)
    _finalizers: list[Any] = field(default_factory=list)
    _recorded: int = 0
    _completed: int = 0
    _ticks: int = 0
    _rng: dict[int, torch.Tensor] = field(default_factory=dict)

    # ------------------------------------------------------------------ bookkeeping
    def called(self, name: str) -> None:
        self.calls[name] = self.calls.get(name, 0) + 1

    def now_ns(self) -> int:
        if self.clock is not None:
            return int(self.clock.now_ns())
        self._ticks += 1
        return self._ticks * self.event_step_ns

    def record(self) -> tuple[int, int]:
        """(sequence number, time) of an event recorded now on the (one) stream."""
        self._recorded += 1
        return self._recorded, self.now_ns()

    def complete(self, upto: int | None = None) -> None:
        """Everything recorded up to sequence number ``upto`` (default: all) has run."""
        self._completed = max(self._completed, self._recorded if upto is None else upto)

    def completed(self, seq: int) -> bool:
        return seq <= self._completed

    # ------------------------------------------------------------------ allocator
    @property
    def capacity_bytes(self) -> int:
        return int(self.fraction * self.total_memory_bytes)

    def track(self, t: Any) -> None:
        """Count ``t``'s storage as allocated on the device until it dies (once per storage)."""
        if not isinstance(t, torch.Tensor) or isinstance(t, FakeTensor) or t.device.type == "meta":
            return
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        key, nbytes = int(st._cdata), int(st.nbytes())
        if key in self._live:
            return
        if self.allocated_bytes + nbytes > self.capacity_bytes:
            raise torch.cuda.OutOfMemoryError(
                f"CUDA out of memory. Tried to allocate {nbytes / 2**20:.2f} MiB. GPU 0 has a total capacity of "
                f"{self.total_memory_bytes / 2**30:.2f} GiB of which {self.capacity_bytes - self.allocated_bytes} "
                "bytes is free (fake device)")
        self._live[key] = nbytes
        self.allocated_bytes += nbytes
        self.reserved_bytes = max(self.reserved_bytes, _round_up(self.allocated_bytes, SEGMENT_BYTES))
        self.peak_allocated_bytes = max(self.peak_allocated_bytes, self.allocated_bytes)
        self.peak_reserved_bytes = max(self.peak_reserved_bytes, self.reserved_bytes)
        self._finalizers.append(weakref.finalize(st, self._free, key))

    def _free(self, key: int) -> None:
        self.allocated_bytes -= self._live.pop(key, 0)

    def release(self) -> None:
        """Detach the finalizers (the fake is gone; storages still alive must not call into it)."""
        for f in self._finalizers:
            f.detach()
        self._finalizers.clear()


def _is_cuda(d: Any) -> bool:
    if isinstance(d, torch.device):
        return d.type == "cuda"
    if isinstance(d, str):
        return d.split(":")[0].strip().lower() == "cuda"
    return isinstance(d, int) and not isinstance(d, bool)


class CudaOnCpu(TorchFunctionMode):
    """Tensors asked for on a CUDA device are made on the CPU and counted by ``gpu``'s allocator."""

    def __init__(self, gpu: FakeGpu) -> None:
        super().__init__()
        self.gpu = gpu

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = dict(kwargs or {})
        to_cuda = False
        name = getattr(func, "__name__", "")
        if _fake_mode_active():
            return _fake_on_cuda(func, name, args, kwargs)
        if name != "_parse_to" and "device" in kwargs and _is_cuda(kwargs["device"]):   # Module.to parses first
            kwargs["device"] = torch.device("cpu")
            to_cuda = True
        if name in ("to", "cuda") and args and isinstance(args[0], torch.Tensor):
            if name == "cuda":
                func, args, to_cuda = torch.Tensor.to, (args[0], torch.device("cpu")), True
            elif len(args) > 1 and not isinstance(args[1], (torch.dtype, torch.Tensor)) and _is_cuda(args[1]):
                args = (args[0], torch.device("cpu"), *args[2:])
                to_cuda = True
        out = func(*args, **kwargs)
        if to_cuda:
            self.gpu.track(out)
        return out


def _fake_mode_active() -> bool:
    return torch._C._get_dispatch_mode(torch._C._TorchDispatchModeKey.FAKE) is not None


def _fake_on_cuda(func: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """Under a ``FakeTensorMode`` (counting, the memory replay) "cuda" stays CUDA: fake CUDA tensors
    need no device, and ops on them dispatch to CUDA's kernels as on a GPU. Only a copy of a fake
    tensor to CUDA (``.to`` / ``.cuda``), which a CPU build of torch refuses, is made as a new fake
    CUDA tensor of the same shape, strides and (requested) dtype."""
    t = args[0] if args and isinstance(args[0], torch.Tensor) else None
    target = kwargs.get("device", args[1] if len(args) > 1 and not isinstance(args[1], (torch.dtype, torch.Tensor))
                        else None)
    if name in ("to", "cuda") and isinstance(t, FakeTensor) and t.device.type != "cuda" \
            and (name == "cuda" or (target is not None and _is_cuda(target))):
        dtype = kwargs.get("dtype") or next((a for a in args[1:] if isinstance(a, torch.dtype)), t.dtype)
        return torch.empty_strided(tuple(t.shape), tuple(t.stride()), dtype=dtype, device="cuda")
    return func(*args, **kwargs)


# ---------------------------------------------------------------------- torch.cuda stand-ins
def _device_index(gpu: FakeGpu, device: Any) -> int:
    """As ``torch.cuda._utils._get_device_index(device, optional=True)``: a CPU device is an error."""
    if device is None:
        return 0
    if isinstance(device, str):
        device = torch.device(device)
    if isinstance(device, torch.device):
        if device.type != "cuda":
            raise ValueError(f"Expected a cuda device, but got: {device}")
        device = 0 if device.index is None else device.index
    if not isinstance(device, int) or device != 0:
        raise AssertionError(f"the fake has one device (index 0); got {device!r}")
    return device


def _event_class(gpu: FakeGpu) -> type:
    class Event:
        """``torch.cuda.Event``: record stamps the fake clock; elapsed_time in ms, only once both
        events have completed (a synchronisation after their record), as CUDA requires."""

        def __init__(self, enable_timing: bool = False, blocking: bool = False, interprocess: bool = False,
                     external: bool = False) -> None:
            gpu.called("Event")
            self.enable_timing = enable_timing
            self.seq: int | None = None
            self.t_ns: int | None = None

        def record(self, stream: Any = None) -> None:
            self.seq, self.t_ns = gpu.record()

        def synchronize(self) -> None:
            gpu.called("Event.synchronize")
            if self.seq is not None:
                gpu.complete(self.seq)

        def query(self) -> bool:
            return self.seq is None or gpu.completed(self.seq)

        def wait(self, stream: Any = None) -> None:
            return None

        def elapsed_time(self, end_event: Any) -> float:
            if not (self.enable_timing and end_event.enable_timing):
                raise RuntimeError("Both events must be created with argument 'enable_timing=True'.")
            if self.seq is None or end_event.seq is None:
                raise RuntimeError("Both events must be recorded before calculating elapsed time.")
            if not (gpu.completed(self.seq) and gpu.completed(end_event.seq)):
                raise RuntimeError("CUDA error: device not ready (event read before a synchronisation)")
            return (end_event.t_ns - self.t_ns) / 1e6
    return Event


def _device_class(gpu: FakeGpu) -> type:
    class device:  # noqa: N801 - torch's name
        """``torch.cuda.device(device)``: a context manager making the device current."""

        def __init__(self, device: Any) -> None:
            self.idx = _device_index(gpu, device)

        def __enter__(self) -> None:
            gpu.called("device.__enter__")

        def __exit__(self, *exc: object) -> None:
            return None
    return device


def _torch_cuda(gpu: FakeGpu) -> dict[str, Any]:
    """name -> stand-in for every ``torch.cuda`` function the fake replaces."""

    def reset_peak_memory_stats(device: Any = None) -> None:
        _device_index(gpu, device)
        gpu.called("reset_peak_memory_stats")
        gpu.peak_allocated_bytes, gpu.peak_reserved_bytes = gpu.allocated_bytes, gpu.reserved_bytes

    def synchronize(device: Any = None) -> None:
        _device_index(gpu, device)
        gpu.called("synchronize")
        gpu.complete()

    def empty_cache() -> None:
        gpu.called("empty_cache")
        gpu.reserved_bytes = _round_up(gpu.allocated_bytes, SEGMENT_BYTES)

    def mem_get_info(device: Any = None) -> tuple[int, int]:
        _device_index(gpu, device)
        return gpu.total_memory_bytes - gpu.reserved_bytes - gpu.context_bytes, gpu.total_memory_bytes

    def set_per_process_memory_fraction(fraction: float, device: Any = None) -> None:
        _device_index(gpu, device)
        if not 0 <= fraction <= 1:
            raise ValueError(f"Invalid fraction value: {fraction}. Allowed range: 0~1")
        gpu.fraction = float(fraction)

    def get_per_process_memory_fraction(device: Any = None) -> float:
        _device_index(gpu, device)
        return gpu.fraction

    def get_rng_state(device: Any = "cuda") -> torch.Tensor:
        return gpu._rng.get(_device_index(gpu, device), torch.zeros(16, dtype=torch.uint8)).clone()

    def set_rng_state(new_state: torch.Tensor, device: Any = "cuda") -> None:
        gpu._rng[_device_index(gpu, device)] = new_state.clone()

    def stat(value: str) -> Any:
        def read(device: Any = None) -> int:
            _device_index(gpu, device)
            return int(getattr(gpu, value))
        return read

    props = FakeProperties(gpu.name, gpu.capability[0], gpu.capability[1], gpu.sm_count, gpu.total_memory_bytes,
                           gpu.l2_cache_bytes, gpu.uuid.removeprefix("GPU-"))
    return {
        "is_available": lambda: True,
        "device_count": lambda: 1,
        "current_device": lambda: 0,
        "is_initialized": lambda: True,
        "init": lambda: None,
        "get_device_name": lambda device=None: (_device_index(gpu, device), gpu.name)[1],
        "get_device_properties": lambda device=None: (_device_index(gpu, device), props)[1],
        "get_device_capability": lambda device=None: (_device_index(gpu, device), gpu.capability)[1],
        "synchronize": synchronize,
        "Event": _event_class(gpu),
        "device": _device_class(gpu),
        "get_rng_state": get_rng_state,
        "set_rng_state": set_rng_state,
        "memory_allocated": stat("allocated_bytes"),
        "memory_reserved": stat("reserved_bytes"),
        "max_memory_allocated": stat("peak_allocated_bytes"),
        "max_memory_reserved": stat("peak_reserved_bytes"),
        "reset_peak_memory_stats": reset_peak_memory_stats,
        "empty_cache": empty_cache,
        "mem_get_info": mem_get_info,
        "set_per_process_memory_fraction": set_per_process_memory_fraction,
        "get_per_process_memory_fraction": get_per_process_memory_fraction,
    }


# ---------------------------------------------------------------------- pynvml stand-in
class NVMLError(Exception):
    """pynvml's error class (the fake raises it for an unknown handle)."""


def fake_pynvml(gpu: FakeGpu, process_listed: bool = True) -> types.ModuleType:
    """A ``pynvml`` module answering for ``gpu``: used memory = what the allocator reserved + the
    CUDA context; this process listed with that memory (``process_listed``)."""
    nv = types.ModuleType("pynvml")
    handle = object()
    state = {"init": 0}

    def need(h: Any) -> None:
        if state["init"] <= 0:
            raise NVMLError("NVML_ERROR_UNINITIALIZED")
        if h is not handle:
            raise NVMLError("NVML_ERROR_INVALID_ARGUMENT")

    def used() -> int:
        return gpu.reserved_bytes + gpu.context_bytes

    def nvmlInit() -> None:
        state["init"] += 1

    def nvmlShutdown() -> None:
        state["init"] -= 1

    def nvmlDeviceGetHandleByUUID(uuid: Any) -> Any:
        if uuid != gpu.uuid:
            raise NVMLError(f"NVML_ERROR_NOT_FOUND: {uuid}")
        return handle

    def nvmlDeviceGetHandleByIndex(index: int) -> Any:
        if index != 0:
            raise NVMLError("NVML_ERROR_INVALID_ARGUMENT")
        return handle

    def nvmlDeviceGetMemoryInfo(handle: Any, version: Any = None) -> Any:
        need(handle)
        return types.SimpleNamespace(total=gpu.total_memory_bytes, used=used(), free=gpu.total_memory_bytes - used())

    def nvmlDeviceGetComputeRunningProcesses(handle: Any) -> list[Any]:
        need(handle)
        return [types.SimpleNamespace(pid=os.getpid(), usedGpuMemory=used())] if process_listed else []

    def nvmlDeviceGetName(handle: Any) -> bytes:
        need(handle)
        return gpu.name.encode()

    def nvmlSystemGetDriverVersion() -> str:
        return gpu.driver

    def nvmlDeviceGetClockInfo(handle: Any, type: int) -> int:
        need(handle)
        return {nv.NVML_CLOCK_SM: 1980, nv.NVML_CLOCK_MEM: 2619}[type]

    def nvmlDeviceGetMaxClockInfo(handle: Any, type: int) -> int:
        need(handle)
        return {nv.NVML_CLOCK_SM: 1980, nv.NVML_CLOCK_MEM: 2619}[type]

    def nvmlDeviceGetEnforcedPowerLimit(handle: Any) -> int:
        need(handle)
        return 700_000   # milliwatts

    def nvmlDeviceGetTemperature(handle: Any, sensor: int) -> int:
        need(handle)
        if sensor != nv.NVML_TEMPERATURE_GPU:
            raise NVMLError("NVML_ERROR_INVALID_ARGUMENT")
        return 40

    for f in (nvmlInit, nvmlShutdown, nvmlDeviceGetHandleByUUID, nvmlDeviceGetHandleByIndex, nvmlDeviceGetMemoryInfo,
              nvmlDeviceGetComputeRunningProcesses, nvmlDeviceGetName, nvmlSystemGetDriverVersion,
              nvmlDeviceGetClockInfo, nvmlDeviceGetMaxClockInfo, nvmlDeviceGetEnforcedPowerLimit,
              nvmlDeviceGetTemperature):
        setattr(nv, f.__name__, f)
    for name, value in (("NVML_CLOCK_SM", 1), ("NVML_CLOCK_MEM", 2), ("NVML_TEMPERATURE_GPU", 0),   # pynvml's values
                        ("NVMLError", NVMLError)):
        setattr(nv, name, value)
    return nv


def _profiler_class(gpu: FakeGpu) -> type:
    """``torch.profiler.profile`` without the CUDA activity (a CPU build has no CUPTI: asked for
    it, the profiler falls back to legacy CUDA events and fails slowly); the request is counted.

    Asked for CUDA, its ``events()`` carry device times as a CUDA run's would: an aten event named
    in ``gpu.kernel_us`` gets one kernel of that many microseconds; an innermost aten event (no
    aten op below it) outside the listed ones gets one of ``gpu.default_kernel_us``. torch's own
    ``device_time_total`` sums the kernels of an event and of the events below it."""
    base = torch.profiler.profile

    class profile(base):  # type: ignore[misc, valid-type]  # noqa: N801 - torch's name
        def __init__(self, *args: Any, activities: Any = None, **kwargs: Any) -> None:
            self._fake_kernels = activities is not None and torch.profiler.ProfilerActivity.CUDA in activities
            self._kernels_added = False
            if self._fake_kernels:
                gpu.called("profiler.CUDA")
                activities = [a for a in activities if a != torch.profiler.ProfilerActivity.CUDA]
            super().__init__(*args, activities=activities, **kwargs)

        def events(self) -> Any:
            events = super().events()
            if self._fake_kernels and not self._kernels_added:
                self._kernels_added = True
                for e in events:
                    e.use_device = "cuda"
                    if e.name in gpu.kernel_us:
                        e.append_kernel(f"fake_kernel<{e.name}>", 0, gpu.kernel_us[e.name])
                    elif (e.name.startswith("aten::") and not any(c.name.startswith("aten::") for c in e.cpu_children)
                          and not _inside_listed(e, gpu.kernel_us)):
                        e.append_kernel(f"fake_kernel<{e.name}>", 0, gpu.default_kernel_us)
            return events
    return profile


def _inside_listed(e: Any, names: dict[str, float]) -> bool:
    p = e.cpu_parent
    while p is not None:
        if p.name in names:
            return True
        p = p.cpu_parent
    return False


# ---------------------------------------------------------------------- install
NCU_CSV_HEADER = '"ID","Process ID","Process Name","Host Name","Kernel Name","Context","Stream","Section Name",' \
                 '"Metric Name","Metric Unit","Metric Value"'


def write_fake_ncu(folder: Any, dram_read_bytes: int = 1000, dram_write_bytes: int = 500) -> str:
    """An executable ``ncu`` that prints one kernel's metrics in ncu's CSV layout, for
    ``hwprof.studies.depthwise.counters`` (argv is not run; the study's parser is what is checked)."""
    rows = [("dram__bytes_read.sum", "byte", dram_read_bytes), ("dram__bytes_write.sum", "byte", dram_write_bytes),
            ("lts__t_bytes.sum", "byte", 4000),
            ("dram__throughput.avg.pct_of_peak_sustained_elapsed", "%", 50),
            ("sm__throughput.avg.pct_of_peak_sustained_elapsed", "%", 10),
            ("gpu__time_duration.sum", "nsecond", 2000)]
    lines = ["==PROF== Connected to process 1", NCU_CSV_HEADER]
    lines += [f'"0","1","python","host","conv_kernel","1","7","Command line profiler metrics","{m}","{u}","{v}"'
              for m, u, v in rows]
    path = os.path.join(str(folder), "ncu")
    with open(path, "w", encoding="utf-8") as f:
        f.write("#!/bin/sh\ncat <<'EOF'\n" + "\n".join(lines) + "\nEOF\n")
    os.chmod(path, 0o755)
    return path


@contextlib.contextmanager
def installed(monkeypatch: pytest.MonkeyPatch, gpu: FakeGpu | None = None,
              process_listed: bool = True) -> Iterator[FakeGpu]:
    """The fake device in place for the block: ``torch.cuda``, ``pynvml``, tensors on "cuda" made on
    the CPU. Undone on exit (the patches by ``monkeypatch``, the mode by the block)."""
    gpu = gpu or FakeGpu()
    for name, fn in _torch_cuda(gpu).items():
        monkeypatch.setattr(torch.cuda, name, fn)   # raising=True: torch.cuda must have the name
    monkeypatch.setattr(torch.cuda.nvtx, "range_push", lambda msg: gpu.called("nvtx.range_push"))
    monkeypatch.setattr(torch.cuda.nvtx, "range_pop", lambda: gpu.called("nvtx.range_pop"))
    monkeypatch.setattr(torch._C, "_cuda_clearCublasWorkspaces", lambda: gpu.called("clearCublasWorkspaces"),
                        raising=False)
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(gpu, process_listed))
    monkeypatch.setattr(torch.profiler, "profile", _profiler_class(gpu))
    try:
        with CudaOnCpu(gpu):
            yield gpu
    finally:
        gpu.release()
