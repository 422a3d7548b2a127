"""What the study runs on a given machine: the dtypes its arithmetic units support, and the time
budget of ``--quick``.

**Dtypes.** A dtype is *native* on a device when the device has instructions that compute in it:

* CPU bfloat16: AVX512-BF16 or AMX-BF16 (x86, ``/proc/cpuinfo`` flags ``avx512_bf16`` /
  ``amx_bf16``), BF16 (Arm, feature ``bf16``);
* CPU float16: AVX512-FP16 or AMX-FP16 (x86, ``avx512_fp16`` / ``amx_fp16``), half-precision
  SIMD arithmetic (Arm, ``asimdhp``);
* where ``/proc/cpuinfo`` is not available, torch's own probes (``torch.cpu._is_avx512_bf16_supported``,
  ``_is_amx_fp16_supported``; the checks behind its oneDNN dispatch), else unknown;
* CUDA: bfloat16 from compute capability 8.0 (Ampere), float16 from 5.3; fp32 everywhere.

Without such units a bf16/fp16 convolution is emulated (converted to fp32 and back, or a
reference kernel): the study would time the emulation, not the dtype, and slowly (a bf16 point
took 2+ s on a 2-core AMD EPYC without bf16 units, where fp32 points take milliseconds). So the
*default* dtypes (fp32, bf16) drop the ones the device has no units for, with a note; dtypes
asked for by name (``--dtype``) always run, with a note when they are emulated.

**Quick budget.** ``--quick`` measures for at most :data:`QUICK_TIME_BUDGET_S` seconds (ceilings,
sweep, FasterNet table, model level); points not started by then are recorded with status
"skipped", and the stages after them are skipped with a note. With the interpreter start, the
plots and the files, a quick study takes under 60 s on a 2-core machine.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

__all__ = ["DEFAULT_DTYPES", "QUICK_TIME_BUDGET_S", "Deadline", "cpu_flags", "native_units", "plan_dtypes"]

DEFAULT_DTYPES: tuple[str, ...] = ("fp32", "bf16")
QUICK_TIME_BUDGET_S = 40.0
"""Seconds of measurement in ``--quick`` (see the module docstring)."""

CPU_UNIT_FLAGS: dict[str, frozenset[str]] = {
    "bf16": frozenset({"avx512_bf16", "amx_bf16", "bf16"}),
    "fp16": frozenset({"avx512_fp16", "amx_fp16", "asimdhp"}),
}
"""CPU feature flags (``/proc/cpuinfo``) that mean "computes in this dtype"."""

CUDA_MIN_CAPABILITY: dict[str, tuple[int, int]] = {"bf16": (8, 0), "fp16": (5, 3)}

_TORCH_PROBES = {"bf16": ("_is_avx512_bf16_supported", "_is_amx_tile_supported"), "fp16": ("_is_amx_fp16_supported",)}


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU's feature flags (x86 ``flags``, Arm ``Features``) from ``path``; empty when unreadable."""
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                key, _, value = line.partition(":")
                if key.strip().lower() in ("flags", "features"):
                    return frozenset(value.split())
    except OSError:
        pass
    return frozenset()


def _torch_probe(dtype: str) -> bool | None:
    probes = [getattr(torch.cpu, name, None) for name in _TORCH_PROBES.get(dtype, ())]
    found = [p for p in probes if callable(p)]
    return any(bool(p()) for p in found) if found else None


def native_units(dtype: str, device: torch.device, flags: frozenset[str] | None = None) -> bool | None:
    """True when ``device`` computes in ``dtype`` ("fp32", "bf16", "fp16"), False when it would
    emulate it, None when unknown (see the module docstring). ``flags`` overrides the CPU's flags."""
    if dtype not in CUDA_MIN_CAPABILITY:
        return True
    if device.type == "cuda":
        return tuple(torch.cuda.get_device_capability(device)) >= CUDA_MIN_CAPABILITY[dtype]
    have = cpu_flags() if flags is None else flags
    if not have:
        return _torch_probe(dtype)
    return bool(have & CPU_UNIT_FLAGS[dtype])


def plan_dtypes(requested: Sequence[str] | None, device: torch.device,
                flags: frozenset[str] | None = None) -> tuple[tuple[str, ...], list[str]]:
    """The dtypes to run and the notes saying what was left out or is emulated.

    ``requested`` None = :data:`DEFAULT_DTYPES` without the dtypes ``device`` has no units for;
    named dtypes all run (a note for each emulated one)."""
    names = tuple(requested) if requested is not None else DEFAULT_DTYPES
    units = {d: native_units(d, device, flags) for d in names}
    emulated = [d for d in names if units[d] is False]
    if requested is None:
        keep = tuple(d for d in names if units[d] is not False)
        notes = [f"{d} skipped: {_no_units(d, device)}; its points would time an emulation, slowly; "
                 f"--dtype {','.join(names)} measures it anyway" for d in emulated]
        return keep, notes
    return names, [f"{d} is emulated: {_no_units(d, device)}; its times are the emulation's" for d in emulated]


def _no_units(dtype: str, device: torch.device) -> str:
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        return (f"this GPU (compute capability {major}.{minor}) has no {dtype} units "
                f"(needs {'.'.join(map(str, CUDA_MIN_CAPABILITY[dtype]))})")
    return f"this CPU has no {dtype} units (none of {', '.join(sorted(CPU_UNIT_FLAGS[dtype]))} in its flags)"


@dataclass(frozen=True)
class Deadline:
    """A point in time after which no new measurement starts (None: never)."""

    at: float | None = None
    clock: Callable[[], float] = field(default=time.monotonic, compare=False)

    @classmethod
    def after(cls, seconds: float | None, clock: Callable[[], float] = time.monotonic) -> Deadline:
        return cls(None if seconds is None else clock() + seconds, clock)

    def expired(self) -> bool:
        return self.at is not None and self.clock() >= self.at
