"""Predicting a cluster you do not have: per-rank FLOPs, collective bytes per step and per-rank peak memory
for any world size, in one process.

torch's own distributed memory tools (``torch.distributed._tools.fsdp2_mem_tracker.FSDPMemTracker``)
run the real wrapper on fake tensors over a *fake process group*
(``torch.testing._internal.distributed.fake_pg``: a backend whose collectives do nothing, one
process playing rank 0 of N). hwprof does the same with its own replay
(:func:`hwprof.memory.simulate.simulate`, the predictor validated against the CPU allocator):

1. ``init_process_group("fake", rank=0, world_size=N)``; for FSDP2 a 1-D device mesh over it;
2. the fake copy of the model is wrapped inside the replay's tracker (``simulate(..., wrap=...)``),
   so the wrapper's allocations count: DDP's gradient buckets, FSDP2's sharded parameters
   (the full fake parameters are freed as ``fully_shard`` replaces them), all-gather and
   reduce-scatter buffers during the step;
3. the training step runs ``iterations`` times (default 3; with an optimizer its state is live
   from the second on) with
   :class:`~hwprof.distributed.collectives.CollectiveCounter` on top, which records the
   collectives of each iteration; the last iteration's are the collectives per step;
4. per-rank FLOPs are :func:`hwprof.count` of the model at the per-rank batch: data parallelism
   and FSDP2 change where parameters live, not the arithmetic of a rank's forward and backward.

Three departures from the real wrappers, none of which changes how many bytes are moved or held:

* DDP is built with ``init_sync=False``: its construction-time shape check reads a tensor's
  value (``.item()``), which fake tensors do not have. The broadcasts it skips happen once, at
  construction, not per step.
* the fake backend completes a collective's future without a value, and DDP's built-in
  all-reduce hook hands that value back to the reducer; so the prediction registers the same
  hook written in Python (divide the bucket by N, all-reduce it in place, return it), as
  ``torch.distributed.algorithms.ddp_comm_hooks.default_hooks.allreduce_hook`` does.
* DDP keeps its first buckets: the real reducer starts with one bucket and rebuilds its
  buckets once, after the first step, in the order gradients became ready (1 MiB first, then
  ``bucket_cap_mb``); that rebuild broadcasts an int tensor whose values the reducer reads,
  which fake tensors do not have. The bytes all-reduced per step are the same either way (every
  gradient once); the split into calls is the one the rebuild makes:
  ``torch.distributed._compute_bucket_assignment_by_size`` (the function the reducer's rebuild
  calls) on the order the replay's first backward made the gradients ready
  (:func:`ddp_buckets`), one all_reduce per bucket.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from hwprof.distributed.collectives import Collective, CollectiveCounter, collective_table
from hwprof.distributed.group import DistributedError
from hwprof.distributed.wrap import check_parallel, wrap

__all__ = ["Prediction", "predict", "fake_process_group", "step_phase", "ddp_buckets", "DDP_BUCKET_CAP_BYTES"]

DDP_BUCKET_CAP_BYTES = 25 * 2**20
"""DDP's default ``bucket_cap_mb`` (25) in bytes: the limit of every bucket after the first."""


@dataclass
class Prediction:
    """What :func:`predict` returns for one rank of ``world_size``: the collectives of one step, the predicted
    peak of live tensor bytes (``peak_bytes``: the replay's allocated peak, allocator rounding included
    on a CUDA target; ``peak_tensor_bytes`` without it), the bytes by category at the peak, this rank's
    parameter bytes, and the FLOPs of its forward and backward (None when not counted)."""

    parallel: str
    world_size: int
    mode: str
    optimizer: str | None
    device: str
    batch: int | None
    collectives: tuple[Collective, ...]
    peak_bytes: int
    peak_tensor_bytes: int
    at_peak: dict[str, int]
    peak_phase: str
    flops_fwd: int | None = None
    flops_bwd: int | None = None
    notes: list[str] = field(default_factory=list)

    def collective_table(self, by_phase: bool = True) -> pd.DataFrame:
        """The collectives of one step per (phase, kind): calls, bytes, mean message bytes (no times)."""
        df = collective_table(self.collectives, by_phase=by_phase)
        return df.drop(columns=["time_s", "algbw_bytes_per_s", "busbw_bytes_per_s"])

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["collectives"] = [c.to_dict() for c in self.collectives]
        return d


@contextlib.contextmanager
def fake_process_group(world_size: int) -> Iterator[None]:
    """The default process group as rank 0 of ``world_size`` on torch's fake backend, for the block."""
    import torch.distributed as dist
    from torch.testing._internal.distributed.fake_pg import FakeStore  # registers the "fake" backend

    if world_size < 1:
        raise DistributedError(f"--world-size must be >= 1, got {world_size}")
    if dist.is_initialized():
        raise DistributedError("a prediction runs on its own fake process group; this process has one initialised "
                               "already (predict outside torchrun)")
    dist.init_process_group("fake", rank=0, world_size=world_size, store=FakeStore())
    try:
        yield
    finally:
        dist.destroy_process_group()


def step_phase(train: bool) -> Callable[[], str]:
    """The phase running now, from autograd's state: "bwd" inside a backward, else "fwd" in training and
    "fwd_nograd" in inference (FSDP2 gathers parameters under ``no_grad`` in a training forward too, so
    the grad mode does not tell)."""
    forward = "fwd" if train else "fwd_nograd"

    def phase() -> str:
        return "bwd" if torch._C._current_graph_task_id() != -1 else forward

    return phase


def _python_allreduce_hook(world_size: int) -> Any:
    """DDP's default all-reduce as a Python comm hook: divide the bucket by N, all-reduce it, return it."""
    import torch.distributed as dist

    def hook(state, bucket):  # type: ignore[no-untyped-def]  # DDP checks the annotations: none, or its own classes
        buf = bucket.buffer()
        buf.div_(world_size)
        dist.all_reduce(buf)
        fut: torch.futures.Future[torch.Tensor] = torch.futures.Future()
        fut.set_result(buf)
        return fut

    return hook


def ddp_buckets(ready: Sequence[torch.Tensor], first_bucket_bytes: int, cap_bytes: int) -> list[int]:
    """Bytes of each bucket DDP's reducer builds when it rebuilds its buckets: parameters in the order their
    gradients became ready, grouped by ``torch.distributed._compute_bucket_assignment_by_size`` with
    limits (first bucket, then ``cap_bytes``)."""
    import torch.distributed as dist

    if not ready:
        return []
    buckets, _ = dist._compute_bucket_assignment_by_size(list(ready), [first_bucket_bytes, cap_bytes],
                                                         [False] * len(ready), list(range(len(ready))))
    return [sum(ready[i].numel() * ready[i].element_size() for i in b) for b in buckets]


def _rebucketed(step: tuple[Collective, ...], buckets: list[int]) -> tuple[tuple[Collective, ...], list[str]]:
    """``step`` with its backward all_reduces replaced by one per rebuilt bucket (same dtype and group), when they
    carry the same bytes in all; unchanged with a note otherwise."""
    reduces = [c for c in step if c.kind == "all_reduce" and c.phase == "bwd"]
    if not reduces or not buckets:
        return step, []
    if sum(c.bytes for c in reduces) != sum(buckets):
        return step, [f"DDP's rebuilt buckets ({sum(buckets)} B) do not hold the bytes all-reduced in the replay "
                      f"({sum(c.bytes for c in reduces)} B); the replay's calls are kept"]
    first = reduces[0]
    rebuilt = tuple(dataclasses.replace(first, bytes=b) for b in buckets)
    others = tuple(c for c in step if c not in reduces)
    return others + rebuilt, []


class _KeepBuckets:
    """DDP's reducer, except that it keeps its first buckets: rebuilding them broadcasts the new bucket order as
    an int tensor that the reducer then reads, and a fake tensor has no values to read."""

    def __init__(self, reducer: Any) -> None:
        self._reducer = reducer

    def _rebuild_buckets(self) -> bool:
        return False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._reducer, name)


def _record_ready(module: nn.Module, counter: CollectiveCounter, ready: list[torch.Tensor]) -> list[Any]:
    """Hooks that append each trainable parameter to ``ready`` when its gradient is accumulated in the first
    iteration (the order DDP's reducer records for its bucket rebuild)."""
    def hook(p: torch.Tensor) -> None:
        if counter.iteration == 1:
            ready.append(p)

    return [p.register_post_accumulate_grad_hook(hook) for p in module.parameters() if p.requires_grad]


def _wrapper(parallel: str, world_size: int, counter: CollectiveCounter, mesh: Any, blocks: Sequence[str] | None,
             ready: list[torch.Tensor]):
    """The ``wrap`` context of :func:`simulate`: the counter on top, the wrapped fake model, a forward pre-hook
    that numbers the iterations and, for DDP, the gradient order of the first iteration (``ready``)."""

    @contextlib.contextmanager
    def ctx(fmodel: nn.Module) -> Iterator[nn.Module]:
        with counter:
            wrapped = wrap(fmodel, parallel, torch.device(mesh.device_type if mesh is not None else "cpu"),
                           mesh=mesh, blocks=blocks, init_sync=False)
            handles = [wrapped.register_forward_pre_hook(lambda *_: counter.next_iteration(), prepend=True)]
            if isinstance(wrapped, DistributedDataParallel):
                wrapped.register_comm_hook(None, _python_allreduce_hook(world_size))
                wrapped.reducer = _KeepBuckets(wrapped.reducer)  # type: ignore[assignment]
                handles += _record_ready(wrapped, counter, ready)
            try:
                yield wrapped
            finally:
                for h in handles:
                    h.remove()

    return ctx


def _iterations(mode: str, optimizer: str | None, iterations: int) -> int:
    """Replayed steps: ``iterations`` with an optimizer (its state live from the second), 1 for training without
    one (gradients would accumulate, which a real step sets to None), 2 in inference (FSDP2 keeps the root's
    parameters gathered after a forward without backward: the second forward is the steady state)."""
    if mode != "train":
        return 2
    return iterations if optimizer else 1


def predict(model: nn.Module, inputs: Any, parallel: str, world_size: int, *, mode: str = "train",
            optimizer: str | None = "adam", batch: int | None = None, dtype: str = "fp32", device: str = "cpu",
            blocks: Sequence[str] | None = None, iterations: int = 3, count_flops: bool = True) -> Prediction:
    """Per-rank collectives, peak memory and FLOPs of ``model`` trained with ``parallel`` on ``world_size`` ranks
    (see the module docstring); ``batch`` is per rank, ``device`` the target ("cpu" or "cuda")."""
    import torch.distributed as dist

    from hwprof.memory.simulate import simulate

    parallel = check_parallel(parallel)
    counter = CollectiveCounter(world_size, phase_fn=step_phase(mode == "train"))
    ready: list[torch.Tensor] = []
    with fake_process_group(world_size):
        mesh = None
        if parallel == "fsdp":
            from torch.distributed.device_mesh import init_device_mesh

            mesh = init_device_mesh("cpu", (world_size,))   # the replay's fake tensors live on the CPU
        sim = simulate(model, inputs, mode=mode, optimizer=optimizer if mode == "train" else None, dtype=dtype,
                       batch=batch, device=device, iterations=_iterations(mode, optimizer, iterations),
                       wrap=_wrapper(parallel, world_size, counter, mesh, blocks, ready), record_timeline=True)
        buckets = ddp_buckets(ready, dist._DEFAULT_FIRST_BUCKET_BYTES, DDP_BUCKET_CAP_BYTES) if ready else []
    last = max((c.iteration for c in counter.calls), default=0)
    step, notes = _rebucketed(tuple(c for c in counter.calls if c.iteration == last), buckets)
    pred = Prediction(parallel, world_size, mode, optimizer if mode == "train" else None, device, batch, step,
                      sim.peak_allocated_bytes, sim.peak_requested_bytes, sim.at_peak, sim.peak_phase,
                      notes=[*sim.notes, *notes])
    if count_flops:
        from hwprof.counting.counter import count

        c = count(model, inputs, backward=mode == "train", batch=batch, dtype=dtype, mode="train" if mode == "train" else "inference")
        pred.flops_fwd, pred.flops_bwd = int(c.totals["flops_fwd"]), int(c.totals["flops_bwd"])
    return pred
