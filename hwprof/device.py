"""Device resolution and a plain description of the machine a measurement ran on.

``resolve_device("auto")`` picks CUDA when it is usable and CPU otherwise (and says so);
``resolve_device("cuda")`` without CUDA raises :class:`~hwprof.errors.DeviceUnavailableError`.
Nothing here creates a CUDA context unless the caller asked for a CUDA device.
"""

from __future__ import annotations

import logging
import os
import platform
from dataclasses import dataclass
from typing import Any

import torch

from hwprof.errors import DeviceUnavailableError

__all__ = ["resolve_device", "cpu_name", "device_name", "describe_device", "same_device", "MathModes", "tf32_switches"]

log = logging.getLogger(__name__)


def resolve_device(device: str | torch.device = "auto", notes: list[str] | None = None) -> torch.device:
    """Turn ``"auto" | "cpu" | "cuda" | "cuda:N" | torch.device`` into a usable ``torch.device``.

    ``"auto"`` -> ``cuda:<current>`` if ``torch.cuda.is_available()`` else ``cpu``; choosing CPU
    is logged and, with ``notes``, appended there. ``"cuda"`` gets the current device index.
    Raises ``DeviceUnavailableError`` (one line) for CUDA without CUDA, a missing index, or a
    device type other than cpu/cuda.
    """
    if isinstance(device, str) and device.strip().lower() == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", torch.cuda.current_device())
        msg = f"device='auto' picked cpu: CUDA is not available ({_why_no_cuda()})"
        log.info(msg)
        if notes is not None:
            notes.append(msg)
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise DeviceUnavailableError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N ({e})") from None
    if dev.type == "cpu":
        return torch.device("cpu")
    if dev.type != "cuda":
        raise DeviceUnavailableError(f"device {str(dev)!r} is not supported; expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise DeviceUnavailableError(
            f"device={str(dev)!r} requested but CUDA is not available ({_why_no_cuda()}); use --device cpu")
    index = torch.cuda.current_device() if dev.index is None else dev.index
    if index >= torch.cuda.device_count():
        raise DeviceUnavailableError(
            f"device={str(dev)!r} requested but only {torch.cuda.device_count()} CUDA device(s) are visible")
    return torch.device("cuda", index)


def _why_no_cuda() -> str:
    if torch.version.cuda is None:
        return f"torch {torch.__version__} is a CPU-only build"
    return f"torch {torch.__version__} (CUDA {torch.version.cuda}) sees no GPU"


def same_device(a: torch.device, b: torch.device) -> bool:
    """True when ``a`` and ``b`` name the same device ("cuda" means the current CUDA device)."""
    if a.type != b.type:
        return False
    if a.type != "cuda":
        return True
    ia = torch.cuda.current_device() if a.index is None else a.index
    ib = torch.cuda.current_device() if b.index is None else b.index
    return ia == ib


def cpu_name() -> str:
    """The CPU's marketing name from /proc/cpuinfo, else ``platform.processor()`` / machine."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "cpu"


def device_name(device: torch.device) -> str:
    """``torch.cuda.get_device_name`` for CUDA, :func:`cpu_name` for CPU."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_name()


def _precision(*owners: Any) -> str:
    """torch >= 2.9's ``fp32_precision``: the first setting that is not "none" along the chain
    from the most specific backend to ``torch.backends``; "ieee" when all are "none"."""
    for o in owners:
        v = getattr(o, "fp32_precision", "none")
        if v != "none":
            return str(v)
    return "ieee"


def tf32_switches() -> dict[str, bool]:
    """Whether fp32 matmuls (cuBLAS) and fp32 convolutions (cuDNN) may use TF32.

    Read through the legacy flags (``torch.backends.cuda.matmul.allow_tf32``,
    ``torch.backends.cudnn.allow_tf32``); once code has set torch >= 2.9's ``fp32_precision``
    settings, reading a legacy flag raises ("mix of the legacy and new APIs"), and the new
    settings are read instead (``cuda.matmul`` / ``cudnn.conv``, inheriting "none" from their
    parents)."""
    b = torch.backends
    try:
        matmul = bool(b.cuda.matmul.allow_tf32)
    except RuntimeError:
        matmul = _precision(b.cuda.matmul, b) == "tf32"
    try:
        conv = bool(b.cudnn.allow_tf32)
    except RuntimeError:
        conv = _precision(getattr(b.cudnn, "conv", None), b.cudnn, b) == "tf32"
    return {"cuda_matmul_allow_tf32": matmul, "cudnn_allow_tf32": conv}


def float32_matmul_precision() -> str:
    """``torch.get_float32_matmul_precision()``, or the new API's ``cuda.matmul`` setting where
    reading the legacy one raises (see :func:`tf32_switches`)."""
    try:
        return torch.get_float32_matmul_precision()
    except RuntimeError:
        return _precision(torch.backends.cuda.matmul, torch.backends)


@dataclass(frozen=True)
class MathModes:
    """The math-mode switches a run ran under (read them with :meth:`current`): recorded with the
    measurement so that the join decides each op's compute roof from data, not from live torch state."""

    device_type: str = "cpu"
    cudnn_tf32: bool = True
    matmul_tf32: bool = False

    @classmethod
    def current(cls, device_type: str) -> MathModes:
        """Read the TF32 switches (:func:`hwprof.device.tf32_switches`: the legacy flags,
        or torch >= 2.9's ``fp32_precision`` settings once those are in use)."""
        t = tf32_switches()
        return cls(device_type, t["cudnn_allow_tf32"], t["cuda_matmul_allow_tf32"])

    def to_dict(self) -> dict[str, Any]:
        return {"device_type": self.device_type, "cudnn_tf32": self.cudnn_tf32, "matmul_tf32": self.matmul_tf32}


def describe_device(device: torch.device) -> dict[str, Any]:
    """What torch knows about ``device`` (NVML facts are added by :mod:`hwprof.measuring.probes`).

    Keys: type, name, torch_version, cuda_version, threads (intra-op), interop_threads,
    cpu_count, math-mode flags; for CUDA also index, capability, sm_count,
    total_memory_bytes, l2_cache_bytes.
    """
    info: dict[str, Any] = {
        "type": device.type,
        "name": device_name(device),
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "threads": torch.get_num_threads(),
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_name": cpu_name(),
        "float32_matmul_precision": float32_matmul_precision(),
        **tf32_switches(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        info.update({
            "index": device.index,
            "capability": f"{props.major}.{props.minor}",
            "sm_count": props.multi_processor_count,
            "total_memory_bytes": int(props.total_memory),
            "l2_cache_bytes": int(getattr(props, "L2_cache_size", 0)) or None,
            "cudnn_version": torch.backends.cudnn.version(),
        })
    return info


def free_device_memory(dev: torch.device, cublas_workspaces: bool = False) -> None:
    """Drop unreachable tensors and, on CUDA, return the caching allocator's free blocks to the
    driver (after an out-of-memory error, so the next configuration starts clean).

    ``cublas_workspaces=True`` also frees the cuBLAS workspaces torch keeps per thread and
    stream (``torch._C._cuda_clearCublasWorkspaces``): they stay allocated after the run that
    made them and would count in the next run's ``max_memory_allocated``."""
    import gc

    gc.collect()
    if dev.type == "cuda" and torch.cuda.is_initialized():
        torch.cuda.synchronize(dev)
        clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
        if cublas_workspaces and clear is not None:
            clear()
        torch.cuda.empty_cache()
