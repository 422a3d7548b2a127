"""Which module of a model is running: one stack of module calls kept by global forward hooks.

The counter (:mod:`hwprof.counting.tracking`), the memory replay (:mod:`hwprof.memory.simulate`)
and ``measure``'s first forward (:mod:`hwprof.measuring.runner`) subclass :class:`ModuleCalls`
and add their own bookkeeping in :meth:`ModuleCalls.on_enter` / :meth:`ModuleCalls.on_exit`.

The hooks are global (``register_module_forward_pre_hook`` / ``register_module_forward_hook``),
filtered to one model's modules by identity, not per-module ones: a module's own hook dicts
stay empty, so fused fast paths that check ``module._forward_hooks`` (e.g.
``nn.TransformerEncoderLayer`` in inference) run as they would without hwprof.
``LayerTimer`` (:mod:`hwprof.measuring.timers`) keeps its own hooks: its markers are timed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._pytree import tree_leaves

__all__ = ["Frame", "ModuleCalls"]

_C = TypeVar("_C", bound="ModuleCalls")


@dataclass(slots=True)
class Frame:
    """One running call of a module: its path, the module, the call's index (in call order, from 0)
    and its input tensors' shapes; ``data`` is the subclass's own."""

    path: str
    module: nn.Module
    call: int
    input_shapes: list[tuple[int, ...]]
    data: Any = None


class ModuleCalls:
    """Global forward pre/post hooks over ``model``'s modules keeping a stack of running calls
    (:class:`Frame`; context manager, the hooks are removed on exit).

    A module's path is its first name in ``model.named_modules()`` ("" = the root); other modules'
    calls are ignored. ``current`` is the innermost running module's path ("" outside the model).
    A forward that raises skips the post-hooks, so after an exception :meth:`innermost_active` is
    the innermost module that was running; ``always_call`` runs them anyway (the exception in
    flight), which keeps the stack exact and leaves it empty after the exception.
    ``unwind``: at a post-hook whose frame is not on top (frames left above it by an exception
    caught inside a forward), True drops those frames and ends the call, False ignores the call.
    """

    unwind: bool = True

    def __init__(self, model: nn.Module, *, always_call: bool = False) -> None:
        self.model = model
        self.paths: dict[int, str] = {}
        for path, mod in model.named_modules():
            self.paths.setdefault(id(mod), path)
        self.always_call = always_call
        self.stack: list[Frame] = []
        self.calls = 0
        self._handles: list[Any] = []

    def __enter__(self: _C) -> _C:
        pre = register_module_forward_pre_hook(self._pre)
        try:
            post = register_module_forward_hook(self._post, always_call=self.always_call)
        except BaseException:
            pre.remove()
            raise
        self._handles = [pre, post]
        return self

    def __exit__(self, *exc: object) -> None:
        handles, self._handles = self._handles, []
        for h in handles:
            h.remove()

    @property
    def current(self) -> str:
        return self.stack[-1].path if self.stack else ""

    def innermost_active(self) -> Frame | None:
        """After an exception: the innermost module that was running (its post-hook never ran)."""
        return self.stack[-1] if self.stack else None

    # ------------------------------------------------------------------ for subclasses
    def on_enter(self, frame: Frame, inputs: list[torch.Tensor]) -> None:
        """A call of one of the model's modules starts (``inputs``: its input tensors); ``frame`` is
        pushed after this returns."""

    def on_exit(self, frame: Frame, args: tuple[Any, ...], output: Any) -> None:
        """A call ends (``frame`` already popped); with ``always_call`` also when it raised
        (``sys.exc_info()`` then holds the exception, and ``output`` is None if the forward raised)."""

    # ------------------------------------------------------------------ hooks
    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        path = self.paths.get(id(module))
        if path is None:
            return
        ins = [x for x in tree_leaves(args) if isinstance(x, torch.Tensor)]
        frame = Frame(path, module, self.calls, [tuple(t.shape) for t in ins])
        self.calls += 1
        self.on_enter(frame, ins)
        self.stack.append(frame)

    def _post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        path = self.paths.get(id(module))
        if path is None:
            return
        stack = self.stack
        for i in range(len(stack) - 1, -1, -1):
            if stack[i].path == path:
                frame = stack[i]
                del stack[i:]
                self.on_exit(frame, args, output)
                return
            if not self.unwind:
                return
