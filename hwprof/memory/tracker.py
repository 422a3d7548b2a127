"""The dispatch-mode memory tracker: every storage an aten op creates is an allocation, the
death of its last tensor the matching free, and both go to an allocator model.

``MemoryTracker`` is a ``TorchDispatchMode`` (stacked above the ``FakeTensorMode`` in the
replay, :mod:`hwprof.memory.simulate`). Every aten op's output storage that it has not seen is an
*allocation*; a ``weakref.finalize`` on the storage object is the matching *free*, so a storage
dies exactly when the last tensor or view on it dies (views and in-place results share their
base's storage and allocate nothing). ``resize_`` / ``out=`` resizes are seen as a size change of
a tracked storage after an op. Parameters, buffers and inputs are registered as live before the
step. Each allocation and free goes to an allocator model (:mod:`hwprof.memory.allocator`); an
allocation is attributed to the module running it (:mod:`hwprof.modules`: the innermost call in
forward, the call that created the running autograd node in backward).

Workspace: for a CUDA target, each thread that calls cuBLAS (the forward thread and the
autograd device thread) gets one cuBLAS workspace from the caching allocator the first time
it runs a matmul (:func:`hwprof.counting.formulas.uses_cublas_workspace`), which stays allocated. Its size is
``CUBLAS_WORKSPACE_CONFIG`` if set, else torch's default: 32 MiB on compute capability
9.x/10.x/12.x, 8 MiB + 128 KiB otherwise; with no GPU present sm_90 (H100) is assumed.
cuDNN convolution workspaces (transient, algorithm-dependent) are not modelled.
"""

from __future__ import annotations

import os
import re
import weakref
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from hwprof.counting.formulas import uses_cublas_workspace
from hwprof.memory.allocator import AllocatorModel
from hwprof.memory.storage import storage_key, storage_leaves
from hwprof.modules import ModuleCalls, backward_module

__all__ = ["cublas_workspace_bytes", "StorageRecord", "MemoryTracker"]


_DEFAULT_CUBLAS_WORKSPACE_BYTES = 4096 * 1024 * 2 + 16 * 1024 * 8   # ":4096:2:16:8", before sm_90
_SM90_CUBLAS_WORKSPACE_BYTES = 4096 * 8 * 1024                      # 32 MiB on 9.x / 10.x / 12.x


def cublas_workspace_bytes(capability_major: int | None = None) -> int:
    """torch's cuBLAS workspace per (handle, stream): ``CUBLAS_WORKSPACE_CONFIG=":SIZE_KIB:COUNT..."``
    if set, else 32 MiB for compute capability 9/10/12 and 4096 KiB x 2 + 16 KiB x 8 otherwise
    (``parseChosenWorkspaceSize`` in ``aten/src/ATen/cuda/CublasHandlePool.cpp``)."""
    config = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if config:
        pairs = re.findall(r":([0-9]+):([0-9]+)", config)
        if pairs:
            return sum(int(size) * 1024 * int(count) for size, count in pairs)
    if capability_major is None:
        capability_major = 9
        if torch.cuda.is_available():
            capability_major = torch.cuda.get_device_capability()[0]
    return _SM90_CUBLAS_WORKSPACE_BYTES if capability_major in (9, 10, 12) else _DEFAULT_CUBLAS_WORKSPACE_BYTES


@dataclass(eq=False)
class StorageRecord:
    """One storage the tracker saw: its bytes, the op and module that allocated it, in which
    iteration and phase, its allocation and free event numbers, and its category."""

    key: int
    nbytes: int
    op: str
    iteration: int
    phase: str
    module: str
    alloc_event: int
    free_event: int | None = None
    category: str = "temporary"


class MemoryTracker(TorchDispatchMode):
    """Follows live storages through aten ops and feeds an allocator model (see module docstring).

    ``records`` holds every storage ever seen (with allocation/free event numbers and a
    category: params, buffers, inputs, activations, grads, optimizer_state, workspace,
    temporary); ``timeline`` one row per allocation or free.
    """

    def __init__(self, allocator: AllocatorModel, modules: ModuleCalls | None = None,
                 workspace_bytes: int = 0, skip_step_scalars: bool = False, record_timeline: bool = True) -> None:
        super().__init__()
        self.allocator = allocator
        self.modules = modules
        self.workspace_bytes = workspace_bytes
        self.skip_step_scalars = skip_step_scalars
        self.record_timeline = record_timeline
        self.records: list[StorageRecord] = []
        self.live: dict[int, StorageRecord] = {}
        self._finalizers: dict[int, weakref.finalize] = {}
        self.event = 0
        self.iteration = 0
        self.phase = "setup"
        self.peak_allocated_event = 0
        self.peak_requested_bytes = 0
        self.phase_peaks: dict[tuple[int, str], int] = {}
        self.timeline: list[tuple[int, int, str, str, str, int, int, int]] = []
        self._workspace_phases: set[str] = set()
        self._watched: set[int] = set()

    # -- phases
    def set_phase(self, iteration: int, phase: str) -> None:
        self.iteration, self.phase = iteration, phase
        self.phase_peaks.setdefault((iteration, phase), self.allocator.allocated_bytes)

    # -- registration
    def register(self, t: torch.Tensor, category: str, op: str = "<existing>") -> None:
        """Count an already-existing tensor (parameter, buffer, input) as live."""
        rec = self._track(t, op)
        if rec is not None:
            rec.category = category

    def mark(self, tensors: list[torch.Tensor], category: str) -> None:
        """Label the live storages of ``tensors`` (e.g. the gradients after backward)."""
        for t in storage_leaves(tensors):
            rec = self.live.get(storage_key(t))
            if rec is not None and rec.category in ("temporary", "activations"):
                rec.category = category

    def mark_forward_end(self) -> int:
        """Label the storages allocated in this forward and still live as activations; return their bytes."""
        total = 0
        for rec in self.live.values():
            if rec.phase == "forward" and rec.iteration == self.iteration and rec.category == "temporary":
                rec.category = "activations"
                total += rec.nbytes
        return total

    # -- dispatch
    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        self._check_watched()
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__ if hasattr(func, "overloadpacket") else str(func)
        if self.workspace_bytes and uses_cublas_workspace(func):
            self._maybe_workspace(name)
        for t in storage_leaves(out):
            self._track(t, name)
        for t in storage_leaves((args, kwargs)):
            self._check_resize(t)
            if isinstance(t, nn.Parameter):
                self._watched.add(storage_key(t))
        return out

    def _check_watched(self) -> None:
        """Parameters' storages resized between ops: a wrapper that gathers parameters (FSDP2) frees and
        re-allocates them with ``untyped_storage().resize_()``, which dispatches no op, so they are checked
        before every op once an op has taken them."""
        for key in list(self._watched):
            rec, fin = self.live.get(key), self._finalizers.get(key)
            alive = fin.peek() if fin is not None else None
            if rec is None or alive is None:
                self._watched.discard(key)
            elif int(alive[0].nbytes()) != rec.nbytes:
                self._resized(rec, int(alive[0].nbytes()))

    def _maybe_workspace(self, op: str) -> None:
        thread = "backward" if self.phase == "backward" else "forward"
        if thread in self._workspace_phases:
            return
        self._workspace_phases.add(thread)
        key = -len(self._workspace_phases)            # never a real storage address
        rec = StorageRecord(key, self.workspace_bytes, f"cublas_workspace({op})", self.iteration, self.phase,
                      self._module(), self.event + 1, category="workspace")
        self.records.append(rec)
        self.live[key] = rec
        self._malloc(rec)

    def _module(self) -> str:
        """The module an allocation belongs to: the innermost running call in forward, the call
        that created the running autograd node in backward (labelled by
        :meth:`hwprof.modules.ModuleCalls.label_backward`), else ""."""
        if self.modules is None:
            return ""
        if self.phase == "forward":
            return self.modules.current
        return backward_module() if self.phase == "backward" else ""

    def _track(self, t: torch.Tensor, op: str) -> StorageRecord | None:
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):    # sparse / nested / opaque tensors
            return None
        key = int(st._cdata)
        rec = self.live.get(key)
        if rec is not None:
            return rec
        if t.device.type == "meta":                    # e.g. SDPA's philox seed/offset placeholders
            return None
        if self.skip_step_scalars and self.phase == "step" and t.dim() == 0:
            return None
        rec = StorageRecord(key, int(st.nbytes()), op, self.iteration, self.phase, self._module(), self.event + 1)
        self.records.append(rec)
        self.live[key] = rec
        self._finalizers[key] = weakref.finalize(st, self._on_free, key)
        self._malloc(rec)
        return rec

    def _check_resize(self, t: torch.Tensor) -> None:
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        rec = self.live.get(int(st._cdata))
        if rec is not None and int(st.nbytes()) != rec.nbytes:
            self._resized(rec, int(st.nbytes()))

    def _resized(self, rec: StorageRecord, nbytes: int) -> None:
        self.allocator.free(rec.key)
        rec.nbytes = nbytes
        self._malloc(rec)

    def _malloc(self, rec: StorageRecord) -> None:
        self.event += 1
        self.allocator.malloc(rec.key, rec.nbytes)
        self._after_event(rec, "alloc")

    def _on_free(self, key: int) -> None:
        rec = self.live.pop(key, None)
        self._finalizers.pop(key, None)
        if rec is None:
            return
        self.event += 1
        rec.free_event = self.event
        self.allocator.free(key)
        self._after_event(rec, "free")

    def _after_event(self, rec: StorageRecord, kind: str) -> None:
        a = self.allocator
        if a.allocated_bytes >= a.peak_allocated_bytes and kind == "alloc":
            self.peak_allocated_event = self.event
        self.peak_requested_bytes = max(self.peak_requested_bytes, a.requested_bytes)
        k = (self.iteration, self.phase)
        self.phase_peaks[k] = max(self.phase_peaks.get(k, 0), a.allocated_bytes)
        if self.record_timeline:
            self.timeline.append((self.event, self.iteration, self.phase, kind, rec.op, rec.nbytes,
                                  a.allocated_bytes, a.reserved_bytes))

    def close(self) -> None:
        """Detach the finalizers of storages still alive (the fake model outlives the tracker)."""
        for f in self._finalizers.values():
            f.detach()
        self._finalizers.clear()

    # -- results
    def live_at(self, event: int) -> list[StorageRecord]:
        return [r for r in self.records
                if r.alloc_event <= event and (r.free_event is None or r.free_event > event)]

    def bytes_by_category(self, records: list[StorageRecord]) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in records:
            out[r.category] = out.get(r.category, 0) + r.nbytes
        return out


