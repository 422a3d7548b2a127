"""Watch a step run once: which modules ran (and which of them were roots), which optimizers stepped.

:class:`StepRecorder` installs torch's *global* hooks only (``register_module_forward_pre_hook``
/ ``register_module_forward_hook`` and ``register_optimizer_step_pre_hook``), so nothing is written
onto the user's modules or optimizers, and removes them on exit. A module whose forward starts
while no other module is running is a *root*. Each root is handed to ``snapshot`` (a
:class:`~hwprof.stepping.snapshot.StepSnapshot`) in its pre-hook, before its forward changes
anything (a train-mode BatchNorm moves its running statistics), and each optimizer in its step
pre-hook, before the step moves the parameters; an LR scheduler attached to that optimizer (found
among the optimizer's referrers: the scheduler holds it) is snapshotted with it.
"""

from __future__ import annotations

import gc
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.optim.optimizer import register_optimizer_step_pre_hook

from hwprof.stepping.snapshot import StepSnapshot, is_scheduler

__all__ = ["StepRecorder", "schedulers_of"]


@dataclass
class StepRecorder:
    """Context manager: the roots, modules and optimizers a step used while inside (see module docstring)."""

    snapshot: StepSnapshot | None = None
    roots: list[nn.Module] = field(default_factory=list)
    modules: dict[int, nn.Module] = field(default_factory=dict)
    optimizers: list[torch.optim.Optimizer] = field(default_factory=list)
    schedulers: list[Any] = field(default_factory=list)
    _depth: int = 0
    _handles: list[Any] = field(default_factory=list)

    def __enter__(self) -> StepRecorder:
        try:
            self._handles.append(register_module_forward_pre_hook(self._pre))
            self._handles.append(register_module_forward_hook(self._post, always_call=True))
            self._handles.append(register_optimizer_step_pre_hook(self._opt))
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        handles, self._handles = self._handles, []
        for h in handles:
            h.remove()

    def _pre(self, module: nn.Module, args: Any) -> None:
        if self._depth == 0 and id(module) not in {id(r) for r in self.roots}:
            self.roots.append(module)
            if self.snapshot is not None:
                self.snapshot.add_module(module)
        self._depth += 1
        self.modules.setdefault(id(module), module)

    def _post(self, module: nn.Module, args: Any, output: Any) -> None:
        self._depth = max(0, self._depth - 1)

    def _opt(self, opt: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if any(o is opt for o in self.optimizers):
            return
        self.optimizers.append(opt)
        found = schedulers_of(opt)
        self.schedulers += found
        if self.snapshot is not None:
            self.snapshot.add_optimizer(opt)
            for s in found:
                self.snapshot.add_stateful(s)

    def outermost(self) -> list[nn.Module]:
        """The roots that are not submodules of another root (a module called on its own first and
        inside its parent later belongs to the parent)."""
        inner = {id(m) for r in self.roots for m in r.modules() if m is not r}
        return [r for r in self.roots if id(r) not in inner]


def schedulers_of(opt: torch.optim.Optimizer) -> list[Any]:
    """The LR schedulers attached to ``opt``: objects that hold it as ``.optimizer``, found among its
    referrers (the scheduler itself, or its instance ``__dict__``), without touching either."""
    out: list[Any] = []
    for r in gc.get_referrers(opt):
        candidates = gc.get_referrers(r) if isinstance(r, dict) else [r]
        for c in candidates:
            if is_scheduler(c) and getattr(c, "optimizer", None) is opt and not any(c is o for o in out):
                out.append(c)
    return out
