"""``hwprof.distributed.measure``: every rank measures its own DDP / FSDP2 step; rank 0 gathers the records.

Called on every rank inside an initialised process group (``torchrun``; the CLI's
``--parallel`` sets one up: :mod:`hwprof.distributed.group`). On each rank:

1. a copy of the model is moved to the rank's device and wrapped (:mod:`hwprof.distributed.wrap`);
   on the CPU the bytes the wrapper allocates besides parameters (DDP's gradient buckets) are
   measured from the allocator's events while it is built;
2. :func:`hwprof.measure` times the phases of the wrapped model and probes its memory. Every rank
   must issue the same collectives in the same order, so the number of repetitions is fixed
   (``max_reps = min_reps``, ``layer_reps``) instead of stopping on a time budget, which would
   differ between ranks and leave one rank waiting in a collective the others never call;
3. one more training step runs under :class:`~hwprof.distributed.collectives.CollectiveCounter`:
   the collectives of one step, counted from what dispatches;
4. the communication pass: ``comm_iterations`` steps under ``torch.profiler``, each phase inside
   ``record_function("hwprof.phase:<phase>")``; the backend's spans give each collective's time
   and the compute / communication / exposed communication of each phase
   (:mod:`hwprof.distributed.timeline`);
5. ``torch.distributed.gather_object`` brings every rank's :class:`RankRecord` to rank 0.

The user's model is never wrapped or run: only its copy is.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import socket
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn

from hwprof.distributed.collectives import Collective, CollectiveCounter
from hwprof.distributed.records import DistributedMeasurement, RankRecord
from hwprof.distributed.timeline import PHASE_PREFIX, pair_times, phase_breakdown, spans_of
from hwprof.distributed.wrap import check_parallel, local_param_bytes, prepared_copy, resident_bytes, wrap
from hwprof.measuring.alloc_trace import AllocTrace
from hwprof.measuring.passes import RunContext, Work, alloc_trace_pass
from hwprof.measuring.records import MeasureConfig, Measurement
from hwprof.measuring.runner import default_loss
from hwprof.measuring.runner import measure as measure_one
from hwprof.measuring.timers import Clock, PerfCounterClock
from hwprof.spec import as_input_tuple, parse_dtype

__all__ = ["measure", "run_step", "count_step", "comm_pass", "DEFAULT_LAYER_REPS", "DEFAULT_COMM_ITERATIONS"]

log = logging.getLogger(__name__)

DEFAULT_LAYER_REPS = 5
DEFAULT_COMM_ITERATIONS = 3
TRACE_RETRIES = 4

Mark = Callable[[str], contextlib.AbstractContextManager[Any]]


def run_step(work: Work, opts: list[torch.optim.Optimizer], mark: Mark) -> None:
    """One step as the timed phases run it, each phase inside ``mark(phase)``: ``fwd_nograd`` (inference), or
    ``fwd`` (forward and loss), ``bwd`` (``loss.backward()``) and, with optimizers, ``step``."""
    work.zero_grads()
    if not work.train:
        with mark("fwd_nograd"):
            work.forward_nograd()
        return
    with mark("fwd"):
        loss = work.loss()
    with mark("bwd"):
        work.backward(loss)
    del loss
    if opts:
        with mark("step"):
            work.step(opts)


def count_step(work: Work, optimizer: Any, world_size: int) -> tuple[Collective, ...]:
    """The collectives one step dispatches (:class:`CollectiveCounter`), each labelled with its phase."""
    counter = CollectiveCounter(world_size)

    @contextlib.contextmanager
    def mark(phase: str) -> Iterator[None]:
        counter.phase = phase
        yield

    with work.optimizers(optimizer) as opts, counter:
        run_step(work, opts, mark)
    return tuple(counter.calls)


def comm_pass(work: Work, optimizer: Any, device: torch.device, iterations: int) -> list[Any]:
    """One untimed step, then ``iterations`` steps under ``torch.profiler`` (CPU events; kernels too on CUDA),
    each phase in ``record_function(PHASE_PREFIX + phase)``; returns the profiler's events."""
    from torch.profiler import ProfilerActivity, record_function

    from hwprof.measuring.sessions import quiet_profile

    def mark(phase: str) -> contextlib.AbstractContextManager[Any]:
        return record_function(PHASE_PREFIX + phase)

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with work.optimizers(optimizer) as opts:
        run_step(work, opts, contextlib.nullcontext)   # type: ignore[arg-type]
        with quiet_profile(activities=activities) as prof:
            for _ in range(iterations):
                run_step(work, opts, mark)
            if device.type == "cuda":
                torch.cuda.synchronize(device)
    return list(prof.profiler.kineto_results.events())


def _fixed_reps(cfg: MeasureConfig) -> MeasureConfig:
    """Repetition counts every rank agrees on: ``max_reps = min_reps`` and a fixed ``layer_reps``."""
    return dataclasses.replace(cfg, max_reps=cfg.min_reps, layer_reps=cfg.layer_reps or DEFAULT_LAYER_REPS)


def _rank_device(cfg: MeasureConfig) -> torch.device:
    """The rank's device: its current CUDA device for a CUDA run (the process group set it), else the CPU."""
    from hwprof.device import resolve_device

    dev = resolve_device(cfg.device)
    if dev.type == "cuda":
        return torch.device("cuda", torch.cuda.current_device())
    return dev


def _wrapped(model: nn.Module, parallel: str, dev: torch.device, cfg: MeasureConfig,
             blocks: Sequence[str] | None) -> tuple[nn.Module, int]:
    """The wrapped copy and, on the CPU, the bytes its wrapper holds outside the parameters (:func:`resident_bytes`)."""
    dtype = parse_dtype(cfg.dtype) if cfg.dtype is not None else None
    wrapped = wrap(prepared_copy(model, dev, dtype, cfg.channels_last), parallel, dev, blocks=blocks)
    # on CUDA memory_allocated() already sees the wrapper's buffers: nothing to add
    return wrapped, 0 if dev.type == "cuda" else resident_bytes(wrapped)


def measure(model: nn.Module, inputs: Any, parallel: str, config: MeasureConfig | None = None, *,
            clock: Clock | None = None, loss_fn: Callable[[Any], torch.Tensor] | None = None,
            blocks: Sequence[str] | None = None, comm_iterations: int = DEFAULT_COMM_ITERATIONS,
            **overrides: Any) -> DistributedMeasurement:
    """Measure ``model`` wrapped in DDP (``parallel="ddp"``) or sharded by FSDP2 (``"fsdp"``) on every rank of the
    default process group (see the module docstring); rank 0 returns every rank's record, the other ranks
    their own. ``config`` / ``overrides``: as :func:`hwprof.measure` (``batch`` is per rank); ``blocks``: the
    module paths FSDP2 shards on their own (default :func:`hwprof.distributed.wrap.fsdp_blocks`)."""
    import torch.distributed as dist

    if not dist.is_initialized():
        raise RuntimeError("hwprof.distributed.measure needs an initialised process group (torchrun, "
                           "torch.distributed.init_process_group)")
    parallel = check_parallel(parallel)
    cfg = _fixed_reps(dataclasses.replace(config or MeasureConfig(), **overrides))
    dev = _rank_device(cfg)
    cfg = dataclasses.replace(cfg, device=str(dev))
    rank, world = dist.get_rank(), dist.get_world_size()
    wrapped, resident = _wrapped(model, parallel, dev, cfg, blocks)
    m = measure_one(wrapped, inputs, cfg, clock=clock, loss_fn=loss_fn, resident_bytes=resident, restore=False)
    dtype = parse_dtype(m.run.dtype)
    work = Work(wrapped, as_input_tuple(inputs, batch=cfg.batch, dtype=dtype, device=dev), cfg.train,
                loss_fn or default_loss)
    m = _with_clean_trace(m, work, RunContext(cfg, dev, clock or PerfCounterClock(), resident))
    calls = count_step(work, cfg.optimizer, world)
    dist.barrier()
    spans = spans_of(comm_pass(work, cfg.optimizer, dev, comm_iterations), dev.type)
    times, unseen = pair_times(spans, "fwd" if cfg.train else "fwd_nograd", len(calls))
    pairs = f" ({cfg.layer_reps} per-layer pairs)" if cfg.per_layer else ""
    notes = [f"every rank ran {cfg.min_reps} repetitions per phase{pairs}: ranks must issue the same collectives, so "
             "the time budget and the IQR target do not stop a distributed run"]
    record = RankRecord(rank, world, socket.gethostname(), m, calls, tuple(times), tuple(phase_breakdown(spans)),
                        tuple(tuple(u) for u in unseen), resident, local_param_bytes(wrapped), notes)
    return _gather(record, type(model).__name__, parallel, str(dist.get_backend()), world)


def _clean(trace: AllocTrace | None) -> bool:
    """Every block counted at the trace's peak was seen freed or reused (its peak is exact)."""
    return trace is None or (trace.peak_excess_bytes == 0 and trace.unfreed_at_peak_bytes == 0)


def _with_clean_trace(m: Measurement, work: Work, ctx: RunContext, retries: int = TRACE_RETRIES) -> Measurement:
    """The measurement with an allocator trace whose peak is exact: every block it counts at the peak was seen
    freed or reused. A backend's worker thread can drop the last reference to a collective's buffer, and the
    profiler records no free there (:attr:`AllocTrace.peak_excess_bytes`, :attr:`AllocTrace.unfreed_at_peak_bytes`;
    such a block allocated after the peak does not matter); whether it does is a race, so when any rank's
    peak may be too high every rank runs the allocator-trace pass again (all ranks alike: it runs collectives), up to
    ``retries`` times. Each rank keeps its first clean trace, else the one with the lowest peak (an upper
    bound), and says so in a note."""
    import torch.distributed as dist

    traces = [m.memory_record.alloc_trace]
    for _ in range(retries):
        dirty = torch.tensor([0.0 if _clean(traces[-1]) else 1.0], device=ctx.device)
        dist.all_reduce(dirty, op=dist.ReduceOp.MAX)
        if not dirty.item():
            break
        traces.append(alloc_trace_pass(work, ctx).trace)
    if len(traces) == 1 or traces[0] is None:
        return m
    clean = [t for t in traces if _clean(t)]
    best = clean[0] if clean else min((t for t in traces if t is not None), key=lambda t: t.peak_bytes)
    assert best is not None   # the first trace exists: the loop ran, so it was not clean
    note = (f"allocator trace repeated {len(traces) - 1} time(s): a free on a backend thread went unrecorded in "
            + ("an earlier pass; this one saw every free" if clean else
               f"every pass; the lowest peak is kept: {best.peak_excess_bytes} B above a replay without the unseen "
               f"frees, {best.unfreed_at_peak_bytes} B counted at the peak and never seen freed (an upper bound)"))
    record = dataclasses.replace(m.memory_record, alloc_trace=best)
    return dataclasses.replace(m, memory_record=record, notes=[*m.notes, note])


def _gather(record: RankRecord, model: str, parallel: str, backend: str, world: int) -> DistributedMeasurement:
    """Every rank's record on rank 0 (``gather_object``); the other ranks keep their own."""
    import torch.distributed as dist

    rank = dist.get_rank()
    out: list[Any] | None = [None] * world if rank == 0 else None
    dist.gather_object(record.to_dict(), out, dst=0)
    if rank != 0 or out is None:
        return DistributedMeasurement(model, parallel, backend, world, [record], gathered=False)
    ranks = [RankRecord.from_dict(d) for d in out]
    notes = _unseen_notes(ranks)
    return DistributedMeasurement(model, parallel, backend, world, ranks, notes=notes)


def _unseen_notes(ranks: list[RankRecord]) -> list[str]:
    out = []
    for r in ranks:
        extra = sorted({k for it in r.unseen for k in it})
        if extra:
            out.append(f"rank {r.rank}: the backend ran collectives the dispatcher did not see ({', '.join(extra)}); "
                       "they are timed in the phase table but not in the collective table")
    return out
