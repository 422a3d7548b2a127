"""Leave the user's program as it was: snapshot what a measurement can change, restore it in ``finally``.

:class:`ModelSnapshot` (:func:`preserved_state` for one model) keeps, for every module of a model:

* parameter and buffer *objects* (which tensor sits in each ``_parameters`` / ``_buffers`` slot)
  and their *values*, copied to CPU (BatchNorm running stats and ``num_batches_tracked`` move
  in a train forward; an optimizer step moves the parameters);
* the ``training`` flag of every module and ``requires_grad`` of every parameter;
* every parameter's ``.grad`` object and, with ``grad_values=True``, its values (a user's step
  accumulates into the gradient tensors it finds, so they are restored in place too).

On restore, slots are re-pointed at the original objects and values copied back in place, so a
tensor's identity never changes (an optimizer, a compiled graph or the user may hold it).

:class:`StepSnapshot` adds what a user's *step* touches beside its modules (``profile_step``
snapshots everything the step reaches before it runs it, and puts it back afterwards):

* optimizers: per-parameter state tensors (copied back into the same tensor objects where they
  still exist; state created meanwhile is dropped), every hyperparameter of every param group
  (an LR scheduler rewrites ``lr``), the parameters' values and gradients;
* LR schedulers and ``GradScaler``\\ s, through their own ``state_dict`` / ``load_state_dict``;
* the random number generators: torch's CPU generator and CUDA's (when initialised), Python's
  ``random`` and NumPy's global generator (when NumPy is imported).

Modules and optimizers may be added while the step runs (:meth:`StepSnapshot.add_module` from a
forward pre-hook, :meth:`StepSnapshot.add_optimizer` from an optimizer step pre-hook): each is
snapshotted the first time it is seen, before its forward or its step changes anything.
:func:`hook_counts` counts module-level and global hooks, for checking that nothing leaked.
"""

from __future__ import annotations

import contextlib
import copy
import random
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

__all__ = ["preserved_state", "ModelSnapshot", "OptimizerSnapshot", "RngSnapshot", "StepSnapshot", "hook_counts",
           "is_scheduler", "is_grad_scaler"]


def _cpu(t: torch.Tensor) -> torch.Tensor:
    return t.detach().to("cpu", copy=True)


def _copy_into(dst: torch.Tensor, src: torch.Tensor) -> None:
    with torch.no_grad():
        dst.copy_(src)


@dataclass
class ModelSnapshot:
    """What :func:`preserved_state` restores. Values live on CPU."""

    slots: list[tuple[nn.Module, str, str, torch.Tensor | None]] = field(default_factory=list)
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    training: list[tuple[nn.Module, bool]] = field(default_factory=list)
    requires_grad: list[tuple[torch.Tensor, bool]] = field(default_factory=list)
    grads: list[tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=list)
    grad_values: dict[int, torch.Tensor] = field(default_factory=dict)
    _tensors: list[torch.Tensor] = field(default_factory=list)

    @classmethod
    def take(cls, model: nn.Module, *, grad_values: bool = False, skip: set[int] | None = None) -> ModelSnapshot:
        """Snapshot every module of ``model`` whose id is not in ``skip`` (ids taken are added to it)."""
        snap = cls()
        seen: set[int] = set()
        skip = skip if skip is not None else set()
        for m in model.modules():
            if id(m) in skip:
                continue
            skip.add(id(m))
            snap.training.append((m, m.training))
            for kind in ("_parameters", "_buffers"):
                for name, t in getattr(m, kind).items():
                    snap.slots.append((m, kind, name, t))
                    if t is not None and id(t) not in seen:
                        seen.add(id(t))
                        snap._keep(t, kind == "_parameters", grad_values)
        return snap

    @classmethod
    def of_tensors(cls, tensors: Iterable[torch.Tensor]) -> ModelSnapshot:
        """Values, ``requires_grad`` and gradients (objects and values) of loose tensors (an optimizer's
        parameters), without module slots."""
        snap = cls()
        for t in {id(t): t for t in tensors}.values():
            snap._keep(t, True, True)
        return snap

    def _keep(self, t: torch.Tensor, is_param: bool, grad_values: bool) -> None:
        self.values[id(t)] = _cpu(t)
        self._tensors.append(t)
        if is_param:
            self.requires_grad.append((t, t.requires_grad))
            self.grads.append((t, t.grad))
            if grad_values and t.grad is not None:
                self.grad_values[id(t.grad)] = _cpu(t.grad)

    def restore(self) -> None:
        for m, kind, name, t in self.slots:
            getattr(m, kind)[name] = t
        for t in self._tensors:
            _copy_into(t, self.values[id(t)])
        for m, flag in self.training:
            m.training = flag
        for p, flag in self.requires_grad:
            p.requires_grad_(flag)
        for p, g in self.grads:
            p.grad = g
            if g is not None and id(g) in self.grad_values:
                _copy_into(g, self.grad_values[id(g)])


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[ModelSnapshot]:
    """Snapshot ``model`` (see module docstring), set its grads to None, restore everything in ``finally``."""
    snap = ModelSnapshot.take(model)
    try:
        for p, _ in snap.grads:
            p.grad = None
        yield snap
    finally:
        snap.restore()


# --------------------------------------------------------------------------- optimizers, schedulers, scalers
@dataclass
class OptimizerSnapshot:
    """An optimizer's state and param groups, and its parameters' values and gradients (see module docstring)."""

    optimizer: torch.optim.Optimizer
    state: dict[int, tuple[torch.Tensor, dict[str, Any]]]          # id(param) -> (param, {key: CPU copy | value})
    groups: list[dict[str, Any]]                                    # each group without its "params"
    params: ModelSnapshot
    attrs: dict[str, Any]

    @classmethod
    def take(cls, opt: torch.optim.Optimizer) -> OptimizerSnapshot:
        state = {id(p): (p, {k: _cpu(v) if isinstance(v, torch.Tensor) else copy.deepcopy(v) for k, v in s.items()})
                 for p, s in opt.state.items()}
        groups = [{k: copy.deepcopy(v) for k, v in g.items() if k != "params"} for g in opt.param_groups]
        params = ModelSnapshot.of_tensors(p for g in opt.param_groups for p in g["params"])
        attrs = {k: getattr(opt, k) for k in ("_opt_called",) if hasattr(opt, k)}
        return cls(opt, state, groups, params, attrs)

    def restore(self) -> None:
        opt = self.optimizer
        for p in list(opt.state):
            if id(p) not in self.state:
                del opt.state[p]
        for p, saved in self.state.values():
            cur = opt.state[p]
            for k in list(cur):
                if k not in saved:
                    del cur[k]
            for k, v in saved.items():
                old = cur.get(k)
                if isinstance(v, torch.Tensor) and isinstance(old, torch.Tensor) and old.shape == v.shape \
                        and old.dtype == v.dtype:
                    _copy_into(old, v)
                else:
                    cur[k] = v.to(p.device) if isinstance(v, torch.Tensor) and v.dim() > 0 else copy.deepcopy(v)
        for g, saved_group in zip(opt.param_groups, self.groups, strict=False):
            g.update(copy.deepcopy(saved_group))
        self.params.restore()
        for k, v in self.attrs.items():
            setattr(opt, k, v)


def is_scheduler(obj: Any) -> bool:
    """An LR scheduler (``torch.optim.lr_scheduler.LRScheduler`` or ``ReduceLROnPlateau``)."""
    sched = torch.optim.lr_scheduler
    return isinstance(obj, (sched.LRScheduler, sched.ReduceLROnPlateau))


def is_grad_scaler(obj: Any) -> bool:
    """A ``torch.amp.GradScaler`` (or the deprecated ``torch.cuda.amp.GradScaler``)."""
    return isinstance(obj, torch.amp.GradScaler)


@dataclass
class RngSnapshot:
    """torch's CPU (and, when initialised, CUDA) generator states, Python's and NumPy's global ones."""

    cpu: torch.Tensor
    cuda: list[torch.Tensor] | None
    python: Any
    numpy: Any

    @classmethod
    def take(cls) -> RngSnapshot:
        np = sys.modules.get("numpy")
        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() and torch.cuda.is_initialized() else None
        return cls(torch.get_rng_state(), cuda, random.getstate(), np.random.get_state() if np is not None else None)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        random.setstate(self.python)
        np = sys.modules.get("numpy")
        if np is not None and self.numpy is not None:
            np.random.set_state(self.numpy)


# --------------------------------------------------------------------------- a step's whole world
@dataclass
class StepSnapshot:
    """Everything a user's step may change (see module docstring); objects are added before they change."""

    rng: RngSnapshot = field(default_factory=RngSnapshot.take)
    models: list[ModelSnapshot] = field(default_factory=list)
    optimizers: list[OptimizerSnapshot] = field(default_factory=list)
    stateful: list[tuple[Any, dict[str, Any]]] = field(default_factory=list)    # schedulers, scalers
    _modules: set[int] = field(default_factory=set)
    _others: set[int] = field(default_factory=set)

    def add_module(self, module: nn.Module) -> None:
        """Snapshot ``module`` and every submodule not snapshotted yet (values, grads, flags)."""
        if id(module) not in self._modules:
            self.models.append(ModelSnapshot.take(module, grad_values=True, skip=self._modules))

    def add_optimizer(self, opt: torch.optim.Optimizer) -> None:
        if id(opt) not in self._others:
            self._others.add(id(opt))
            self.optimizers.append(OptimizerSnapshot.take(opt))

    def add_stateful(self, obj: Any) -> None:
        """An LR scheduler or a GradScaler: its ``state_dict()``, deep-copied."""
        if id(obj) not in self._others:
            self._others.add(id(obj))
            self.stateful.append((obj, copy.deepcopy(obj.state_dict())))

    def add(self, objects: Iterable[Any]) -> None:
        """Each module, optimizer, scheduler or scaler among ``objects`` (anything else is ignored)."""
        for obj in objects:
            if isinstance(obj, nn.Module):
                self.add_module(obj)
            elif isinstance(obj, torch.optim.Optimizer):
                self.add_optimizer(obj)
            elif is_scheduler(obj) or is_grad_scaler(obj):
                self.add_stateful(obj)

    def restore(self) -> None:
        """Optimizers first (their parameters' values), then the modules (whose snapshots are older or
        equal), then schedulers and scalers, then the generators."""
        for o in self.optimizers:
            o.restore()
        for m in self.models:
            m.restore()
        for obj, state in self.stateful:
            obj.load_state_dict(copy.deepcopy(state))
        self.rng.restore()


def hook_counts(model: nn.Module) -> dict[str, int]:
    """Number of hooks on ``model``'s modules (by kind, summed) and of torch's global module hooks."""
    from torch.nn.modules import module as mm
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
             "_state_dict_hooks", "_load_state_dict_pre_hooks")
    counts = {k: sum(len(getattr(m, k, {}) or {}) for m in model.modules()) for k in kinds}
    for g in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
              "_global_backward_pre_hooks", "_global_forward_hooks_always_called"):
        counts[g] = len(getattr(mm, g))
    counts["tensor_backward_hooks"] = sum(len(p._backward_hooks or {}) for p in model.parameters())
    return counts
