"""Simulated predictor: replay one training step on fake tensors and follow every allocation.

Method
------
1. :func:`hwprof.memory.fake_model.prepare_fake` builds a *fake copy* of the user's model
   (``copy.deepcopy`` under ``FakeCopyMode``; models built on ``torch.device("meta")`` work too)
   whose parameters and buffers are ``FakeTensor``s on the fake device, in the requested dtype.
   The user's model is never modified, moved or run; hooks are not copied onto the fake model
   (a user hook must not run on fake tensors and write into the user's objects).
2. :class:`hwprof.memory.tracker.MemoryTracker` is a ``TorchDispatchMode`` stacked above the
   ``FakeTensorMode``. Every aten op's output storage that it has not seen is an *allocation*;
   a ``weakref.finalize`` on the storage object is the matching *free*, so a storage dies
   exactly when the last tensor or view on it dies (views and in-place results share their
   base's storage and allocate nothing). ``resize_`` / ``out=`` resizes are seen as a size
   change of a tracked storage after an op. Parameters, buffers and inputs are registered
   as live before the step. Allocations are attributed to modules by the shared module-call
   tracker (:mod:`hwprof.modules`): in forward the running call, in backward the call that
   created the running autograd node.
3. ``simulate`` runs, under the tracker, what ``hwprof.measure`` runs: forward (``autocast`` if
   ``amp``) straight into ``loss = sum of the floating outputs`` (the output itself is not
   kept), ``loss.backward()``, then the real ``torch.optim`` optimizer's
   ``step()`` on the fake parameters and ``zero_grad(set_to_none=True)``. With an optimizer
   the iteration is run twice: the second one has the optimizer state live during forward
   and backward, as in ``hwprof.measure``'s step phase (forward and backward before each
   timed ``step()``, the state kept from the warm-up steps).
   On a CUDA target the optimizer uses ``foreach=True`` (torch's default for CUDA tensors),
   so its temporaries are real: Adam's ``_foreach_sqrt`` of the second moments holds one
   extra copy of the trainable parameters during the step.
4. Each allocation and free goes to an allocator model (``hwprof.memory.allocator``): the
   CUDA caching allocator's 512-byte blocks, 2 MiB / 20 MiB / 2 MiB-rounded segments, best
   fit, splitting and merging for a CUDA target; exact bytes for a CPU target. The peak of
   its ``allocated`` is the predicted ``torch.cuda.max_memory_allocated`` and the peak of
   ``reserved`` the predicted ``max_memory_reserved`` (with no ``empty_cache`` or OOM retry
   modelled, an upper bound for it). The cuBLAS workspaces are modelled by the tracker
   (:mod:`hwprof.memory.tracker`).

Fake device: by default the fake tensors live on the CPU, whatever the target, and the ops whose
CPU kernels save other tensors than CUDA's run through CUDA's kernels
(:mod:`hwprof.memory.cuda_kernels`). ``nn.LSTM`` is not emulated, and in training its kernels
keep a workspace from forward to backward that their fake kernels return empty (oneDNN on CPU:
31.3 MiB per layer for the zoo's ``lstm`` at batch 32, measured with
``hwprof.measuring.alloc_trace``; cuDNN's reserve space on CUDA): the prediction is low by that
much, and a note says so. ``fake_device="cuda"`` on a machine with CUDA dispatches the real CUDA
kernels on fake CUDA tensors instead; if that run fails it is retried on the CPU with a note.
On a CUDA target the 0-dim tensors created during the optimizer step (Adam's ``step``
counters, CPU scalars in the real run) are not counted.

Why not ``torch.distributed._tools.mem_tracker.MemTracker``: it was found to fail under
``FakeTensorMode`` on the transformer ("Mixing fake modes NYI") and on cuDNN LSTMs; it
replaces ``torch.UntypedStorage.resize_`` globally while active (hwprof never writes into
torch's namespace); it rounds to 512 B but models no segments, so it predicts no reserved
memory; and it needs the distributed package. The storage-finalizer bookkeeping here is the
same idea in ~150 lines; ``tests/memory`` compares both on a small CNN where MemTracker works.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import pandas as pd
import torch
from torch import nn

from hwprof.memory.allocator import make_allocator
from hwprof.memory.cuda_kernels import target_kernels
from hwprof.memory.fake_model import FakeSetup, fake_device_for, prepare_fake
from hwprof.memory.storage import storage_leaves
from hwprof.memory.tracker import MemoryTracker, cublas_workspace_bytes
from hwprof.modules import ModuleCalls
from hwprof.training import OPTIMIZERS, make_optimizer, training_loss

__all__ = ["SimulationResult", "simulate"]

logger = logging.getLogger(__name__)

Wrap = Callable[[nn.Module], contextlib.AbstractContextManager[nn.Module]]
"""``wrap(fake_model)`` -> a context manager yielding the module a simulated step runs (see :func:`simulate`)."""


@dataclass
class SimulationResult:
    """What the replay predicts. All values in bytes.

    * ``peak_allocated_bytes``: predicted ``max_memory_allocated`` (allocator-rounded, with workspace);
    * ``peak_requested_bytes``: the same peak without rounding (sum of live tensor storages);
    * ``reserved_bytes``: predicted ``max_memory_reserved`` (None on CPU);
    * ``components``: params, buffers, grads, optimizer_state (as held after the step),
      activations_saved (forward-allocated storages live when the forward ends, steady state),
      inputs, workspace, allocator_rounding (allocated minus requested at the peak),
      peak_predicted, reserved_predicted;
    * ``at_peak``: bytes by category live at the moment of the peak;
    * ``phase_peaks``: DataFrame of the peak per (iteration, phase); ``timeline``: every event.
    """

    components: dict[str, int | None]
    peak_allocated_bytes: int
    peak_requested_bytes: int
    reserved_bytes: int | None
    at_peak: dict[str, int]
    peak_phase: str
    phase_peaks: pd.DataFrame
    timeline: pd.DataFrame
    fake_device: str
    notes: list[str]


@dataclass(frozen=True)
class _Step:
    """What one replay runs, defaults resolved: the target ``device`` ("cuda" or "cpu"), train or
    inference, the optimizer (None in inference), iterations, foreach, cuBLAS workspace bytes."""

    device: str
    train: bool
    optimizer: str | None
    iterations: int
    foreach: bool
    workspace_bytes: int
    record_timeline: bool
    wrap: Wrap | None = None


def simulate(model: nn.Module, inputs: Any, *, mode: str = "train", optimizer: str | None = None,
             dtype: torch.dtype | str = torch.float32, amp: bool = False, batch: int | None = None,
             device: str = "cuda", iterations: int | None = None, fake_device: torch.device | str | None = None,
             foreach: bool | None = None, workspace_bytes: int | None = None,
             record_timeline: bool = True, wrap: Wrap | None = None) -> SimulationResult:
    """Replay ``iterations`` training steps (default: 2 with an optimizer, else 1) or one
    inference forward on fake tensors and return the predicted peaks (see module docstring).

    ``foreach`` defaults to torch's own choice on the target device (True on CUDA, False on
    CPU); ``workspace_bytes`` to :func:`hwprof.memory.tracker.cublas_workspace_bytes` on CUDA
    and 0 on CPU. ``wrap(fake_model)``: a context manager entered under the tracker before the first
    iteration, yielding the module the iterations run (e.g. the fake model wrapped for data-parallel
    training); what it allocates is tracked like everything else.
    """
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS} or None")
    notes: list[str] = []
    fdev = fake_device_for(device, fake_device)
    prepare = partial(prepare_fake, model, inputs, batch=batch, dtype=dtype, amp=amp, device=device, mode=mode)
    train = mode == "train"
    opt_name = optimizer if train else None
    try:
        return _simulate_on(prepare, fdev, notes, device, train, opt_name, iterations, foreach, workspace_bytes,
                            record_timeline, wrap)
    except Exception as e:      # noqa: BLE001 - a kernel without a fake impl on this device: retry on CPU
        if fdev.type == "cpu":
            raise
        logger.warning("fake run on %s failed (%s); retrying on fake CPU tensors", fdev, e)
        notes.append(f"fake run on {fdev} failed ({type(e).__name__}); replayed on fake CPU tensors")
        return _simulate_on(prepare, torch.device("cpu"), notes, device, train, opt_name, iterations, foreach,
                            workspace_bytes, record_timeline, wrap)


def _simulate_on(prepare: Callable[..., FakeSetup], fdev: torch.device, notes: list[str], device: str, train: bool,
                 optimizer: str | None, iterations: int | None, foreach: bool | None, workspace_bytes: int | None,
                 record_timeline: bool, wrap: Wrap | None = None) -> SimulationResult:
    """Prepare the fake model on ``fdev``, replay the step and gather the result."""
    setup = prepare(fake_device=fdev)
    step = _Step(device, train, optimizer,
                 iterations if iterations is not None else (2 if optimizer is not None else 1),
                 foreach if foreach is not None else device == "cuda",
                 workspace_bytes if workspace_bytes is not None else (cublas_workspace_bytes() if device == "cuda"
                                                                      else 0),
                 record_timeline, wrap)
    tracker, activations = _replay(setup, step)
    return _result(setup, step, tracker, activations, notes)


def _replay(setup: FakeSetup, step: _Step) -> tuple[MemoryTracker, int]:
    """Run ``step`` on the fake model (wrapped by ``step.wrap`` when given) under a fresh tracker;
    returns the tracker and the largest activation bytes live at the end of a forward."""
    fmodel = setup.model
    with ModuleCalls(fmodel) as calls, setup.fake_mode:
        tracker = MemoryTracker(make_allocator(step.device), calls, workspace_bytes=step.workspace_bytes,
                                skip_step_scalars=(step.device == "cuda"), record_timeline=step.record_timeline)
        _register_live(tracker, setup)
        activations = 0
        wrapped = step.wrap(fmodel) if step.wrap is not None else contextlib.nullcontext(fmodel)
        try:
            with tracker, wrapped as run_model:
                run = setup if run_model is fmodel else dataclasses.replace(setup, model=run_model)
                params = [p for p in run_model.parameters() if p.requires_grad]
                tracker.mark(list(run_model.parameters()), "params")   # a wrapper's new (sharded) parameters
                opt = make_optimizer(step.optimizer, params, step.foreach)
                for it in range(step.iterations):
                    activations = max(activations, _one_iteration(run, tracker, calls, opt, params, it, step.train))
        finally:
            tracker.close()
    return tracker, activations


def _register_live(tracker: MemoryTracker, setup: FakeSetup) -> None:
    """The parameters, buffers and inputs as live before the step (in a function of its own: a loop
    variable left in the caller would keep the last parameter alive after a wrapper such as FSDP2
    replaced it)."""
    for p in setup.model.parameters():
        tracker.register(p, "params")
    for b in setup.model.buffers():
        tracker.register(b, "buffers")
    for t in storage_leaves(setup.inputs):
        tracker.register(t, "inputs")


def _one_iteration(setup: FakeSetup, tracker: MemoryTracker, calls: ModuleCalls, opt: torch.optim.Optimizer | None,
                   params: list[nn.Parameter], it: int, train: bool) -> int:
    """One forward (+ backward + step); returns the activation bytes live at the end of the forward."""
    tracker.set_phase(it, "forward")
    loss = None
    with setup.autocast(), target_kernels(setup):
        if train:                       # as hwprof.measure: the output is not kept, only the loss
            loss = training_loss(setup.inputs.call(setup.model))
        else:
            with torch.no_grad():
                setup.inputs.call(setup.model)
    activations = tracker.mark_forward_end()
    if loss is not None:
        calls.label_backward([loss])    # backward allocations go to the module call that made the node
        tracker.set_phase(it, "backward")
        loss.backward()
        del loss
        tracker.mark([p.grad for p in params if p.grad is not None], "grads")
        if opt is not None:
            tracker.set_phase(it, "step")
            opt.step()
            tracker.mark([v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)],
                         "optimizer_state")
            tracker.set_phase(it, "zero_grad")
            opt.zero_grad(set_to_none=True)
    return activations


def _result(setup: FakeSetup, step: _Step, tracker: MemoryTracker, activations: int,
            notes: list[str]) -> SimulationResult:
    """The predicted components and peaks of a finished replay (see :class:`SimulationResult`)."""
    a = tracker.allocator
    cuda = step.device == "cuda"
    at_peak = tracker.bytes_by_category(tracker.live_at(tracker.peak_allocated_event))
    final = tracker.bytes_by_category(list(tracker.live.values()))
    grads = sum(r.nbytes for r in tracker.records
                if r.category == "grads" and r.iteration == step.iterations - 1) if step.train else 0
    components: dict[str, int | None] = {
        "params": setup.params_bytes,
        "buffers": setup.buffers_bytes,
        "grads": grads,
        "optimizer_state": final.get("optimizer_state", 0),
        "activations_saved": activations,
        "inputs": setup.inputs_bytes,
        "workspace": final.get("workspace", 0),
        "allocator_rounding": a.peak_allocated_bytes - sum(at_peak.values()),
        "peak_predicted": a.peak_allocated_bytes,
        "reserved_predicted": a.peak_reserved_bytes if cuda else None,
    }
    phase_peaks = pd.DataFrame(
        [{"iteration": i, "phase": ph, "peak_allocated_bytes": v} for (i, ph), v in tracker.phase_peaks.items()
         if ph != "setup"])
    timeline = pd.DataFrame(tracker.timeline, columns=["event", "iteration", "phase", "kind", "op", "nbytes",
                                                       "allocated_bytes", "reserved_bytes"])
    peak_phase = _phase_of_event(tracker)
    notes.extend(_notes(setup, step, tracker, peak_phase))
    return SimulationResult(components, a.peak_allocated_bytes, tracker.peak_requested_bytes,
                            a.peak_reserved_bytes if cuda else None, at_peak, peak_phase,
                            phase_peaks, timeline, str(setup.fake_device), notes)


def _notes(setup: FakeSetup, step: _Step, tracker: MemoryTracker, peak_phase: str) -> list[str]:
    """The caveats of a finished replay, in the order the result lists them."""
    notes = []
    trainable = any(p.requires_grad for p in setup.model.parameters())
    if step.train and trainable and not any(r.phase == "backward" for r in tracker.records):
        notes.append("the output has no floating tensor requiring grad: no backward was run")
    notes.append(f"fake tensors on {setup.fake_device}; peak in {peak_phase}")
    rnns = sorted({type(m).__name__ for m in setup.model.modules() if isinstance(m, nn.RNNBase)})
    if rnns and step.train:
        kept = "cuDNN's reserve space" if step.device == "cuda" else "oneDNN's RNN workspace"
        notes.append(f"not modelled: {kept}, which {'/'.join(rnns)} keeps from forward to backward in training "
                     "(the fake kernel returns it empty); the prediction is low by that much")
    if step.device == "cuda":
        notes.append(f"optimizer foreach={step.foreach}; cuBLAS workspace {step.workspace_bytes} B per thread")
    return notes


def _phase_of_event(tracker: MemoryTracker) -> str:
    ev = tracker.peak_allocated_event
    for r in tracker.records:
        if r.alloc_event == ev:
            return f"{r.phase} (iteration {r.iteration + 1})"
    return "setup"
