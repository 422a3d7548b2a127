"""What a user's step touches, and the names its layers are reported under.

A step is any callable. hwprof finds what it touches in two ways:

* **statically**, before it runs (:func:`reachable_objects`): the step's arguments, the cells of
  its closure, the globals its code names, the attributes of a bound method's ``self``, a
  ``functools.partial``'s function and arguments, one level into lists, tuples and dicts, and the
  same again in the functions found that way (two levels: a ``loss_fn`` global that calls a
  ``teacher`` global is followed). Each object keeps the name it was found under.
* **while it runs** (:class:`hwprof.stepping.recorder.StepRecorder`): every module whose forward
  runs (torch's global module hooks) and every optimizer that steps (torch's global optimizer
  hooks).

**Names.** Layers are reported by module path. ``models`` (a module, or a dict name -> module)
names the roots explicitly. Without it, a module that ran is named by the name it was found
under statically (``model``, ``teacher``, ``self.generator`` -> ``generator``), else by its class
(``Generator``; ``Generator_1`` for a second one). One root is reported with its own paths, as
``hwprof.profile`` reports a model ("" is the root); several roots hang under a
:class:`StepModels` container, so that ``gen.conv1`` and ``disc.fc`` live in one module tree
that the counter, the timer and the memory probes walk as they walk one model.
"""

from __future__ import annotations

import functools
import inspect
import types
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn

from hwprof.stepping.snapshot import is_grad_scaler, is_scheduler

__all__ = ["StepModels", "reachable_objects", "is_target", "name_roots", "build_root"]

_DEPTH = 2


class StepModels(nn.Module):
    """hwprof's own container of a step's root modules, by name (never called itself: its forward raises).
    Holding the user's modules as children changes nothing on them."""

    def __init__(self, roots: Mapping[str, nn.Module]) -> None:
        super().__init__()
        for name, m in roots.items():
            self.add_module(name, m)

    def forward(self, *args: Any, **kwargs: Any) -> Any:   # pragma: no cover - never called
        raise RuntimeError("StepModels only groups a step's modules; it is never called")


def is_target(obj: Any) -> bool:
    """A module, an optimizer, an LR scheduler or a GradScaler: what a step can change and hwprof restores."""
    return isinstance(obj, (nn.Module, torch.optim.Optimizer)) or is_scheduler(obj) or is_grad_scaler(obj)


def reachable_objects(step: Callable[..., Any], args: tuple[Any, ...] = (),
                      kwargs: Mapping[str, Any] | None = None) -> dict[int, tuple[str, Any]]:
    """id -> (name, object) of every target (:func:`is_target`) the step reaches statically (module docstring)."""
    found: dict[int, tuple[str, Any]] = {}
    seen_fns: set[int] = set()
    for name, value in _call_arguments(step, args, kwargs or {}):
        _visit(name, value, found, seen_fns, _DEPTH)
    _visit_function(step, found, seen_fns, _DEPTH)
    return found


def _call_arguments(step: Callable[..., Any], args: tuple[Any, ...], kwargs: Mapping[str, Any]
                    ) -> list[tuple[str, Any]]:
    """(parameter name, value) of the call ``step(*args, **kwargs)``; ``arg0``... where the signature says nothing."""
    try:
        sig = inspect.signature(step)
        bound = sig.bind_partial(*args, **kwargs)
    except (TypeError, ValueError):
        return [(f"arg{i}", v) for i, v in enumerate(args)] + list(kwargs.items())
    out: list[tuple[str, Any]] = []
    for name, value in bound.arguments.items():
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            out += [(f"{name}{i}", v) for i, v in enumerate(value)]
        elif kind is inspect.Parameter.VAR_KEYWORD:
            out += list(value.items())
        else:
            out.append((name, value))
    return out


def _visit(name: str, value: Any, found: dict[int, tuple[str, Any]], seen_fns: set[int], depth: int) -> None:
    if is_target(value):
        found.setdefault(id(value), (name, value))
        return
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value[:64]):
            if is_target(v):
                found.setdefault(id(v), (f"{name}{i}", v))
    elif isinstance(value, dict):
        for k, v in list(value.items())[:64]:
            if is_target(v):
                found.setdefault(id(v), (str(k) if isinstance(k, str) and k.isidentifier() else name, v))
    elif callable(value) and depth > 0:
        _visit_function(value, found, seen_fns, depth - 1)


def _visit_function(fn: Any, found: dict[int, tuple[str, Any]], seen_fns: set[int], depth: int) -> None:
    """The closure cells, named globals, bound ``self`` and partial arguments of ``fn``."""
    if id(fn) in seen_fns or depth < 0:
        return
    seen_fns.add(id(fn))
    if isinstance(fn, functools.partial):
        for i, a in enumerate(fn.args):
            _visit(f"arg{i}", a, found, seen_fns, depth)
        for k, v in fn.keywords.items():
            _visit(k, v, found, seen_fns, depth)
        _visit_function(fn.func, found, seen_fns, depth)
        return
    if isinstance(fn, types.MethodType):
        for k, v in _attributes(fn.__self__):
            _visit(k, v, found, seen_fns, depth)
        fn = fn.__func__
    if isinstance(fn, nn.Module) or not isinstance(fn, types.FunctionType):
        return
    code = fn.__code__
    for name, cell in zip(code.co_freevars, fn.__closure__ or (), strict=False):
        try:
            _visit(name, cell.cell_contents, found, seen_fns, depth)
        except ValueError:     # an empty cell
            continue
    for name in _names(code):
        if name in fn.__globals__:
            _visit(name, fn.__globals__[name], found, seen_fns, depth)


def _names(code: types.CodeType) -> Iterable[str]:
    """The global names a function's code (and its nested functions' code) loads."""
    yield from code.co_names
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield from _names(const)


def _attributes(obj: Any) -> list[tuple[str, Any]]:
    try:
        return list(vars(obj).items())
    except TypeError:
        return []


def name_roots(roots: Iterable[nn.Module], static: Mapping[int, tuple[str, Any]],
               models: nn.Module | Mapping[str, nn.Module] | None = None) -> dict[str, nn.Module]:
    """A name for each root module (module docstring): ``models``' names first, then the static names,
    then class names made unique with ``_1``, ``_2``..."""
    named: dict[str, nn.Module] = {}
    given = {"": models} if isinstance(models, nn.Module) else dict(models or {})
    by_id = {id(m): n for n, m in given.items()}
    for m in roots:
        name = by_id.get(id(m))
        if name is None:
            sname = static.get(id(m), (None,))[0]
            name = _unique(sname if sname and sname.isidentifier() else type(m).__name__, named)
        named[name] = m
    return named


def _unique(name: str, taken: Mapping[str, Any]) -> str:
    if name not in taken:
        return name
    i = 1
    while f"{name}_{i}" in taken:
        i += 1
    return f"{name}_{i}"


def build_root(named: Mapping[str, nn.Module]) -> nn.Module:
    """The one module tree of a step: its single root itself (its paths as ``hwprof.profile`` reports a
    model's), or a :class:`StepModels` of several."""
    if len(named) == 1:
        return next(iter(named.values()))
    return StepModels({k or "model": v for k, v in named.items()})
