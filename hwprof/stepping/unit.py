"""A user's step as hwprof's unit of work: the callable, its module tree, what it touches, where it runs.

:func:`prepare_step` runs the step once, untimed, under :class:`~hwprof.stepping.recorder.StepRecorder`
(the first warm-up of a measurement): it learns which modules ran and which optimizers stepped,
snapshots each before it changes (with ``restore=True``), and builds the :class:`Step` record
that counting (:func:`hwprof.counting.counter.count_step`), measuring
(:func:`hwprof.measuring.runner.measure_step`) and the join share. ``model(inputs)`` with a loss
and an optimizer is one kind of step (hwprof builds it for ``hwprof.profile``); a user's training
step, with gradient accumulation, two models, two optimizers, a teacher inside the loss or its own
autocast, is another.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_leaves

from hwprof.amp import ambient_amp, amp_name
from hwprof.stepping.recorder import StepRecorder
from hwprof.stepping.snapshot import StepSnapshot
from hwprof.stepping.targets import build_root, name_roots, reachable_objects

__all__ = ["Step", "prepare_step", "step_label"]


@dataclass
class Step:
    """A user's step, resolved by one run (:func:`prepare_step`).

    ``run()`` calls ``step(*args, **kwargs)``; ``root`` is the one module tree of every module that
    ran (:func:`hwprof.stepping.targets.build_root`), ``names`` its roots by name; ``optimizers``
    and ``schedulers`` are those that stepped; ``device`` is where the step's parameters live;
    ``amp`` the autocast dtype in force where hwprof was called (the step's own ``torch.autocast``
    inside it is seen op by op); ``snapshot`` is what :meth:`restore` puts back (None:
    ``restore=False``)."""

    fn: Callable[..., Any]
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    root: nn.Module
    names: dict[str, nn.Module]
    label: str
    device: torch.device
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    schedulers: list[Any] = field(default_factory=list)
    amp: str | None = None
    snapshot: StepSnapshot | None = None

    def run(self) -> None:
        """One step; its return value is dropped at once (nothing of it stays alive between repetitions)."""
        self.fn(*self.args, **self.kwargs)

    @property
    def params(self) -> list[nn.Parameter]:
        return list(self.root.parameters())

    def live_tensors(self) -> list[torch.Tensor]:
        """Tensors alive across the step: parameters, buffers, gradients, optimizer state, tensor arguments."""
        out: list[torch.Tensor] = [*self.root.parameters(), *self.root.buffers()]
        out += [p.grad for p in self.root.parameters() if p.grad is not None]
        for opt in self.optimizers:
            out += [v for s in opt.state.values() for v in s.values() if isinstance(v, torch.Tensor)]
        out += [t for t in tree_leaves((self.args, self.kwargs)) if isinstance(t, torch.Tensor)]
        return out

    def restore(self) -> None:
        if self.snapshot is not None:
            self.snapshot.restore()


def step_label(fn: Callable[..., Any]) -> str:
    """The step's name for the records: its ``__qualname__`` (``train_step``), else its class name."""
    name = getattr(fn, "__qualname__", None) or getattr(getattr(fn, "func", None), "__qualname__", None)
    return str(name or type(fn).__name__)


def prepare_step(fn: Callable[..., Any], args: tuple[Any, ...] = (), kwargs: Mapping[str, Any] | None = None, *,
                 models: nn.Module | Mapping[str, nn.Module] | None = None, restore: bool = True) -> Step:
    """Run ``fn(*args, **kwargs)`` once under the recorder and resolve it into a :class:`Step`.

    With ``restore`` everything the step reaches statically is snapshotted before it runs, and what
    it reaches only at run time is snapshotted as it is first touched; if the run raises, the
    snapshot is restored and the exception propagates unchanged."""
    kwargs = dict(kwargs or {})
    static = reachable_objects(fn, args, kwargs)
    snapshot = StepSnapshot() if restore else None
    if snapshot is not None:
        snapshot.add(obj for _, obj in static.values())
        snapshot.add(_given(models))
    recorder = StepRecorder(snapshot)
    try:
        with recorder:
            fn(*args, **kwargs)
    except BaseException:
        if snapshot is not None:
            snapshot.restore()
        raise
    roots = _roots(recorder, static, models)
    names = name_roots(roots, static, models)
    root = build_root(names) if names else nn.Module()
    return Step(fn, tuple(args), kwargs, root, names, step_label(fn), _device(root, args, kwargs),
                recorder.optimizers, recorder.schedulers, amp_name(_ambient(root, args, kwargs)), snapshot)


def _given(models: nn.Module | Mapping[str, nn.Module] | None) -> list[nn.Module]:
    if models is None:
        return []
    return [models] if isinstance(models, nn.Module) else list(models.values())


def _roots(rec: StepRecorder, static: Mapping[int, tuple[str, Any]],
           models: nn.Module | Mapping[str, nn.Module] | None) -> list[nn.Module]:
    """The outermost modules that ran, each replaced by the outermost statically named module (or model
    given in ``models``) that contains it (``model.encoder`` and ``model.head`` called apart are ``model``),
    then every model given in ``models`` that did not run."""
    holders = _given(models) + [obj for _, obj in static.values() if isinstance(obj, nn.Module)]
    out: list[nn.Module] = []
    for r in rec.outermost():
        outer = [h for h in holders if any(m is r for m in h.modules())]
        best = max(outer, key=lambda h: sum(1 for _ in h.modules()), default=r)
        if not any(best is o for o in out):
            out.append(best)
    for m in _given(models):
        if not any(m is o or any(s is m for s in o.modules()) for o in out):
            out.append(m)
    inner = {id(s) for o in out for s in o.modules() if s is not o}
    return [o for o in out if id(o) not in inner]


def _device(root: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> torch.device:
    """Where the step runs: its first parameter's device, else its first tensor argument's, else the CPU."""
    for p in root.parameters():
        return p.device
    for t in tree_leaves((args, dict(kwargs))):
        if isinstance(t, torch.Tensor):
            return t.device
    return torch.device("cpu")


def _ambient(root: nn.Module, args: tuple[Any, ...], kwargs: Mapping[str, Any]) -> torch.dtype | None:
    return ambient_amp(_device(root, args, kwargs).type)
