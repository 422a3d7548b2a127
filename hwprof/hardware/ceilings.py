"""Ceilings: this machine's peak FLOP/s per dtype / math mode and its memory bandwidth, measured.

Method (units: ``flop_per_s``, ``bytes_per_s``, ``time_s``):

* compute: square GEMM ``C = A @ B`` of size n, FLOPs = 2 n^3 (n^2 outputs x n multiply-adds),
  ``flop_per_s = 2 n^3 / median_time_s`` of one trial. Modes: ``fp32`` with TF32 off
  (``torch.backends.cuda.matmul.allow_tf32 = False``), ``tf32`` (on), ``bf16``, ``fp16``, ``fp64``.
  GPU n in (4096, 8192, 16384) where memory allows; CPU: fp32 and bf16 with the process's
  intra-op threads, n up to 4096 (smaller GEMMs understate the peak that oneDNN convolutions reach).
  A size is dropped, with every larger one, when one repetition of it takes over a fifth of the
  trial budget in the first round.
* bandwidth: ``dst.copy_(src)`` of a large buffer (GPU the faster of 256 MiB and 1 GiB, CPU 512 MiB),
  ``bytes_per_s = 2 x nbytes / median_time_s`` (bytes read + bytes written).
* memory levels: the same copy over a sweep of working sets ``W = 2 x nbytes`` (CPU 16 KiB to
  256 MiB, GPU 1 MiB to 1 GiB, doubling), and the per-op overhead ``op_overhead_s``: the median
  time of a one-element copy (an empty op: dispatch on a CPU, a kernel launch on a GPU). With the
  cache sizes the system reports (:mod:`hwprof.hardware.caches`) they give the bandwidth and
  effective capacity of each level: CPU L1, L2, LLC, DRAM; GPU L2, HBM
  (:mod:`hwprof.hardware.levels`). Main memory's bandwidth is the large copy's.

A ceiling is a maximum: load on the machine only ever slows a trial down. So every ceiling is
the best of repeated, interleaved trials: ``rounds`` rounds, each running every (mode, size) once
in the same order (:func:`run_trials`), and the ceiling of a mode is its fastest trial
(:func:`best_of_trials`). Its ``spread`` is ``(best round - second-best round) / best round``, a
round's rate being its fastest size. Two rounds that agree say the maximum is reproducible; a
spread above :data:`AGREEMENT_BOUND` (10%) says the machine was busy while the trials ran: that
ceiling is ``flagged``, a note says so, and the result is **not cached**. A cache level's
bandwidth is judged the same way (spread key ``"<level>_bytes_per_s"``: its bandwidth measured in
each round alone), but a level that fails is **left out** rather than blocking the cache: its
bandwidth is dropped (the level keeps its capacity; a layer there is judged against the next
larger level's bandwidth, :func:`~hwprof.hardware.levels.level_of`) with a note, and the compute
and main-memory roofs are cached (small working sets are timed in microseconds, and on a shared
VM their rounds disagree more often than the roofs' do). A sweep point is the best of its rounds;
the op overhead the lowest.

Results are cached as JSON per machine (device name and host), torch build, thread count (and
``-quick`` for quick runs) in a user cache folder: ``cache_dir`` when given, else
``$HWPROF_CACHE_DIR/ceilings``, else the platform's user cache folder (``platformdirs``:
``~/.cache/hwprof/ceilings`` on Linux); never the current folder. A later call returns the cache
(``source="cache"``) unless ``refresh=True``; a cached file without memory levels (written by
an earlier hwprof) is measured again. The machine's load is recorded beside every measurement
(``Ceilings.load``: load average, other processes' CPU time, :mod:`hwprof.hardware.load`); a CPU
measurement during which other processes competed for its cores is **not cached** either: a
steady load slows every round alike, which the rounds' agreement cannot see. The cache file is
validated when read and measured and written under a lock, and an unusable cache folder only
means not caching (:mod:`hwprof.hardware.cache`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import logging
import math
import os
import re
import socket
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch

from hwprof.device import device_name, resolve_device
from hwprof.hardware.cache import CacheFile, now
from hwprof.hardware.caches import CacheLevel, system_caches
from hwprof.hardware.datasheet import HBM_PARTS, lookup, resolve
from hwprof.hardware.levels import (
    MemoryLevel,
    SweepPoint,
    level_of,
    level_spreads,
    memory_levels,
    sweep_points,
)
from hwprof.hardware.load import LoadMeter, competed, load_note, system_load
from hwprof.measuring.timers import Clock, time_fn

__all__ = ["Ceilings", "Trial", "TrialResult", "TrialFn", "measure_ceilings", "cache_path", "default_cache_dir",
           "untrusted_levels_dropped",
           "run_trials", "best_of_trials", "gemm_flop_per_s", "copy_bytes_per_s", "AGREEMENT_BOUND", "DEFAULT_ROUNDS",
           "refresh_command", "SWEEP", "OVERHEAD", "MemoryLevel", "SweepPoint", "main_memory_name"]

log = logging.getLogger(__name__)

MODES: dict[str, torch.dtype] = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16,
                                 "fp16": torch.float16, "fp64": torch.float64}
COPY = "copy"
"""The trial mode of the bandwidth probe; its ceiling is ``Ceilings.bytes_per_s`` (spread key ``"bytes_per_s"``)."""
SWEEP = "sweep"
"""The trial mode of the working-set sweep: ``size`` is the working set W (a copy of W / 2 bytes)."""
OVERHEAD = "overhead"
"""The trial mode of the per-op overhead: a one-element copy, ``rate_per_s = 1 / time_s`` (ops/s)."""

AGREEMENT_BOUND = 0.10
"""Largest accepted ``(best round - second-best round) / best round`` of a ceiling; above it the
ceiling is flagged and not cached."""

DEFAULT_ROUNDS = 3

Source = Literal["measured", "datasheet", "cache"]


class TrialResult(NamedTuple):
    """What one trial measured: the rate (FLOP/s for a GEMM mode, bytes/s for ``"copy"``) and
    the median time of one repetition."""

    rate_per_s: float
    time_s: float
    reps: int = 1
    iqr_over_median: float = math.nan


TrialFn = Callable[[str, int], TrialResult]
"""``trial(mode, size) -> TrialResult``: one timed trial of a GEMM of size n (``mode`` in
:data:`MODES`) or of a copy of ``size`` bytes (``mode == "copy"``)."""


@dataclass(frozen=True)
class Trial:
    """One trial of one round (see :func:`run_trials`)."""

    round: int
    mode: str
    size: int
    rate_per_s: float
    time_s: float
    reps: int = 1
    iqr_over_median: float = math.nan


@dataclass
class Ceilings:
    """Measured peaks of one device: ``flop_per_s`` per compute roof ("fp32", "tf32", "bf16",
    "fp16", "fp64"), ``bytes_per_s`` (copy bandwidth), with the trials they came from, their
    ``spread`` (per roof, ``"bytes_per_s"`` for the bandwidth) and the roofs ``flagged`` because
    their rounds disagreed beyond :data:`AGREEMENT_BOUND`. Ask for a roof with :meth:`roof`.

    The memory hierarchy: ``levels`` (caches ascending, then main memory; see
    :mod:`hwprof.hardware.levels`), the ``sweep`` they came from and ``op_overhead_s``, the time of
    an empty op. Ask which level a working set runs from with :meth:`level_for`. ``load``: the
    machine's load during the measurement (:mod:`hwprof.hardware.load`)."""

    device_type: str
    device_name: str
    torch_version: str
    date: str
    source: Source
    flop_per_s: dict[str, float] = field(default_factory=dict)
    bytes_per_s: float | None = None
    datasheet: dict[str, Any] | None = None
    ratio_to_datasheet: dict[str, float] = field(default_factory=dict)
    trials: tuple[Trial, ...] = ()
    spread: dict[str, float] = field(default_factory=dict)
    flagged: tuple[str, ...] = ()
    threads: int | None = None
    host: str = ""
    quick: bool = False
    notes: list[str] = field(default_factory=list)
    cache_file: str | None = None
    levels: tuple[MemoryLevel, ...] = ()
    sweep: tuple[SweepPoint, ...] = ()
    op_overhead_s: float | None = None
    load: dict[str, Any] = field(default_factory=dict)
    """How busy the machine was while these ceilings were measured (:func:`hwprof.hardware.load.load_record`)."""

    def roof(self, key: str) -> float:
        """The compute roof ``key`` in FLOP/s; ``KeyError`` naming the roofs there are otherwise."""
        if key not in self.flop_per_s:
            raise KeyError(f"no {key!r} roof in the ceilings of {self.device_name} (roofs: {sorted(self.flop_per_s)})")
        return float(self.flop_per_s[key])

    def datasheet_roof(self, key: str) -> float | None:
        """The datasheet's figure for ``key`` (a compute roof, or ``"bytes_per_s"``), or None."""
        v = (self.datasheet or {}).get(key)
        return float(v) if isinstance(v, (int, float)) and v > 0 else None

    def memory_levels(self) -> tuple[MemoryLevel, ...]:
        """``levels``; for ceilings without them (an earlier hwprof, or a bare record), main memory
        alone at ``bytes_per_s`` (no level when that is unknown too)."""
        if self.levels:
            return self.levels
        if self.bytes_per_s is None:
            return ()
        return (MemoryLevel(main_memory_name(self.device_type, self.device_name, self.datasheet), None,
                            float(self.bytes_per_s), None, self.source),)

    def level_for(self, working_set_bytes: float) -> tuple[str, float]:
        """(level name, bytes/s) of the smallest level holding ``working_set_bytes``
        (:func:`hwprof.hardware.levels.level_of` over :meth:`memory_levels`)."""
        return level_of(working_set_bytes, self.memory_levels())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Ceilings:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["trials"] = tuple(Trial(**{**t, "iqr_over_median": _float(t.get("iqr_over_median"))})
                                for t in known.get("trials") or ())
        known["flagged"] = tuple(known.get("flagged") or ())
        known["flop_per_s"] = {k: float(v) for k, v in (known.get("flop_per_s") or {}).items() if v is not None}
        known["spread"] = {k: _float(v) for k, v in (known.get("spread") or {}).items()}
        known["levels"] = tuple(MemoryLevel.from_dict(lv) for lv in known.get("levels") or ())
        known["sweep"] = tuple(SweepPoint(int(p["working_set_bytes"]), _float(p["time_s"]), _float(p["bytes_per_s"]),
                                          _float(p["raw_bytes_per_s"]), str(p.get("level") or ""))
                               for p in known.get("sweep") or ())
        known["load"] = dict(known["load"]) if isinstance(known.get("load"), dict) else {}
        return cls(**known)

    @classmethod
    def from_datasheet(cls, name: str, efficiency: Mapping[str, float] | None = None,
                       efficiency_source: str = "", op_overhead_s: float | None = None) -> Ceilings | None:
        """Datasheet peaks as Ceilings (``source="datasheet"``), or None when the table lacks ``name``.

        ``efficiency`` (measured / datasheet, per roof and ``"bytes_per_s"``, e.g. the
        ``ratio_to_datasheet`` of ceilings measured on such a device; ``efficiency_source`` says
        where it comes from) derates the peaks it names; the notes say which were derated and which
        are bare datasheet figures. ``op_overhead_s``: a per-op cost measured on such a device
        (else none is assumed, and the notes say so). Levels: the datasheet's L2 (capacity only: no datasheet gives its
        bandwidth, so it falls back to main memory's) and main memory."""
        entry = resolve(name)
        if entry is None:
            return None
        eff = dict(efficiency or {})
        flops = {k: float(entry[k]) * eff.get(k, 1.0) for k in MODES if entry.get(k)}
        bw = float(entry["bytes_per_s"]) * eff.get("bytes_per_s", 1.0)
        main = main_memory_name("cuda", name, entry)
        caches = [CacheLevel("L2", 2, int(entry["l2_bytes"]), 1, "datasheet")] if entry.get("l2_bytes") else []
        levels = tuple(MemoryLevel(c.name, c.capacity_bytes, None, c.capacity_bytes, "datasheet") for c in caches)
        return cls("cuda", entry["key"], torch.__version__, _today(), "datasheet", flops, bw, entry,
                   levels=(*levels, MemoryLevel(main, None, bw, None, "datasheet")), op_overhead_s=op_overhead_s,
                   notes=_derating_notes(entry, eff, efficiency_source, op_overhead_s))


def _derating_notes(entry: Mapping[str, Any], eff: Mapping[str, float], source: str,
                    op_overhead_s: float | None) -> list[str]:
    """What :meth:`Ceilings.from_datasheet` says about its peaks."""
    keys = [k for k in (*MODES, "bytes_per_s") if entry.get(k)]
    derated = [f"{k} x {eff[k]:.2f}" for k in keys if k in eff]
    bare = [k for k in keys if k not in eff]
    notes = [f"{entry['key']}: datasheet peaks ({entry.get('source', 'vendor datasheet')})"]
    if derated:
        notes.append(f"derated by measured efficiencies ({source or 'given'}): {', '.join(derated)}")
    if bare:
        notes.append(f"not derated (no measured efficiency known): {', '.join(bare)}; real kernels reach less, "
                     "so predicted times are lower bounds")
    if op_overhead_s is None:
        notes.append("per-op overhead not measured on this device: 0 s per op assumed")
    else:
        notes.append(f"per-op overhead {op_overhead_s * 1e6:.2f} us, measured on such a device ({source})")
    return notes


def main_memory_name(device_type: str, name: str, sheet: Mapping[str, Any] | None) -> str:
    """"HBM" for a GPU whose name or datasheet entry says HBM, else "DRAM" (CPUs, GDDR GPUs)."""
    hbm = "HBM" in name.upper() or (sheet or {}).get("key") in HBM_PARTS
    return "HBM" if device_type == "cuda" and hbm else "DRAM"


def _float(v: Any) -> float:
    """A saved number; None (how JSON keeps NaN) -> NaN."""
    return math.nan if v is None else float(v)


def refresh_command(device: str) -> str:
    """The command that re-measures the ceilings of ``device`` (named in warnings)."""
    return f"hwprof ceilings --refresh --device {device}"


def _today() -> str:
    return _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d")


# --------------------------------------------------------------------------- cache
def default_cache_dir() -> Path:
    """``$HWPROF_CACHE_DIR/ceilings``, else ``<platform user cache dir>/hwprof/ceilings``."""
    env = os.environ.get("HWPROF_CACHE_DIR")
    if env:
        return Path(env).expanduser() / "ceilings"
    import platformdirs

    return Path(platformdirs.user_cache_dir("hwprof")) / "ceilings"


def _torch_build() -> str:
    """``torch.__version__`` and the first 8 hex digits of its git commit (two builds of one version differ)."""
    git = (getattr(torch.version, "git_version", "") or "")[:8]
    return f"{torch.__version__}-{git}" if git else torch.__version__


def cache_path(cache_dir: str | Path | None, name: str, quick: bool, threads: int | None = None,
               host: str | None = None) -> Path:
    """``<cache_dir>/<device>__<host>__torch-<build>__<n>threads[-quick].json``, unsafe characters -> '_'.

    ``cache_dir`` None is :func:`default_cache_dir`; ``threads`` defaults to torch's intra-op
    threads, ``host`` to this host's name."""
    host = socket.gethostname() if host is None else host
    threads = torch.get_num_threads() if threads is None else threads
    parts = (name, host, f"torch-{_torch_build()}", f"{threads}threads" + ("-quick" if quick else ""))
    folder = default_cache_dir() if cache_dir is None else Path(cache_dir)
    return folder / ("__".join(re.sub(r"[^A-Za-z0-9.+-]+", "_", p).strip("_") for p in parts) + ".json")


def _read_cache(cache: CacheFile) -> Ceilings | None:
    """The cached ceilings, validated (:meth:`CacheFile.read`), or None (absent, damaged, flagged,
    or without memory levels: measured again)."""
    cached = cache.read(Ceilings.from_dict)
    if cached is None:
        return None
    if cached.flagged:   # never written by this module; a hand-made file is not trusted either
        log.warning("ignoring ceilings cache %s: its roofs %s are flagged; measuring", cache.path, list(cached.flagged))
        return None
    if not cached.levels:
        log.info("ceilings cache %s has no memory levels (an earlier hwprof); measuring", cache.path)
        return None
    cached.source = "cache"
    cached.cache_file = str(cache.path)
    return cached


# --------------------------------------------------------------------------- trials
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


def _bench(fn: Callable[[], Any], dev: torch.device, budget_s: float, clock: Clock | None = None) -> TrialResult:
    """time_fn with a warm-up sized to ~0.1 s of work (GPU clocks ramp), at least 5 timed reps;
    ``rate_per_s`` is left 0 for the caller to fill. ``clock``: time_fn's CPU clock."""
    fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    one = time_fn(fn, device=dev, warmup=0, min_reps=1, max_reps=1, budget_s=0, clock=clock, warn_noisy=False)
    warm = int(min(100, max(2, 0.1 / max(one.median_s, 1e-6))))
    s = time_fn(fn, device=dev, warmup=warm, min_reps=5, max_reps=200, budget_s=budget_s, target_iqr=0.01,
                clock=clock, warn_noisy=False)   # a trial's spread is judged by the rounds' agreement
    return TrialResult(0.0, s.median_s, s.reps, s.iqr_over_median)


def gemm_flop_per_s(mode: str, n: int, dev: torch.device, budget_s: float = 0.3, clock: Clock | None = None) -> TrialResult:
    """Time an n x n x n matmul in ``mode``; ``rate_per_s = 2 n^3 / median_s``."""
    dtype = MODES[mode]
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    c = torch.empty(n, n, device=dev, dtype=dtype)
    with _tf32(mode == "tf32") if dev.type == "cuda" else contextlib.nullcontext():
        r = _bench(lambda: torch.mm(a, b, out=c), dev, budget_s, clock)
    return r._replace(rate_per_s=2 * n**3 / r.time_s)


def copy_bytes_per_s(nbytes: int, dev: torch.device, budget_s: float = 0.3, repeat: int = 1,
                     clock: Clock | None = None) -> TrialResult:
    """Time ``dst.copy_(src)`` of ``nbytes``; ``rate_per_s = 2 x nbytes / median_s`` (read + write).

    ``repeat > 1`` times that many copies back to back per repetition (``time_s`` is per copy): on
    a GPU the launches then overlap the copies, so a small copy's time is the kernel's, not the
    launch's."""
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)

    def copies() -> None:
        for _ in range(repeat):
            dst.copy_(src)

    r = _bench(copies, dev, budget_s, clock)
    per_copy = r.time_s / repeat
    return r._replace(rate_per_s=2 * src.nbytes / per_copy, time_s=per_copy)


def op_overhead(dev: torch.device, budget_s: float = 0.3, clock: Clock | None = None) -> TrialResult:
    """Time a one-element ``dst.copy_(src)``: an op that moves nothing, so its time is the per-op
    cost (dispatch; on a GPU the kernel launch). ``rate_per_s = 1 / median_s`` (ops per second)."""
    src = torch.ones(1, device=dev)
    dst = torch.empty_like(src)
    r = _bench(lambda: dst.copy_(src), dev, budget_s, clock)
    return r._replace(rate_per_s=1.0 / r.time_s)


def device_trial(dev: torch.device, budget_s: float, clock: Clock | None = None) -> TrialFn:
    """The real trial on ``dev``: :func:`gemm_flop_per_s`; for ``"copy"`` :func:`copy_bytes_per_s`
    of ``size`` bytes; for ``"sweep"`` the same copy of ``size / 2`` bytes (working set ``size``);
    for ``"overhead"`` :func:`op_overhead`; ``clock`` times them on a CPU (default ``perf_counter``). On a GPU each sweep repetition is a batch of back-to-back
    copies (:func:`copy_bytes_per_s`'s ``repeat``): the launch cost overlaps them, so it is not
    taken out of the sweep's times (``_hierarchy``'s ``overlapped``)."""
    def trial(mode: str, size: int) -> TrialResult:
        if mode == COPY:
            return copy_bytes_per_s(size, dev, budget_s, clock=clock)
        if mode == SWEEP:   # GPU: back-to-back copies of at least 256 MiB in all, so launches overlap
            repeat = max(1, 2**28 // size) if dev.type == "cuda" else 1
            return copy_bytes_per_s(size // 2, dev, budget_s, repeat, clock)
        if mode == OVERHEAD:
            return op_overhead(dev, budget_s, clock)
        return gemm_flop_per_s(mode, size, dev, budget_s, clock)
    return trial


def _sweep_sizes(lo_log2: int, hi_log2: int, step: int) -> tuple[int, ...]:
    return tuple(2**e for e in range(lo_log2, hi_log2 + 1, step))


def _plan(dev: torch.device, quick: bool) -> tuple[dict[str, tuple[int, ...]], float]:
    """(sizes per trial mode: GEMM n, copy bytes for ``"copy"``, working sets for ``"sweep"``, one
    dummy size for ``"overhead"``; budget of one trial in seconds)."""
    if dev.type == "cuda":
        sizes = (1024, 2048) if quick else (4096, 8192, 16384)
        free, _total = torch.cuda.mem_get_info(dev)
        plan = {m: tuple(n for n in sizes if 3 * n * n * MODES[m].itemsize < 0.5 * free) for m in MODES}
        copies = (64 * 2**20,) if quick else (256 * 2**20, 2**30)
        plan[COPY] = tuple(s for s in copies if 2 * s < 0.5 * free)
        sweep = _sweep_sizes(20, 28, 4) if quick else _sweep_sizes(20, 30, 1)   # 1 MiB .. 1 GiB
        plan[SWEEP] = tuple(s for s in sweep if s < 0.5 * free)
        plan[OVERHEAD] = (1,)
        return plan, 0.05 if quick else 0.2
    sizes = (256, 512) if quick else (1024, 2048, 4096)   # 2 cores: 4096 reaches ~5% above 2048
    sweep = _sweep_sizes(16, 24, 4) if quick else _sweep_sizes(14, 28, 1)          # 16 KiB .. 256 MiB
    return ({"fp32": sizes, "bf16": sizes, COPY: (64 * 2**20,) if quick else (512 * 2**20,), SWEEP: sweep,
             OVERHEAD: (1,)}, 0.03 if quick else 0.2)


def _one(trial: TrialFn, rnd: int, mode: str, size: int, notes: list[str]) -> Trial | None:
    try:
        r = trial(mode, size)
    except (RuntimeError, TypeError) as e:   # e.g. a dtype the device's BLAS lacks
        first = str(e).splitlines()[0] if str(e) else ""
        notes.append(f"{mode} n={size} failed in round {rnd + 1}: {type(e).__name__}: {first}")
        return None
    log.info("round %d %s n=%d: %.3g /s", rnd + 1, mode, size, r.rate_per_s)
    return Trial(rnd, mode, size, float(r.rate_per_s), float(r.time_s), int(r.reps), float(r.iqr_over_median))


def run_trials(plan: Mapping[str, Sequence[int]], rounds: int, trial: TrialFn,
               budget_s: float, every_size: Collection[str] = ()) -> tuple[list[Trial], list[str]]:
    """Interleaved trials: ``rounds`` rounds, each running every (mode, size) of ``plan`` once in
    the same order, so that a load that comes and goes hits every mode alike.

    In the first round a mode stops at a size that fails (noted) or whose one repetition takes
    over ``budget_s / 5`` (larger sizes would blow the budget), except the modes in
    ``every_size`` (the sweep: a level it skipped would have no bandwidth); later rounds run the
    sizes the first round kept. Returns the trials and the notes."""
    if rounds < 2:
        raise ValueError(f"rounds must be >= 2 (a ceiling is checked against its second-best round), got {rounds}")
    notes: list[str] = []
    trials: list[Trial] = []
    kept: dict[str, list[int]] = {m: [] for m in plan}
    for mode, sizes in plan.items():
        for n in sizes:
            t = _one(trial, 0, mode, n, notes)
            if t is None:
                break
            trials.append(t)
            kept[mode].append(n)
            if t.time_s > budget_s / 5 and mode not in every_size:
                break
    for rnd in range(1, rounds):
        for mode, sizes in kept.items():
            trials += [t for n in sizes if (t := _one(trial, rnd, mode, n, notes)) is not None]
    return trials, notes


def best_of_trials(trials: Sequence[Trial]) -> tuple[dict[str, float], dict[str, float]]:
    """Per mode: the fastest trial's rate, and the spread ``(best round - second-best round) /
    best round`` where a round's rate is its fastest size (NaN with a single round)."""
    per_round: dict[str, dict[int, float]] = {}
    for t in trials:
        rounds = per_round.setdefault(t.mode, {})
        rounds[t.round] = max(rounds.get(t.round, 0.0), t.rate_per_s)
    best, spread = {}, {}
    for mode, rounds in per_round.items():
        rates = sorted(rounds.values(), reverse=True)
        best[mode] = rates[0]
        spread[mode] = (rates[0] - rates[1]) / rates[0] if len(rates) > 1 and rates[0] > 0 else math.nan
    return best, spread


def _flag(spread: Mapping[str, float], bound: float) -> tuple[tuple[str, ...], list[str]]:
    """Roofs whose spread exceeds ``bound`` (or could not be judged), with a note each."""
    flagged, notes = [], []
    for key, s in spread.items():
        if not s <= bound:
            flagged.append(key)
            what = "a single round" if math.isnan(s) else f"best two rounds {100 * s:.1f}% apart"
            notes.append(f"{key} ceiling not trusted: {what} (bound {100 * bound:.0f}%); the machine was busy "
                         "while it was measured, so it is not cached")
    return tuple(flagged), notes


def untrusted_levels_dropped(levels: Sequence[MemoryLevel], level_spread: Mapping[str, float],
                             bound: float) -> tuple[tuple[MemoryLevel, ...], list[str]]:
    """``levels`` with the bandwidth of each cache level whose spread (``level_spread``, keyed
    ``"<level>_bytes_per_s"``) exceeds ``bound`` or could not be judged set to None (source
    ``"untrusted"``), and a note for each: that level's layers take the next larger level's
    bandwidth, and the rest of the ceilings can still be cached."""
    out, notes = [], []
    for lv in levels:
        s = level_spread.get(f"{lv.name}_bytes_per_s")
        if s is not None and not s <= bound:
            what = "a single round" if math.isnan(s) else f"best two rounds {100 * s:.1f}% apart"
            notes.append(f"{lv.name} bandwidth not trusted: {what} (bound {100 * bound:.0f}%); left out, so layers "
                         f"whose data fits in {lv.name} are judged against the next level's bandwidth")
            lv = dataclasses.replace(lv, bytes_per_s=None, source="untrusted")
        out.append(lv)
    return tuple(out), notes


# --------------------------------------------------------------------------- measure
def _hierarchy(trials: Sequence[Trial], caches: Sequence[CacheLevel], bw: float | None, main_name: str,
               overlapped: bool = False) -> tuple[tuple[MemoryLevel, ...], tuple[SweepPoint, ...], float | None,
                                                  dict[str, float]]:
    """From the sweep and overhead trials: the memory levels, the sweep points (each labelled with
    its level), the op overhead (the lowest of its rounds) and each cache level's spread (keyed
    ``"<level>_bytes_per_s"``). See :mod:`hwprof.hardware.levels`. ``overlapped``: the sweep timed
    back-to-back copies (GPU), so the op overhead is not taken out of its times."""
    over = [t.time_s for t in trials if t.mode == OVERHEAD and t.time_s > 0]
    overhead = min(over) if over else None
    per_round: dict[int, dict[int, float]] = {}
    for t in trials:
        if t.mode == SWEEP:
            per_round.setdefault(t.round, {})[t.size] = t.time_s
    best: dict[int, float] = {}
    for times in per_round.values():
        for ws, t_s in times.items():
            best[ws] = min(best.get(ws, math.inf), t_s)
    subtract = None if overlapped else overhead
    points = sweep_points(best, subtract)
    levels = memory_levels(caches, points, bw, main_name)
    labelled = tuple(dataclasses.replace(p, level=level_of(p.working_set_bytes, levels)[0]) for p in points)
    spreads = level_spreads(levels, [sweep_points(r, subtract) for _, r in sorted(per_round.items())])
    return levels, labelled, overhead, {f"{k}_bytes_per_s": v for k, v in spreads.items()}


def measure_ceilings(device: str | torch.device = "auto", refresh: bool = False,
                     cache_dir: str | Path | None = None, quick: bool = False, rounds: int = DEFAULT_ROUNDS,
                     trial: TrialFn | None = None, caches: Sequence[CacheLevel] | None = None,
                     clock: Clock | None = None, load_meter: LoadMeter | None = None) -> Ceilings:
    """Peak FLOP/s per mode, copy bandwidth, memory levels and op overhead of ``device``: the best
    of ``rounds`` interleaved rounds of trials, cached per machine, torch build and thread count
    unless a roof's rounds disagree or, on a CPU, other processes competed for the cores (see the
    module docstring).

    The cache (:class:`~hwprof.hardware.cache.CacheFile`) is read without waiting; a measurement
    happens under its lock, so a second process that wants one waits for the first and reuses
    the result the first wrote meanwhile (with ``refresh`` too). A damaged cache file or an
    unusable folder is one warning: measured, not cached. ``quick=True`` uses small sizes (a
    check, not a ceiling: a few seconds on a 2-core CPU). ``trial`` replaces the real GEMM/copy
    trial (tests pass a fake one); ``caches`` the cache sizes the system reports
    (:func:`hwprof.hardware.caches.system_caches`); ``load_meter`` how the machine's load is watched
    (default :func:`hwprof.hardware.load.system_load`). ``clock`` times the CPU trials with another
    clock (e.g. the thread's CPU time on a machine other jobs share): such ceilings are a different
    measurement and are neither read from nor written to the cache.
    """
    dev = resolve_device(device)
    name = device_name(dev)

    def measured() -> Ceilings:
        return _measure(dev, name, quick, rounds, trial, caches, clock, load_meter or system_load)
    if clock is not None:
        return measured()
    cache = CacheFile(cache_path(cache_dir, name, quick), refresh_command(str(dev)))
    if not refresh and (cached := _read_cache(cache)) is not None:
        return cached
    asked = now()
    with cache.locked() as held:
        if held and cache.fresh_since(asked) and (theirs := _read_cache(cache)) is not None:
            theirs.notes.append("measured by another hwprof run while this one waited for it")
            log.info("ceilings of %s: reusing %s, measured by another hwprof run meanwhile", name, cache.path)
            return theirs
        result = measured()
        if held:
            _store(cache, result, dev)
    return result


def _store(cache: CacheFile, result: Ceilings, dev: torch.device) -> None:
    """Cache ``result`` unless a roof is flagged or, on a CPU, other processes competed (one warning each)."""
    if result.flagged:
        log.warning("ceilings of %s not cached: %s; re-run `%s` on a quiet machine", result.device_name,
                    "; ".join(n for n in result.notes if "ceiling not trusted" in n), refresh_command(str(dev)))
    elif dev.type == "cpu" and competed(result.load):
        log.warning("ceilings of %s not cached: %s; re-run `%s` on a quiet machine", result.device_name,
                    load_note(result.load).removesuffix(", so they are not cached"), refresh_command(str(dev)))
    elif cache.write(result.to_dict()):
        result.cache_file = str(cache.path)


def _measure(dev: torch.device, name: str, quick: bool, rounds: int, trial: TrialFn | None,
             caches: Sequence[CacheLevel] | None, clock: Clock | None, load_meter: LoadMeter) -> Ceilings:
    """One measurement of the ceilings of ``dev`` (``measure_ceilings`` without the cache), with the
    machine's load over its trials."""
    plan, budget_s = _plan(dev, quick)
    stop = load_meter()
    trials, notes = run_trials(plan, rounds, trial or device_trial(dev, budget_s, clock), budget_s, (SWEEP,))
    load = stop()
    best, spread = best_of_trials(trials)
    bw = best.pop(COPY, None)
    if COPY in spread:
        spread["bytes_per_s"] = spread.pop(COPY)
    for mode in (SWEEP, OVERHEAD):
        best.pop(mode, None)
        spread.pop(mode, None)
    sheet = lookup(name) if dev.type == "cuda" else None
    found = system_caches(dev) if caches is None else list(caches)
    levels, points, overhead, level_spread = _hierarchy(trials, found, bw, main_memory_name(dev.type, name, sheet),
                                                        overlapped=dev.type == "cuda")
    flagged, flag_notes = _flag(spread, AGREEMENT_BOUND)
    levels, untrusted_notes = untrusted_levels_dropped(levels, level_spread, AGREEMENT_BOUND)
    spread.update(level_spread)
    ratio = {k: v / sheet[k] for k, v in best.items() if sheet.get(k)} if sheet else {}
    if sheet and bw is not None and sheet.get("bytes_per_s"):
        ratio["bytes_per_s"] = bw / sheet["bytes_per_s"]
    notes += _level_notes(found, levels) + flag_notes + untrusted_notes
    notes += [load_note(load)] if dev.type == "cpu" and competed(load) else []
    notes += ["quick=True: small sizes, a smoke check rather than a ceiling"] if quick else []
    notes += [f"timed with {type(clock).__name__}, not perf_counter: not cached"] if clock is not None else []
    return Ceilings(dev.type, name, torch.__version__, _today(), "measured", best, bw, sheet, ratio, tuple(trials),
                    spread, flagged, threads=torch.get_num_threads(), host=socket.gethostname(), quick=quick,
                    notes=notes, levels=levels, sweep=points, op_overhead_s=overhead, load=load)


def _level_notes(caches: Sequence[CacheLevel], levels: Sequence[MemoryLevel]) -> list[str]:
    """Notes on the levels: no cache sizes found, effective capacities below the reported ones,
    levels the sweep could not resolve."""
    if not caches:
        return ["no cache sizes reported by the system: one memory level (main memory) only"]
    notes = []
    for lv in levels:
        if lv.reported_bytes and lv.capacity_bytes is not None and lv.capacity_bytes < lv.reported_bytes:
            notes.append(f"{lv.name}: the sweep's bandwidth steps down at {lv.capacity_bytes / 2**20:.3g} MiB, below "
                         f"the {lv.reported_bytes / 2**20:.3g} MiB the system reports; placed by the measured size")
        if lv.capacity_bytes is not None and lv.bytes_per_s is None:
            notes.append(f"{lv.name}: bandwidth not resolved (no sweep point in it, or the per-op overhead hides working "
                         "sets this small); placed against the next level's bandwidth")
    return notes
