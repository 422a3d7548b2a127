"""The user's model failing inside a command, said in one line that names the module and what to do
from the command line (``main`` prints it and exits with 2; ``HWPROF_TRACEBACK=1`` shows the
traceback instead).

Recognised (:func:`explain`): a training run whose output holds no floating tensor to take a loss
of (the model returned None, an int or a LongTensor); a custom op without an autograd formula
under ``--backward`` / ``--mode train``; an op whose result depends on tensor values (``.item()``,
``nonzero``, boolean masks) on the fake tensors counting and the memory replay run on; and any
exception raised inside one of the model's modules, found by walking the traceback to the
innermost ``nn.Module`` call with no hwprof frame below it (a model that fails on a later call
than the first, e.g. stateful code). Anything else is not the model's failure: its traceback
stays (a bug of hwprof's).
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import re
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

__all__ = ["explain", "remember", "watch_models", "TRACEBACK_ENV"]

TRACEBACK_ENV = "HWPROF_TRACEBACK"
"""Set it (``HWPROF_TRACEBACK=1 hwprof ...``) to see the traceback of a model failure instead of its line."""

_MODELS: contextvars.ContextVar[list[tuple[str, Any]] | None] = contextvars.ContextVar("hwprof_models", default=None)
_HWPROF = str(Path(__file__).resolve().parents[1]) + os.sep
_MODULE_PY = os.sep + os.path.join("torch", "nn", "modules", "module.py")


@contextlib.contextmanager
def watch_models() -> Iterator[None]:
    """Remember the models :func:`remember` is given within the block (one command)."""
    token = _MODELS.set([])
    try:
        yield
    finally:
        _MODELS.reset(token)


def remember(name: str, model: Any) -> None:
    """``model`` was built for ``name`` (``build_model``): its module paths name a failing module."""
    models = _MODELS.get()
    if models is not None:
        models.append((name, model))


def _module_name(module: Any) -> str:
    """``'features.3' (Conv2d)`` when ``module`` is in a remembered model, else ``(Conv2d)``."""
    kind = type(module).__name__
    for _name, model in _MODELS.get() or []:
        with contextlib.suppress(Exception):
            for path, m in model.named_modules():
                if m is module:
                    return f"module '{path or '<root>'}' ({kind})"
    return f"a module ({kind})"


def _root() -> str:
    models = _MODELS.get() or []
    if not models:
        return "the model"
    name, model = models[-1]
    return f"module '<root>' ({type(model).__name__}) of {name}"


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return f"{type(e).__name__}: {text.splitlines()[0]}" if text else type(e).__name__


def _data_dependent(e: BaseException) -> str | None:
    """What value-dependent op ``e`` (or its cause) is about, or None."""
    for cur in (e, getattr(e, "cause", None), e.__cause__):
        if cur is None:
            continue
        name = type(cur).__name__
        text = str(cur)
        if name == "DataDependentOutputException" or "_local_scalar_dense" in text:
            return ".item(), .tolist() or a tensor used as a Python bool or number (aten._local_scalar_dense)"
        if name == "DynamicOutputShapeException" or re.search(r"aten\.(nonzero|masked_select|unique)", text):
            op = re.search(r"aten\.\w+", text)
            return (f"an op whose output size depends on the values ({op.group(0) if op else 'nonzero'}: nonzero, "
                    "boolean masks, masked_select, unique)")
    return None


def _inside_module(tb: TracebackType | None) -> Any:
    """The innermost ``nn.Module`` whose call the exception came out of with no hwprof frame deeper
    (so not one of hwprof's hooks or its dispatch mode), or None."""
    frames = []
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    for i in range(len(frames) - 1, -1, -1):
        f = frames[i]
        if f.f_code.co_filename.endswith(_MODULE_PY) and f.f_code.co_name == "_call_impl":
            deeper = frames[i + 1:]
            if any(g.f_code.co_filename.startswith(_HWPROF) for g in deeper):
                return None
            return f.f_locals.get("self")
    return None


def explain(e: BaseException, command: str) -> str | None:
    """The one line for ``e`` when it is the model's failure (module docstring), else None."""
    text = str(e)
    hint = f"set {TRACEBACK_ENV}=1 for the traceback"
    if "no floating tensor that requires grad" in text:
        return (f"{_root()}: in train mode its output holds no floating-point tensor to take a loss of (it returned "
                "None, a number or an integer tensor), so there is no backward: use --mode inference, or make its "
                "forward return a floating tensor")
    m = re.search(r"backward through (\S+) but no autograd formula", text)
    if m:
        return (f"{_root()}: the custom op {m.group(1)} has no autograd formula, so its backward cannot run: "
                f"{command} the forward only (--mode inference, without --backward), or register one with "
                "torch.library.register_autograd")
    what = _data_dependent(e)
    if what:
        where = (f"module '{getattr(e, 'module_path', '') or '<root>'}' ({e.module_type})"
                 if hasattr(e, "module_type") else _root())
        return (f"{where} calls {what}: hwprof {command} runs the model on fake tensors, which have shapes but no "
                "values; `hwprof measure` runs it for real (times and memory, no counts)")
    module = _inside_module(e.__traceback__)
    if module is not None:
        return (f"{_module_name(module)} failed while hwprof {command} ran it: {_first_line(e)} (hwprof calls the "
                f"model several times: warm-up, timed repetitions, the per-layer and per-op passes); {hint}")
    return None
