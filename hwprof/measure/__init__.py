"""Measurement engine: timers (CPU clock, CUDA events), memory probes, model-state guard, the runner.

Public names (imported lazily): ``measure``, ``Measurement``, ``time_fn``, ``TimingStats``,
``LayerTimer``, ``preserved_state``, ``MemoryProbes``.
"""

from __future__ import annotations

import importlib
import sys
import types
from typing import Any

_EXPORTS = {
    "measure": "hwprof.measure.runner",
    "Measurement": "hwprof.measure.runner",
    "time_fn": "hwprof.measure.timers",
    "TimingStats": "hwprof.measure.timers",
    "Clock": "hwprof.measure.timers",
    "LayerTimer": "hwprof.measure.timers",
    "preserved_state": "hwprof.measure.state",
    "MemoryProbes": "hwprof.measure.probes",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hwprof.measure' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


class _CallableModule(types.ModuleType):
    """``hwprof.measure`` is both this package and the public function: once a submodule such as
    ``hwprof.measure.timers`` is imported, Python binds the package to ``hwprof.measure``, shadowing
    the lazily exported function. Calling the package forwards to :func:`hwprof.measure.runner.measure`.
    """

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        from hwprof.measure.runner import measure
        return measure(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
