"""hwprof: analytical counts joined with measured time and memory, on a measured roofline.

Public API: ``count``, ``measure``, ``measure_ceilings``, ``profile`` (measure + count +
ceilings + join), ``profile_step`` (the same for any step the user runs: a training step of their
own), ``capture`` (a context manager that profiles chosen steps of the user's own loop), ``join`` (a pure function of a count, a measurement and ceilings),
``load_profile`` (a saved profile folder rebuilt with no model), ``estimate_memory``,
``measure_distributed`` / ``predict_distributed`` (DDP / FSDP2 under torchrun, and per-rank
predictions for any world size), and the records ``Profile``, ``Ceilings``. Imported lazily so that ``import hwprof`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "count": "hwprof.counting.counter:count",
    "measure": "hwprof.measuring.runner:measure",
    "measure_ceilings": "hwprof.hardware.ceilings:measure_ceilings",
    "profile": "hwprof.profiler:profile",
    "profile_step": "hwprof.profiler:profile_step",
    "capture": "hwprof.capturing:capture",
    "count_step": "hwprof.counting.counter:count_step",
    "measure_step": "hwprof.measuring.runner:measure_step",
    "prepare_step": "hwprof.stepping.unit:prepare_step",
    "join": "hwprof.joining:join",
    "load_profile": "hwprof.profile_folder:load_profile",
    "Profile": "hwprof.joining:Profile",
    "Ceilings": "hwprof.hardware.ceilings:Ceilings",
    "estimate_memory": "hwprof.memory.estimate:estimate_memory",
    "measure_distributed": "hwprof.distributed.measure:measure",
    "predict_distributed": "hwprof.distributed.predict:predict",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    target = _EXPORTS.get(name)
    if target is None:
        raise AttributeError(f"module 'hwprof' has no attribute {name!r}")
    module, attr = target.split(":")
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value
    return value
