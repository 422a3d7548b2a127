"""This machine: device resolution, datasheet peaks, measured ceilings (peak FLOP/s per dtype, bandwidth).

Public names (imported lazily): ``resolve_device``, ``lookup``, ``DATASHEET``, ``measure_ceilings``, ``Ceilings``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "resolve_device": "hwprof.device",
    "describe_device": "hwprof.device",
    "lookup": "hwprof.hardware.datasheet",
    "DATASHEET": "hwprof.hardware.datasheet",
    "measure_ceilings": "hwprof.hardware.ceilings",
    "Ceilings": "hwprof.hardware.ceilings",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'hwprof.hardware' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
