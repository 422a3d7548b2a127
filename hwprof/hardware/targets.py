"""The ceilings a prediction runs against (``hwprof predict --on``): a measured ceilings file, a
named device from the datasheet table, or this machine's measured (cached) ceilings.

A named device's datasheet peaks are derated by measured efficiencies where they are known:
``ratio_to_datasheet`` (measured / datasheet, per roof and for the bandwidth) and
``op_overhead_s`` of ceilings measured on a device of the same datasheet entry, taken from
``derate_from`` (a ceilings JSON) when given, else from the newest such file in the ceilings
cache folder (what ``hwprof ceilings`` wrote on that device, copied over). Without one the bare
datasheet figures are used, and the record's notes say so.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable
from pathlib import Path

from hwprof.errors import HwprofError
from hwprof.hardware.cache import ceilings_problem
from hwprof.hardware.ceilings import Ceilings, default_cache_dir, measure_ceilings
from hwprof.hardware.datasheet import DATASHEET, resolve

__all__ = ["target_ceilings", "measured_efficiency", "read_ceilings"]

log = logging.getLogger(__name__)


def read_ceilings(path: str | Path) -> Ceilings:
    """A ceilings JSON (``hwprof ceilings --format json``, the cache, or a saved profile's
    ``ceilings.json``; a saved profile folder is read through its ``ceilings.json``), validated
    (:func:`hwprof.hardware.cache.ceilings_problem`); anything else is one-line :class:`HwprofError`."""
    p = Path(path)
    if p.is_dir():
        p = p / "ceilings.json"
    try:
        d = json.loads(p.read_text())
        problem = ceilings_problem(d)
        if problem is None:
            return Ceilings.from_dict(d)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        problem = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    raise HwprofError(f"{path}: not a readable ceilings file ({problem})")


def _entry_key(k: Ceilings) -> str | None:
    entry = k.datasheet or resolve(k.device_name)
    return str(entry.get("key")) if entry else None


def measured_efficiency(key: str, files: Iterable[Path]) -> tuple[dict[str, float], float | None, str] | None:
    """(measured / datasheet ratios, op overhead, where from) of the newest measured, unflagged
    ceilings among ``files`` whose device is the datasheet entry ``key``; None when none is."""
    found = []
    for f in files:
        try:
            k = read_ceilings(f)
        except HwprofError:
            continue
        if k.source != "datasheet" and not k.flagged and k.ratio_to_datasheet and _entry_key(k) == key:
            found.append((k.date, str(f), k))
    if not found:
        return None
    date, where, k = max(found, key=lambda t: (t[0], t[1]))
    return dict(k.ratio_to_datasheet), k.op_overhead_s, f"ceilings of {k.device_name} measured {date}, {where}"


def target_ceilings(on: str | None, *, derate_from: str | None = None, cache_dir: str | Path | None = None,
                    device: str = "auto") -> Ceilings:
    """The ceilings ``on`` names: None -> this machine's (:func:`measure_ceilings` on ``device``,
    from the cache when there); an existing file or folder -> :func:`read_ceilings`; else a device
    of the datasheet table (:func:`hwprof.hardware.datasheet.resolve`), derated as the module
    docstring says. Anything else is a one-line :class:`~hwprof.errors.HwprofError`."""
    if on is None:
        return measure_ceilings(device=device, cache_dir=cache_dir)
    if Path(on).exists():
        return read_ceilings(on)
    entry = resolve(on)
    if entry is None:
        raise HwprofError(f"--on {on!r} is neither a ceilings file nor a device of the datasheet table "
                          f"({', '.join(DATASHEET)})")
    files = [Path(derate_from)] if derate_from else sorted((Path(cache_dir) if cache_dir else default_cache_dir()).glob("*.json"))
    if derate_from and not Path(derate_from).is_file():
        raise HwprofError(f"--derate-from {derate_from}: no such file")
    known = measured_efficiency(str(entry["key"]), files)
    if derate_from and known is None:
        raise HwprofError(f"--derate-from {derate_from}: not measured, unflagged ceilings of a {entry['key']}")
    eff, overhead, where = known if known else ({}, None, "")
    k = Ceilings.from_datasheet(on, eff, where, overhead)
    if k is None:   # resolve() found the entry, so from_datasheet does too
        raise HwprofError(f"--on {on!r}: no datasheet entry")
    return k
