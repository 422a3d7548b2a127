"""Collectives as first-class ops: what each c10d collective moves, counted from what dispatches.

Every ``torch.distributed`` collective that DDP and FSDP2 issue reaches the dispatcher as a
``c10d`` op (``torch/csrc/distributed/c10d/ProcessGroup.hpp`` calls
``c10::Dispatcher::findSchemaOrThrow("c10d::allreduce_", ...)`` for each collective method, and
DDP's reducer all-reduces its buckets through ``ProcessGroup::allreduce``):

=============================  =====================  ==================================
c10d op                        kind                   who issues it
=============================  =====================  ==================================
``allreduce_``                 all_reduce             DDP's reducer (gradient buckets)
``broadcast_``                 broadcast              DDP: module states, buffers, bucket order
``_allgather_base_``           all_gather_into_tensor FSDP2: unsharded parameters
``_reduce_scatter_base_``      reduce_scatter_tensor  FSDP2: gradients
``allgather_``                 all_gather             DDP: parameter shapes at construction
=============================  =====================  ==================================

:class:`CollectiveCounter` is a ``TorchDispatchMode`` that records each one (kind, dtype,
message bytes, phase). It runs unchanged on a real process group and on torch's fake process
group, so the measured and the predicted counts come from one code path. Older torch builds
sent CUDA all-reduces straight to the backend (bypassing the dispatcher); the measured
communication pass therefore also reads the backend's own record of what ran (the profiler's
``gloo:*`` events, NCCL kernels) and reports any collective the dispatcher did not see
(:mod:`hwprof.distributed.timeline`).

Message bytes follow nccl-tests' "size" (``doc/PERFORMANCE.md`` in NVIDIA/nccl-tests): the
bytes of the buffer an all_reduce or broadcast works on, the *output* of an all_gather and the
*input* of a reduce_scatter (the full, unsharded tensor in both cases). Bandwidths from a time::

    algbw = bytes / time_s
    busbw = algbw * factor,  factor = 2(n-1)/n (all_reduce), (n-1)/n (all_gather, reduce_scatter,
                                      all_to_all), 1 (broadcast, reduce, others)

``busbw`` is the rate a ring implementation needs on its slowest link, comparable across n.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

__all__ = ["Collective", "CollectiveCounter", "KINDS", "kind_of", "message_bytes", "bus_factor", "busbw",
           "collective_table", "COLLECTIVE_COLUMNS"]

#: c10d op name -> (kind, index of the argument whose bytes are the message size)
KINDS: dict[str, tuple[str, int]] = {
    "allreduce_": ("all_reduce", 0),
    "allreduce_coalesced_": ("all_reduce", 0),
    "broadcast_": ("broadcast", 0),
    "reduce_": ("reduce", 0),
    "_allgather_base_": ("all_gather_into_tensor", 0),
    "allgather_into_tensor_coalesced_": ("all_gather_into_tensor", 0),
    "allgather_": ("all_gather", 0),
    "allgather_coalesced_": ("all_gather", 0),
    "_reduce_scatter_base_": ("reduce_scatter_tensor", 1),
    "reduce_scatter_tensor_coalesced_": ("reduce_scatter_tensor", 1),
    "reduce_scatter_": ("reduce_scatter", 1),
    "alltoall_base_": ("all_to_all", 1),
    "alltoall_": ("all_to_all", 1),
    "gather_": ("gather", 0),
    "scatter_": ("scatter", 1),
    "send": ("send", 0),
    "recv_": ("recv", 0),
    "recv_any_source_": ("recv", 0),
    "barrier": ("barrier", -1),
    "monitored_barrier_": ("barrier", -1),
}

_FACTORS = {"all_reduce": lambda n: 2 * (n - 1) / n, "all_gather_into_tensor": lambda n: (n - 1) / n,
            "all_gather": lambda n: (n - 1) / n, "reduce_scatter_tensor": lambda n: (n - 1) / n,
            "reduce_scatter": lambda n: (n - 1) / n, "all_to_all": lambda n: (n - 1) / n}

COLLECTIVE_COLUMNS = ("phase", "kind", "calls", "bytes", "mean_message_bytes", "dtypes", "time_s", "algbw_bytes_per_s",
                      "busbw_bytes_per_s")


def kind_of(op_name: str) -> str | None:
    """The collective kind of a c10d op name ("allreduce_", "c10d::allreduce_", "c10d.allreduce_.default");
    None for an op that is not a collective."""
    base = op_name.split("::")[-1]
    if base.startswith("c10d."):
        base = base.split(".")[1]
    entry = KINDS.get(base)
    return entry[0] if entry else None


def bus_factor(kind: str, world_size: int) -> float:
    """busbw / algbw for ``kind`` on ``world_size`` ranks (nccl-tests' convention, see the module docstring)."""
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    f = _FACTORS.get(kind)
    return f(world_size) if f is not None else 1.0


def busbw(kind: str, nbytes: float, time_s: float, world_size: int) -> float:
    """Bus bandwidth in bytes/s: ``nbytes / time_s * bus_factor(kind, world_size)``; NaN for a zero time."""
    if not time_s or time_s <= 0 or math.isnan(time_s):
        return math.nan
    return nbytes / time_s * bus_factor(kind, world_size)


def _tensors(arg: Any) -> list[torch.Tensor]:
    return [t for t in tree_leaves(arg) if isinstance(t, torch.Tensor)]


def message_bytes(op_name: str, args: Sequence[Any]) -> int:
    """Bytes per rank of one call of the c10d op ``op_name`` with ``args`` (nccl-tests' size: the all_reduce
    buffer, the all_gather output, the reduce_scatter input; 0 for a barrier). For a DTensor-free
    collective the argument is a tensor or a (nested) list of tensors; their bytes are summed."""
    base = op_name.split("::")[-1]
    if base.startswith("c10d."):
        base = base.split(".")[1]
    kind, index = KINDS[base]
    if index < 0 or index >= len(args):
        return 0
    return sum(t.numel() * t.element_size() for t in _tensors(args[index]))


@dataclass(frozen=True)
class Collective:
    """One collective call on this rank: ``kind`` (see :data:`KINDS`), the c10d ``op``, the element ``dtype``,
    message ``bytes`` (nccl-tests' size), the ``phase`` it was issued in, the ``group_size`` of its
    process group, the ``iteration`` it belongs to (numbered by the caller) and ``issue_ns`` (the
    counter's clock when it was called)."""

    kind: str
    op: str
    dtype: str
    bytes: int
    phase: str
    group_size: int
    iteration: int = 0
    issue_ns: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Collective:
        return cls(**{k: d[k] for k in ("kind", "op", "dtype", "bytes", "phase", "group_size") if k in d},
                   iteration=int(d.get("iteration", 0)), issue_ns=int(d.get("issue_ns", 0)))


def _group_size(args: Sequence[Any]) -> int:
    """The size of the process group among a c10d op's arguments (a boxed ``ProcessGroup``); 0 if none."""
    from torch._C._distributed_c10d import ProcessGroup

    for a in args:
        if isinstance(a, torch.ScriptObject):
            try:
                return int(ProcessGroup.unbox(a).size())
            except (RuntimeError, TypeError):   # another script object (a ReduceOp)
                continue
    return 0


class CollectiveCounter(TorchDispatchMode):
    """Records a :class:`Collective` for every c10d collective dispatched while active (any thread that
    carries the mode: the caller's, and autograd's, which inherits it); every other op passes
    through untouched. ``phase`` labels the calls recorded next (set it between phases), unless
    ``phase_fn`` is given, which is asked at each call; :meth:`next_iteration` numbers iterations."""

    def __init__(self, world_size: int, phase_fn: Callable[[], str] | None = None) -> None:
        super().__init__()
        self.world_size = world_size
        self.phase = "setup"
        self.phase_fn = phase_fn
        self.iteration = 0
        self.calls: list[Collective] = []
        self._lock = threading.Lock()

    def next_iteration(self) -> None:
        """Calls recorded from now on belong to the next iteration."""
        self.iteration += 1

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if getattr(func, "namespace", "") == "c10d":
            name = func._overloadpacket.__name__
            kind = kind_of(name)
            if kind is not None:
                self._record(name, kind, args)
        return func(*args, **kwargs)

    def _record(self, name: str, kind: str, args: tuple[Any, ...]) -> None:
        ts = _tensors(args)
        phase = self.phase_fn() if self.phase_fn is not None else self.phase
        call = Collective(kind, name, str(ts[0].dtype).removeprefix("torch.") if ts else "", message_bytes(name, args),
                          phase, _group_size(args) or self.world_size, self.iteration, time.perf_counter_ns())
        with self._lock:
            self.calls.append(call)


def collective_table(calls: Iterable[Collective], times_s: Sequence[float] | None = None,
                     by_phase: bool = True) -> pd.DataFrame:
    """One row per (phase, kind) (or per kind with ``by_phase=False``): calls, bytes (summed), mean message
    bytes, dtypes, and with ``times_s`` (the time of each call, in the order of ``calls``; NaN where
    unknown) the summed time, ``algbw = bytes / time`` and ``busbw`` over the calls that have a time."""
    calls = list(calls)
    times = list(times_s) if times_s is not None else [math.nan] * len(calls)
    if len(times) != len(calls):
        raise ValueError(f"{len(times)} times for {len(calls)} collectives")
    groups: dict[tuple[str, str], list[tuple[Collective, float]]] = {}
    for c, t in zip(calls, times, strict=True):
        groups.setdefault((c.phase if by_phase else "", c.kind), []).append((c, t))
    rows = [_row(phase, kind, members) for (phase, kind), members in groups.items()]
    df = pd.DataFrame(rows, columns=list(COLLECTIVE_COLUMNS))
    return df if by_phase else df.drop(columns=["phase"])


def _row(phase: str, kind: str, members: list[tuple[Collective, float]]) -> dict[str, Any]:
    total = sum(c.bytes for c, _ in members)
    timed = [(c, t) for c, t in members if not math.isnan(t)]
    time_s = sum(t for _, t in timed) if timed else math.nan
    timed_bytes = sum(c.bytes for c, _ in timed)
    n = max(c.group_size for c, _ in members)
    algbw = timed_bytes / time_s if timed and time_s > 0 else math.nan
    return {"phase": phase, "kind": kind, "calls": len(members), "bytes": total,
            "mean_message_bytes": total / len(members),
            "dtypes": ",".join(sorted({c.dtype for c, _ in members if c.dtype})), "time_s": time_s,
            "algbw_bytes_per_s": algbw, "busbw_bytes_per_s": algbw * bus_factor(kind, n) if n else math.nan}
