"""Cache sizes of this machine, as the system reports them.

CPU (Linux): ``/sys/devices/system/cpu/cpu<N>/cache/index<i>/{level,type,size,shared_cpu_list}``
for the CPUs this process may run on (``os.sched_getaffinity``); instruction caches are left out.
A level's ``capacity_bytes`` is what the run's threads can use together: ``size_bytes`` of one
instance x the number of distinct instances (``shared_cpu_list``) among the first ``threads``
CPUs, so with 2 threads on 2 cores a private 2 MiB L2 counts 4 MiB and a shared L3 once. Without
sysfs: ``os.sysconf("SC_LEVEL<n>_[D]CACHE_SIZE")`` (glibc), L1/L2 taken as private per thread and
the last level as shared. Elsewhere: no levels (and the caller says so).

GPU (CUDA): the L2 from ``torch.cuda.get_device_properties(dev).L2_cache_size`` (one cache
shared by all SMs).

The highest cache level of 3 or more is named ``"LLC"`` (last-level cache); the others ``"L1"``,
``"L2"``. These are the sizes the hardware reports: what a workload gets can be less (a VM's
share of a shared L3, cache partitioning), which is why :mod:`hwprof.hardware.ceilings` also
finds each level's effective capacity from a working-set sweep.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import torch

__all__ = ["CacheLevel", "cpu_caches", "gpu_caches", "system_caches", "parse_size", "SYSFS_CPU"]

SYSFS_CPU = Path("/sys/devices/system/cpu")


@dataclass(frozen=True)
class CacheLevel:
    """One cache level as the system reports it: ``size_bytes`` per instance, ``instances`` used by
    the run's threads, ``source`` ("sysfs", "sysconf", "torch", "datasheet")."""

    name: str
    level: int
    size_bytes: int
    instances: int = 1
    source: str = "sysfs"

    @property
    def capacity_bytes(self) -> int:
        """Bytes the run's threads can hold in this level together: ``size_bytes x instances``."""
        return self.size_bytes * self.instances


def parse_size(text: str) -> int:
    """A sysfs cache size ("48K", "2048K", "480M", "1G", "32768") in bytes; ``ValueError`` otherwise."""
    m = re.fullmatch(r"\s*(\d+)\s*([KMG]?)(?:i?B)?\s*", text, flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"not a cache size: {text!r}")
    return int(m.group(1)) * {"": 1, "K": 2**10, "M": 2**20, "G": 2**30}[m.group(2).upper()]


def _names(levels: dict[int, tuple[int, int]], source: str) -> list[CacheLevel]:
    """``{level: (size, instances)}`` -> CacheLevels in ascending order, the top one of 3+ named LLC."""
    top = max(levels, default=0)
    return [CacheLevel("LLC" if lvl == top and lvl >= 3 else f"L{lvl}", lvl, size, inst, source)
            for lvl, (size, inst) in sorted(levels.items())]


def _cpus(threads: int | None) -> list[int]:
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = list(range(os.cpu_count() or 1))
    return allowed[: max(1, threads or torch.get_num_threads())]


def _sysfs(root: Path, cpus: list[int]) -> dict[int, tuple[int, int]]:
    """``{level: (size of one instance, distinct instances among cpus)}`` of data/unified caches."""
    sizes: dict[int, int] = {}
    instances: dict[int, set[str]] = {}
    for cpu in cpus:
        for idx in sorted((root / f"cpu{cpu}" / "cache").glob("index*")):
            try:
                kind = (idx / "type").read_text().strip()
                level = int((idx / "level").read_text())
                size = parse_size((idx / "size").read_text())
                shared = (idx / "shared_cpu_list").read_text().strip() if (idx / "shared_cpu_list").exists() else str(cpu)
            except (OSError, ValueError):
                continue
            if kind == "Instruction":
                continue
            sizes[level] = size
            instances.setdefault(level, set()).add(shared)
    return {lvl: (sizes[lvl], len(instances[lvl])) for lvl in sizes}


def _sysconf(threads: int) -> dict[int, tuple[int, int]]:
    out: dict[int, tuple[int, int]] = {}
    names = {1: "SC_LEVEL1_DCACHE_SIZE", 2: "SC_LEVEL2_CACHE_SIZE", 3: "SC_LEVEL3_CACHE_SIZE", 4: "SC_LEVEL4_CACHE_SIZE"}
    for level, name in names.items():
        try:
            size = int(os.sysconf(name)) if name in os.sysconf_names else 0
        except (OSError, ValueError):
            size = 0
        if size > 0:
            out[level] = (size, threads)
    if out:
        top = max(out)
        out[top] = (out[top][0], 1) if top >= 3 else out[top]
    return out


def cpu_caches(threads: int | None = None, root: Path = SYSFS_CPU) -> list[CacheLevel]:
    """The CPU's data caches for ``threads`` threads (default torch's intra-op threads), ascending; [] if unknown."""
    cpus = _cpus(threads)
    found = _sysfs(root, cpus) if root.is_dir() else {}
    if found:
        return _names(found, "sysfs")
    return _names(_sysconf(len(cpus)), "sysconf")


def gpu_caches(dev: torch.device) -> list[CacheLevel]:
    """The GPU's L2 (torch's device properties); [] when torch does not report it."""
    size = int(getattr(torch.cuda.get_device_properties(dev), "L2_cache_size", 0) or 0)
    return [CacheLevel("L2", 2, size, 1, "torch")] if size > 0 else []


def system_caches(dev: torch.device, threads: int | None = None) -> list[CacheLevel]:
    """:func:`gpu_caches` for a CUDA device, else :func:`cpu_caches`."""
    return gpu_caches(dev) if dev.type == "cuda" else cpu_caches(threads)
