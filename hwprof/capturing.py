"""``hwprof.capture`` (this module: ``hwprof.capturing``, so that the package attribute stays the function):
profile chosen steps of the user's own loop, where they run, and change nothing.

::

    with hwprof.capture(steps="3:6") as cap:     # steps 3, 4 and 5 (0-based, as Python's range)
        for x, y in loader:
            opt.zero_grad(); loss_fn(model(x), y).backward(); opt.step()   # a step ends at opt.step()
    cap.profile                                  # the Profile of the captured steps (None: not reached)

**Step boundaries.** A step ends when its optimizer's ``step()`` returns (torch's global optimizer
post hook, the one thing installed for the whole block). With several optimizers stepping in one
step (a GAN's discriminator, then its generator) the step ends after the last of them: the first
step teaches the order (it is complete when an optimizer steps a second time), so a captured range
must then start at step 1 or later. A loop that steps no optimizer, or whose steps end elsewhere,
calls ``cap.step()`` at the end of every step instead (from its first step on).

**What each captured step does** (only those steps carry hooks or modes; the others run as
without hwprof): the first is *counted* (the counter's dispatch mode on the real tensors,
:class:`hwprof.counting.counter.StepCount`); the next ones alternate *timed* (only the boundary
marks: ``whole_step``) and *hooked* (the per-layer timer, :class:`hwprof.measuring.timers.StepTimer`,
paired with the timed step just before it), and the fourth captured step, when there is one, runs
under ``torch.profiler`` with ``profile_memory=True`` (per-op times and the allocator trace):

    steps="3:6"  -> 3 counted, 4 timed, 5 hooked
    steps="3:7"  -> 3 counted, 4 timed, 5 hooked, 6 profiled
    steps="3:10" -> ... then 7 timed, 8 hooked, 9 timed

The loop computes exactly what it computes without hwprof: nothing is restored because nothing is
repeated, and no hook or mode changes a value (the counter's dispatch mode calls every op as it
came). Modules are found as they run: a module whose forward starts while no known one runs is a
new root, named by the variable that holds it in the calling code (``model``, ``self.teacher``
-> ``teacher``), else by its class. ``models=`` (one module, or a dict name -> module) names them instead.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwprof.counting.counter import CountResult, StepCount
from hwprof.device import MathModes
from hwprof.hardware.ceilings import Ceilings
from hwprof.joining import Profile
from hwprof.measuring.alloc_trace import storage_bytes, summarize
from hwprof.measuring.op_times import dispatched_ops
from hwprof.measuring.passes import (
    LayerPair,
    LayerPass,
    OpPass,
    PhaseTimes,
    RunContext,
    StepWork,
    TracePass,
    layer_table,
)
from hwprof.measuring.probes import MemoryProbes, PhasePeak, cuda_peaks, cuda_reset_peaks
from hwprof.measuring.records import MeasureConfig, RunInfo
from hwprof.measuring.sessions import quiet_profile
from hwprof.measuring.timers import PerfCounterClock, StepTimer, Stopwatch, TimingStats
from hwprof.placement import model_float_dtype
from hwprof.spec import Inputs
from hwprof.stepping.targets import StepModels

__all__ = ["capture", "Capture", "parse_steps", "DEFAULT_STEPS"]

log = logging.getLogger(__name__)

DEFAULT_STEPS = "3:6"


def parse_steps(steps: str | int | range | slice) -> range:
    """"3:6" -> range(3, 6) (steps 3, 4, 5, 0-based); "5" or 5 -> range(5, 6); a range or a slice as it is.
    Needs at least one step, a start >= 0 and a stop above it (a ``ValueError`` saying so otherwise)."""
    if isinstance(steps, range):
        r = steps
    elif isinstance(steps, slice):
        r = range(steps.start or 0, steps.stop if steps.stop is not None else -1)
    elif isinstance(steps, int) and not isinstance(steps, bool):
        r = range(steps, steps + 1)
    elif isinstance(steps, str):
        r = _parse_text(steps)
    else:
        raise ValueError(f"steps must be 'START:STOP' (e.g. '3:6'), a step number or a range, got {steps!r}")
    if r.step != 1 or r.start < 0 or r.stop <= r.start:
        raise ValueError(f"steps {steps!r}: need 0 <= START < STOP (e.g. '3:6' for steps 3, 4 and 5)")
    return r


def _parse_text(text: str) -> range:
    parts = text.strip().split(":")
    try:
        if len(parts) == 1:
            n = _int(parts[0])
            return range(n, n + 1)
        if len(parts) == 2:
            return range(_int(parts[0]) if parts[0].strip() else 0, _int(parts[1]))
    except ValueError:
        pass
    raise ValueError(f"steps {text!r}: expected START:STOP with whole numbers, e.g. '3:6'")


def _int(text: str) -> int:
    t = text.strip()
    if not t.isascii() or not t.isdigit():
        raise ValueError(t)
    return int(t)


ROLE_CYCLE = ("time", "layers", "ops", "time", "layers")
"""Roles of the captured steps after the counted one; past the cycle, "time" and "layers" alternate."""


def role_plan(n: int) -> list[str]:
    """The role of each of ``n`` captured steps (module docstring): "count", then :data:`ROLE_CYCLE`."""
    out = ["count"]
    while len(out) < n:
        i = len(out) - 1
        out.append(ROLE_CYCLE[i] if i < len(ROLE_CYCLE) else ("time" if (i - len(ROLE_CYCLE)) % 2 == 0 else "layers"))
    return out[:n]


# --------------------------------------------------------------------------- names of modules found running
_SKIP = (str(Path(torch.__file__).parent), str(Path(__file__).parent))


def caller_name(module: nn.Module) -> str | None:
    """The name that holds ``module`` in the nearest calling frame outside torch and hwprof: a local or
    global variable, or an attribute of that frame's ``self``; None when no frame holds it by name."""
    frame: Any = sys._getframe(1)
    while frame is not None:
        if not frame.f_code.co_filename.startswith(_SKIP):
            for scope in (frame.f_locals, frame.f_globals):
                for k, v in scope.items():
                    if v is module and k.isidentifier() and k != "self":
                        return k
            owner = frame.f_locals.get("self")
            for k, v in (vars(owner).items() if owner is not None and hasattr(owner, "__dict__") else ()):
                if v is module:
                    return str(k)
            return None
        frame = frame.f_back
    return None


@dataclass
class _Namer:
    """Names for the roots of an open world (:attr:`hwprof.modules.ModuleCalls.adopt`)."""

    given: dict[int, str] = field(default_factory=dict)
    taken: set[str] = field(default_factory=set)

    def __call__(self, module: nn.Module) -> str:
        name = self.given.get(id(module)) or caller_name(module) or type(module).__name__
        base, i = name, 1
        while name in self.taken:
            name, i = f"{base}_{i}", i + 1
        self.taken.add(name)
        return name


# --------------------------------------------------------------------------- what the captured steps record
@dataclass
class _Records:
    count: CountResult | None = None
    times_s: list[float] = field(default_factory=list)
    peaks: list[tuple[int | None, int | None]] = field(default_factory=list)
    pairs: list[LayerPair] = field(default_factory=list)
    ops: Any = None
    trace: Any = None


class Capture:
    """The context manager :func:`capture` returns (module docstring). After the block: ``profile`` (a
    :class:`~hwprof.joining.Profile`, or None), ``steps_seen`` (steps that ended inside the block) and
    ``missing`` (why there is no profile, one line)."""

    def __init__(self, steps: str | int | range | slice = DEFAULT_STEPS, *,
                 models: nn.Module | Mapping[str, nn.Module] | None = None,
                 ceilings: Ceilings | Callable[[str], Ceilings] | None = None, name: str = "captured step") -> None:
        self.range = parse_steps(steps)
        self.roles = role_plan(len(self.range))
        self.ceilings = ceilings
        self.name = name
        self.profile: Profile | None = None
        self.steps_seen = 0
        self.missing: str | None = None
        if isinstance(models, nn.Module):
            self.root: nn.Module = models
            self.namer: _Namer | None = None
        else:
            self.root = StepModels({})
            self.namer = _Namer({id(m): k for k, m in (models or {}).items()})
        self._records = _Records()
        self._cycle: list[int] = []
        self._learning = True
        self._manual = False
        self._active: _Role | None = None
        self._probes: MemoryProbes | None = None
        self._probes_done = False
        self._optimizers: dict[int, torch.optim.Optimizer] = {}
        self._handles: list[Any] = []
        self._failed: str | None = None

    # ------------------------------------------------------------------ the block
    def __enter__(self) -> Capture:
        from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

        self._handles = [register_optimizer_step_pre_hook(self._opt_pre),
                         register_optimizer_step_post_hook(self._opt_post)]
        self._begin(0)
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        handles, self._handles = self._handles, []
        for h in handles:
            h.remove()
        if self._active is not None:      # the block ended inside a step: that step is incomplete
            self._active.abort(self)
            self._active = None
        self._stop_probes()
        self._finish()

    def step(self) -> None:
        """End the current step here (a loop whose steps do not end at an optimizer's ``step()``)."""
        if not self._manual and self.steps_seen:
            self._failed = ("cap.step() was called after steps had ended at optimizer.step(): call it at the end "
                            "of every step, from the first one")
        self._manual = True
        self._boundary()

    # ------------------------------------------------------------------ boundaries
    def _opt_pre(self, opt: torch.optim.Optimizer, *_: Any) -> None:
        self._optimizers.setdefault(id(opt), opt)
        if self._active is not None:
            self._active.opt_pre()

    def _opt_post(self, opt: torch.optim.Optimizer, *_: Any) -> None:
        if self._active is not None:
            self._active.opt_post()
        if self._manual:
            return
        if self._learning and id(opt) in self._cycle:
            self._learning = False
        if self._learning:
            self._cycle.append(id(opt))
            if len(self._cycle) > 1:
                self._retract()
            self._boundary()
        elif id(opt) == self._cycle[-1]:
            self._boundary()

    def _retract(self) -> None:
        """Step 0 ended at a later optimizer than first thought: undo the boundary declared at the earlier one."""
        if self.range.start == 0:
            self._failed = ("several optimizers step in each step and step 0 is in the range: steps are learned "
                            "from step 0, so start the range at step 1 or later (or call cap.step())")
        if self._active is not None:
            self._active.abort(self)
            self._active = None
        self.steps_seen -= 1

    def _boundary(self) -> None:
        if self._active is not None:
            self._active.end(self)
            self._active = None
        self.steps_seen += 1
        if self.steps_seen == self.range.stop:
            self._stop_probes()
        self._begin(self.steps_seen)

    def _begin(self, index: int) -> None:
        if index not in self.range or self._failed:
            return
        if self._probes is None:
            self._probes = MemoryProbes(self.device).__enter__()
        role = _ROLES[self.roles[index - self.range.start]]()
        role.begin(self)
        self._active = role

    def _stop_probes(self) -> None:
        if self._probes is not None and not self._probes_done:
            self._probes_done = True
            self._probes.__exit__(None, None, None)

    @property
    def device(self) -> torch.device:
        """Where the captured modules' parameters live (the CPU until a module has been seen)."""
        for p in self.root.parameters():
            return p.device
        return torch.device("cpu")

    def live_tensors(self) -> list[torch.Tensor]:
        """Tensors alive across steps: the modules' parameters, buffers and gradients, the optimizers' state."""
        out: list[torch.Tensor] = [*self.root.parameters(), *self.root.buffers()]
        out += [p.grad for p in self.root.parameters() if p.grad is not None]
        for opt in self._optimizers.values():
            out += [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        return out

    # ------------------------------------------------------------------ the profile
    def _finish(self) -> None:
        from hwprof.profiler import trusted_join

        rec = self._records
        done = min(self.steps_seen, self.range.stop) - self.range.start
        if self._failed:
            self.missing = self._failed
        elif rec.count is None or not rec.times_s:
            self.missing = (f"the loop ran {self.steps_seen} step(s); steps {self.range.start}:{self.range.stop} need "
                            f"{self.range.stop}" + ("" if len(self.range) > 1 else " and a second captured step to time"))
        if self.missing is not None:
            return
        m = _measurement(self, rec, done)
        k = (self.ceilings(m.run.device) if callable(self.ceilings) else
             self.ceilings if self.ceilings is not None else _ceilings(m.run.device))
        assert rec.count is not None
        self.profile = trusted_join(rec.count, m, k, name=self.name)


def _ceilings(device: str) -> Ceilings:
    from hwprof.hardware.ceilings import measure_ceilings

    return measure_ceilings(device=device)


def _measurement(cap: Capture, rec: _Records, done: int) -> Any:
    """The captured steps' records assembled by the runner's own :func:`~hwprof.measuring.runner.assemble`."""
    from hwprof.measuring.runner import Passes, assemble

    dev = cap.device
    train = bool(rec.count is not None and rec.count.config.get("backward"))
    cfg = MeasureConfig(device=str(dev), mode="train" if train else "inference", kind="step",
                        per_layer=bool(rec.pairs), per_op=rec.ops is not None, alloc_trace=rec.trace is not None,
                        budget_s=0.0, warmup=0, min_reps=1)
    stats = TimingStats(rec.times_s, warmup=0, device=str(dev), stop_reason="captured")
    alloc = [a for a, _ in rec.peaks if a is not None]
    reserved = [r for _, r in rec.peaks if r is not None]
    peak = PhasePeak(StepWork.PHASE, max(alloc) if alloc else None, max(reserved) if reserved else None)
    layers = None
    if rec.pairs:
        table, layer_notes = layer_table(cap.root, [p.layers for p in rec.pairs])
        layers = LayerPass(table, tuple(rec.pairs), tuple(layer_notes))
    passes = Passes(PhaseTimes({StepWork.PHASE: stats}, (peak,)),
                    TracePass(rec.trace) if rec.trace is not None else None, layers,
                    OpPass(rec.ops) if rec.ops is not None else None)
    run = RunInfo(model=cap.name, device=str(dev), dtype=str(model_float_dtype(cap.root)).removeprefix("torch."),
                  batch=None, threads=torch.get_num_threads())
    assert cap._probes is not None
    notes: tuple[str, ...] = (
        f"captured steps {cap.range.start}:{cap.range.start + done} of the user's loop ({', '.join(cap.roles)}): the "
        f"step time is the median of {len(rec.times_s)} timed step(s), each one run of the loop, not a repetition",)
    return assemble(RunContext(cfg, dev, PerfCounterClock()), run, passes, cap._probes, notes, MathModes.current(dev.type))


# --------------------------------------------------------------------------- roles
class _Role:
    """What one captured step does; ``begin`` and ``end`` run at its boundaries (inside an optimizer hook)."""

    def begin(self, cap: Capture) -> None: ...

    def end(self, cap: Capture) -> None: ...

    def abort(self, cap: Capture) -> None:
        """The step will not complete (the block ended, or its start was a boundary taken back)."""

    def opt_pre(self) -> None: ...

    def opt_post(self) -> None: ...


class _Count(_Role):
    def begin(self, cap: Capture) -> None:
        self.sc = StepCount(cap.root, adopt=cap.namer)
        self.sc.begin()

    def end(self, cap: Capture) -> None:
        self.sc.end()
        cap._records.count = self.sc.result(Inputs(), {"device": cap.device.type, "amp": None, "step": cap.name})

    def abort(self, cap: Capture) -> None:
        self.sc.end()

    def opt_pre(self) -> None:
        self.sc.opt_enter()

    def opt_post(self) -> None:
        self.sc.opt_leave()


class _Time(_Role):
    """The step between its two boundaries (host clock on the CPU, CUDA events on the current stream), and the
    CUDA allocator's peaks over it."""

    def begin(self, cap: Capture) -> None:
        self.watch = Stopwatch(cap.device, marks=2)
        cuda_reset_peaks(cap.device)
        self.watch.mark()

    def end(self, cap: Capture) -> None:
        self.watch.mark()
        cap._records.times_s.append(self.watch.elapsed_s(0, 1))
        cap._records.peaks.append(cuda_peaks(cap.device))


class _Layers(_Role):
    def begin(self, cap: Capture) -> None:
        self.timer = StepTimer(cap.root, device=cap.device, optimizer_hooks=False)
        self.timer.adopt = cap.namer
        self.timer.__enter__()
        self.timer.reset()
        self.start = self.timer.mark()

    def end(self, cap: Capture) -> None:
        end = self.timer.mark()
        layers = self.timer.collect()
        split = self.timer.split(self.start, end)
        self.timer.__exit__()
        times = cap._records.times_s
        if times:   # paired with the timed step right before it
            cap._records.pairs.append(LayerPair(layers, {StepWork.PHASE: times[-1]}, split))

    def abort(self, cap: Capture) -> None:
        self.timer.__exit__()

    def opt_pre(self) -> None:
        self.timer.opt_pre()

    def opt_post(self) -> None:
        self.timer.opt_post()


class _Ops(_Role):
    def begin(self, cap: Capture) -> None:
        from torch.profiler import ProfilerActivity

        dev = cap.device
        self.before = storage_bytes(cap.live_tensors()) if dev.type != "cuda" else int(torch.cuda.memory_allocated(dev))
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.type == "cuda" else [])
        self.session = quiet_profile(activities=activities, profile_memory=True)
        self.prof = self.session.__enter__()

    def end(self, cap: Capture) -> None:
        import pandas as pd

        dev = cap.device
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        self.session.__exit__(None, None, None)
        events = self.prof.events()
        rows = dispatched_ops([e for e in events if e.cpu_parent is None], use_device_time=dev.type == "cuda")
        cap._records.ops = pd.DataFrame(rows, columns=["phase", "op", "time_s"])
        cap._records.trace = summarize(self.prof, self.before, dev.type)

    def abort(self, cap: Capture) -> None:
        self.session.__exit__(None, None, None)

    def opt_pre(self) -> None:
        """A range of the profiler's own around each optimizer step: the profile window ends inside the step's
        last ``Optimizer.step#`` range, which never closes before the profiler stops, so that range cannot
        mark its ops (:func:`~hwprof.measuring.op_times.dispatched_ops` reads this one as phase ``opt``)."""
        from torch.profiler import record_function

        self.marker: Any = record_function("Optimizer.step#captured")
        self.marker.__enter__()

    def opt_post(self) -> None:
        rf = getattr(self, "marker", None)
        if rf is not None:
            rf.__exit__(None, None, None)
            self.marker = None


_ROLES: dict[str, type[_Role]] = {"count": _Count, "time": _Time, "layers": _Layers, "ops": _Ops}


def capture(steps: str | int | range | slice = DEFAULT_STEPS, *,
            models: nn.Module | Mapping[str, nn.Module] | None = None,
            ceilings: Ceilings | Callable[[str], Ceilings] | None = None, name: str = "captured step") -> Capture:
    """A context manager around the user's own loop that profiles the steps ``steps`` (module docstring);
    ``cap.profile`` afterwards. ``ceilings``: the roofs to join with, or a function of the device that
    returns them (default: measured, or read from the cache, after the block, when the loop is done)."""
    return Capture(steps, models=models, ceilings=ceilings, name=name)

