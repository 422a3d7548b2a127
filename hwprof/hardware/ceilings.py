"""Ceilings: this machine's peak FLOP/s per dtype / math mode and its memory bandwidth, measured.

Method (units: ``flop_per_s``, ``bytes_per_s``, ``time_s``):

* compute: square GEMM ``C = A @ B`` of size n, FLOPs = 2 n^3 (n^2 outputs x n multiply-adds),
  ``flop_per_s = 2 n^3 / median_time_s``; best over a few n per mode. Modes: ``fp32`` with
  TF32 off (``torch.backends.cuda.matmul.allow_tf32 = False``), ``tf32`` (on), ``bf16``,
  ``fp16``, ``fp64``. GPU n in (4096, 8192, 16384) where memory allows; larger sizes are skipped
  when one repetition already takes over a fifth of the budget. CPU: fp32 and bf16 with the
  process's intra-op threads (n up to 4096: smaller GEMMs understate the peak that
  oneDNN convolutions reach).
* bandwidth: ``dst.copy_(src)`` of a large buffer (GPU 1 GiB, CPU 512 MiB),
  ``bytes_per_s = 2 x nbytes / median_time_s`` (bytes read + bytes written).

Results are cached as JSON in ``cache_dir`` under a file-name-safe key of device name, torch
version (and, on CPU, the thread count; ``-quick`` for quick runs), with the date; a later call
returns the cache (``source="cache"``) unless ``refresh=True``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import logging
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from hwprof.device import device_name, resolve_device
from hwprof.hardware.datasheet import lookup
from hwprof.measuring.timers import time_fn

__all__ = ["Ceilings", "measure_ceilings", "cache_path", "gemm_flop_per_s", "copy_bytes_per_s", "ceilings_dict"]

log = logging.getLogger(__name__)

MODES: dict[str, torch.dtype] = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16,
                                 "fp16": torch.float16, "fp64": torch.float64}


@dataclass
class Ceilings:
    """Measured peaks of one device. Dict-like: ``k["bf16"]`` is ``k.flop_per_s["bf16"]``;
    other keys read the fields (``k["bytes_per_s"]``, ``k["device_name"]``)."""

    device_type: str
    device_name: str
    torch_version: str
    date: str
    source: str                                   # "measured" | "datasheet" | "cache"
    flop_per_s: dict[str, float] = field(default_factory=dict)
    bytes_per_s: float | None = None
    datasheet: dict[str, Any] | None = None
    ratio_to_datasheet: dict[str, float] = field(default_factory=dict)
    details: list[dict[str, Any]] = field(default_factory=list)
    threads: int | None = None
    quick: bool = False
    notes: list[str] = field(default_factory=list)

    def __getitem__(self, key: str) -> Any:
        if key in self.flop_per_s:
            return self.flop_per_s[key]
        if key in self.__dataclass_fields__:
            return getattr(self, key)
        raise KeyError(key)

    def __contains__(self, key: object) -> bool:
        return key in self.flop_per_s or key in self.__dataclass_fields__

    def get(self, key: str, default: Any = None) -> Any:
        try:
            return self[key]
        except KeyError:
            return default

    def keys(self) -> list[str]:
        return [*self.flop_per_s, *self.__dataclass_fields__]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Ceilings:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)

    @classmethod
    def from_datasheet(cls, name: str) -> Ceilings | None:
        """Datasheet peaks as Ceilings (``source="datasheet"``), or None when the table lacks ``name``."""
        entry = lookup(name)
        if entry is None:
            return None
        flops = {k: float(entry[k]) for k in MODES if entry.get(k)}
        return cls("cuda", name, torch.__version__, _today(), "datasheet", flops, entry["bytes_per_s"], entry)


def _field(obj: Any, key: str, default: Any = None) -> Any:
    if isinstance(obj, Mapping):
        return obj.get(key, default)
    return getattr(obj, key, default)


def ceilings_dict(ceilings: Any) -> dict[str, Any]:
    """One plain dict from a :class:`Ceilings`, its ``to_dict()`` or any object or mapping with
    the same fields: ``flop_per_s`` (dict, values float or None), ``bytes_per_s`` (float or
    None), ``device_name``, ``datasheet`` (dict or None), ``source``, plus every other scalar
    field it has (for manifests). What the plots and the depthwise study read."""
    bw = _field(ceilings, "bytes_per_s")
    sheet = _field(ceilings, "datasheet")
    out: dict[str, Any] = {
        "flop_per_s": {str(k): (float(v) if v is not None else None)
                       for k, v in dict(_field(ceilings, "flop_per_s") or {}).items()},
        "bytes_per_s": float(bw) if bw is not None else None,
        "device_name": _field(ceilings, "device_name") or _field(ceilings, "device") or "",
        "datasheet": dict(sheet) if isinstance(sheet, Mapping) else sheet,
        "source": _field(ceilings, "source", "measured"),
    }
    extra: Iterable[tuple[str, Any]] = ()
    if isinstance(ceilings, Mapping):
        extra = ceilings.items()
    elif dataclasses.is_dataclass(ceilings) and not isinstance(ceilings, type):
        extra = dataclasses.asdict(ceilings).items()
    for k, v in extra:
        if k not in out and isinstance(v, (str, int, float, bool, type(None))):
            out[k] = v
    return out


def _today() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")


def cache_path(cache_dir: str | Path, name: str, device_type: str, quick: bool) -> Path:
    """``<cache_dir>/<device name>__torch-<version>[__<n>threads][-quick].json``, unsafe characters -> '_'."""
    key = f"{name}__torch-{torch.__version__}"
    if device_type == "cpu":
        key += f"__{torch.get_num_threads()}threads"
    if quick:
        key += "-quick"
    return Path(cache_dir) / (re.sub(r"[^A-Za-z0-9._+-]+", "_", key).strip("_") + ".json")


# --------------------------------------------------------------------------- probes
@contextlib.contextmanager
def _tf32(enabled: bool) -> Iterator[None]:
    """fp32 matmuls in TF32 (or not) for the block, through whichever API is in use: the legacy
    ``allow_tf32`` flag, or torch >= 2.9's ``fp32_precision`` once that has been set (mixing the
    two makes later reads of the legacy flag raise)."""
    matmul = torch.backends.cuda.matmul
    try:
        prev = matmul.allow_tf32
    except RuntimeError:
        prev_precision = matmul.fp32_precision
        matmul.fp32_precision = "tf32" if enabled else "ieee"
        try:
            yield
        finally:
            matmul.fp32_precision = prev_precision
        return
    matmul.allow_tf32 = enabled
    try:
        yield
    finally:
        matmul.allow_tf32 = prev


def _bench(fn: Any, dev: torch.device, budget_s: float) -> Any:
    """time_fn with a warm-up sized to ~0.1 s of work (GPU clocks ramp), at least 5 timed reps."""
    fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    one = time_fn(fn, device=dev, warmup=0, min_reps=1, max_reps=1, budget_s=0)
    warm = int(min(100, max(2, 0.1 / max(one.median_s, 1e-6))))
    return time_fn(fn, device=dev, warmup=warm, min_reps=5, max_reps=200, budget_s=budget_s, target_iqr=0.01)


def gemm_flop_per_s(mode: str, n: int, dev: torch.device, budget_s: float = 0.3) -> dict[str, Any]:
    """Time an n x n x n matmul in ``mode``; ``flop_per_s = 2 n^3 / median_s``."""
    dtype = MODES[mode]
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    c = torch.empty(n, n, device=dev, dtype=dtype)
    with _tf32(mode == "tf32") if dev.type == "cuda" else contextlib.nullcontext():
        stats = _bench(lambda: torch.mm(a, b, out=c), dev, budget_s)
    flop = 2 * n**3
    return {"kind": "gemm", "mode": mode, "n": n, "flop": flop, "time_s": stats.median_s, "reps": stats.reps,
            "iqr_over_median": stats.iqr_over_median, "flop_per_s": flop / stats.median_s}


def copy_bytes_per_s(nbytes: int, dev: torch.device, budget_s: float = 0.3) -> dict[str, Any]:
    """Time ``dst.copy_(src)`` of ``nbytes``; ``bytes_per_s = 2 x nbytes / median_s`` (read + write)."""
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    stats = _bench(lambda: dst.copy_(src), dev, budget_s)
    moved = 2 * src.nbytes
    return {"kind": "copy", "mode": "copy", "n": src.nbytes, "bytes": moved, "time_s": stats.median_s,
            "reps": stats.reps, "iqr_over_median": stats.iqr_over_median, "bytes_per_s": moved / stats.median_s}


def _plan(dev: torch.device, quick: bool) -> tuple[dict[str, tuple[int, ...]], tuple[int, ...], float]:
    """(GEMM sizes per mode, copy sizes in bytes, budget per probe in seconds)."""
    if dev.type == "cuda":
        sizes = (1024, 2048) if quick else (4096, 8192, 16384)
        free, _total = torch.cuda.mem_get_info(dev)
        modes = {m: tuple(n for n in sizes if 3 * n * n * MODES[m].itemsize < 0.5 * free) for m in MODES}
        copies = (64 * 2**20,) if quick else (256 * 2**20, 2**30)
        return modes, tuple(s for s in copies if 2 * s < 0.5 * free), 0.05 if quick else 0.3
    sizes = (256, 512) if quick else (1024, 2048, 4096)   # 2 cores: 4096 reaches ~5% above 2048
    copies = (64 * 2**20,) if quick else (512 * 2**20,)
    return {"fp32": sizes, "bf16": sizes}, copies, 0.05 if quick else 0.3


def _measure(dev: torch.device, quick: bool) -> tuple[dict[str, float], float | None, list[dict[str, Any]], list[str]]:
    gemm_sizes, copy_sizes, budget = _plan(dev, quick)
    flops: dict[str, float] = {}
    details: list[dict[str, Any]] = []
    notes: list[str] = []
    for mode, sizes in gemm_sizes.items():
        for n in sizes:
            try:
                r = gemm_flop_per_s(mode, n, dev, budget)
            except (RuntimeError, TypeError) as e:   # e.g. a dtype the device's BLAS lacks
                notes.append(f"{mode} GEMM n={n} failed: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}")
                break
            details.append(r)
            flops[mode] = max(flops.get(mode, 0.0), r["flop_per_s"])
            log.info("%s GEMM n=%d: %.3g FLOP/s", mode, n, r["flop_per_s"])
            if r["time_s"] > budget / 5:
                break   # larger sizes would blow the budget
    bw: float | None = None
    for nbytes in copy_sizes:
        r = copy_bytes_per_s(nbytes, dev, budget)
        details.append(r)
        bw = max(bw or 0.0, r["bytes_per_s"])
    return flops, bw, details, notes


def measure_ceilings(device: str | torch.device = "auto", refresh: bool = False,
                     cache_dir: str | Path = "results/ceilings", quick: bool = False) -> Ceilings:
    """Peak FLOP/s per mode and copy bandwidth of ``device``, measured once and cached (see module docstring).

    ``quick=True`` uses small sizes (a check, not a ceiling: well under 2 s on a 2-core CPU).
    """
    dev = resolve_device(device)
    name = device_name(dev)
    path = cache_path(cache_dir, name, dev.type, quick)
    if path.exists() and not refresh:
        try:
            cached = Ceilings.from_dict(json.loads(path.read_text()))
            cached.source = "cache"
            return cached
        except (ValueError, TypeError) as e:
            log.warning("ignoring unreadable ceilings cache %s (%s); measuring", path, e)
    flops, bw, details, notes = _measure(dev, quick)
    sheet = lookup(name) if dev.type == "cuda" else None
    ratio = {}
    if sheet is not None:
        ratio = {k: v / sheet[k] for k, v in flops.items() if sheet.get(k)}
        if bw is not None and sheet.get("bytes_per_s"):
            ratio["bytes_per_s"] = bw / sheet["bytes_per_s"]
    if quick:
        notes.append("quick=True: small sizes, a smoke check rather than a ceiling")
    result = Ceilings(dev.type, name, torch.__version__, _today(), "measured", flops, bw, sheet, ratio, details,
                      threads=torch.get_num_threads(), quick=quick, notes=notes)
    from hwprof.files import write_json_atomic
    write_json_atomic(path, result.to_dict())
    return result
