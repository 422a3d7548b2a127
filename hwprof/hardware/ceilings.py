"""Ceilings: this machine's peak FLOP/s per dtype / math mode and its memory bandwidth, measured.

Method (units: ``flop_per_s``, ``bytes_per_s``, ``time_s``):

* compute: square GEMM ``C = A @ B`` of size n, FLOPs = 2 n^3 (n^2 outputs x n multiply-adds),
  ``flop_per_s = 2 n^3 / median_time_s`` of one trial. Modes: ``fp32`` with TF32 off
  (``torch.backends.cuda.matmul.allow_tf32 = False``), ``tf32`` (on), ``bf16``, ``fp16``, ``fp64``.
  GPU n in (4096, 8192, 16384) where memory allows; CPU: fp32 and bf16 with the process's
  intra-op threads, n up to 4096 (smaller GEMMs understate the peak that oneDNN convolutions reach).
  A size is dropped, with every larger one, when one repetition of it takes over a fifth of the
  trial budget in the first round.
* bandwidth: ``dst.copy_(src)`` of a large buffer (GPU 1 GiB, CPU 512 MiB),
  ``bytes_per_s = 2 x nbytes / median_time_s`` (bytes read + bytes written).

A ceiling is a maximum: load on the machine only ever slows a trial down. So every ceiling is
the best of repeated, interleaved trials: ``rounds`` rounds, each running every (mode, size) once
in the same order (:func:`run_trials`), and the ceiling of a mode is its fastest trial
(:func:`best_of_trials`). Its ``spread`` is ``(best round - second-best round) / best round``, a
round's rate being its fastest size. Two rounds that agree say the maximum is reproducible; a
spread above :data:`AGREEMENT_BOUND` (10%) says the machine was busy while the trials ran: that
ceiling is ``flagged``, a note says so, and the result is **not cached**.

Results are cached as JSON per machine (device name and host), torch build, thread count (and
``-quick`` for quick runs) in a user cache folder: ``cache_dir`` when given, else
``$HWPROF_CACHE_DIR/ceilings``, else the platform's user cache folder (``platformdirs``:
``~/.cache/hwprof/ceilings`` on Linux); never the current folder. A later call returns the cache
(``source="cache"``) unless ``refresh=True``.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import json
import logging
import math
import os
import re
import socket
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple

import torch

from hwprof.device import device_name, resolve_device
from hwprof.files import write_json_atomic
from hwprof.hardware.datasheet import lookup
from hwprof.measuring.timers import time_fn

__all__ = ["Ceilings", "Trial", "TrialResult", "TrialFn", "measure_ceilings", "cache_path", "default_cache_dir",
           "run_trials", "best_of_trials", "gemm_flop_per_s", "copy_bytes_per_s", "AGREEMENT_BOUND", "DEFAULT_ROUNDS",
           "refresh_command"]

log = logging.getLogger(__name__)

MODES: dict[str, torch.dtype] = {"fp32": torch.float32, "tf32": torch.float32, "bf16": torch.bfloat16,
                                 "fp16": torch.float16, "fp64": torch.float64}
COPY = "copy"
"""The trial mode of the bandwidth probe; its ceiling is ``Ceilings.bytes_per_s`` (spread key ``"bytes_per_s"``)."""

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
    their rounds disagreed beyond :data:`AGREEMENT_BOUND`. Ask for a roof with :meth:`roof`."""

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

    def roof(self, key: str) -> float:
        """The compute roof ``key`` in FLOP/s; ``KeyError`` naming the roofs there are otherwise."""
        if key not in self.flop_per_s:
            raise KeyError(f"no {key!r} roof in the ceilings of {self.device_name} (roofs: {sorted(self.flop_per_s)})")
        return float(self.flop_per_s[key])

    def datasheet_roof(self, key: str) -> float | None:
        """The datasheet's figure for ``key`` (a compute roof, or ``"bytes_per_s"``), or None."""
        v = (self.datasheet or {}).get(key)
        return float(v) if isinstance(v, (int, float)) and v > 0 else None

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
        return cls(**known)

    @classmethod
    def from_datasheet(cls, name: str) -> Ceilings | None:
        """Datasheet peaks as Ceilings (``source="datasheet"``), or None when the table lacks ``name``."""
        entry = lookup(name)
        if entry is None:
            return None
        flops = {k: float(entry[k]) for k in MODES if entry.get(k)}
        return cls("cuda", name, torch.__version__, _today(), "datasheet", flops, entry["bytes_per_s"], entry)


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


def _read_cache(path: Path) -> Ceilings | None:
    if not path.exists():
        return None
    try:
        cached = Ceilings.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError, KeyError) as e:
        log.warning("ignoring unreadable ceilings cache %s (%s); measuring", path, e)
        return None
    if cached.flagged:   # never written by this module; a hand-made file is not trusted either
        log.warning("ignoring ceilings cache %s: its roofs %s are flagged; measuring", path, list(cached.flagged))
        return None
    cached.source = "cache"
    cached.cache_file = str(path)
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


def _bench(fn: Callable[[], Any], dev: torch.device, budget_s: float) -> TrialResult:
    """time_fn with a warm-up sized to ~0.1 s of work (GPU clocks ramp), at least 5 timed reps;
    ``rate_per_s`` is left 0 for the caller to fill."""
    fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    one = time_fn(fn, device=dev, warmup=0, min_reps=1, max_reps=1, budget_s=0)
    warm = int(min(100, max(2, 0.1 / max(one.median_s, 1e-6))))
    s = time_fn(fn, device=dev, warmup=warm, min_reps=5, max_reps=200, budget_s=budget_s, target_iqr=0.01)
    return TrialResult(0.0, s.median_s, s.reps, s.iqr_over_median)


def gemm_flop_per_s(mode: str, n: int, dev: torch.device, budget_s: float = 0.3) -> TrialResult:
    """Time an n x n x n matmul in ``mode``; ``rate_per_s = 2 n^3 / median_s``."""
    dtype = MODES[mode]
    a = torch.randn(n, n, device=dev).to(dtype)
    b = torch.randn(n, n, device=dev).to(dtype)
    c = torch.empty(n, n, device=dev, dtype=dtype)
    with _tf32(mode == "tf32") if dev.type == "cuda" else contextlib.nullcontext():
        r = _bench(lambda: torch.mm(a, b, out=c), dev, budget_s)
    return r._replace(rate_per_s=2 * n**3 / r.time_s)


def copy_bytes_per_s(nbytes: int, dev: torch.device, budget_s: float = 0.3) -> TrialResult:
    """Time ``dst.copy_(src)`` of ``nbytes``; ``rate_per_s = 2 x nbytes / median_s`` (read + write)."""
    src = torch.ones(nbytes // 4, dtype=torch.float32, device=dev)
    dst = torch.empty_like(src)
    r = _bench(lambda: dst.copy_(src), dev, budget_s)
    return r._replace(rate_per_s=2 * src.nbytes / r.time_s)


def device_trial(dev: torch.device, budget_s: float) -> TrialFn:
    """The real trial on ``dev``: :func:`gemm_flop_per_s` or, for ``"copy"``, :func:`copy_bytes_per_s`."""
    def trial(mode: str, size: int) -> TrialResult:
        if mode == COPY:
            return copy_bytes_per_s(size, dev, budget_s)
        return gemm_flop_per_s(mode, size, dev, budget_s)
    return trial


def _plan(dev: torch.device, quick: bool) -> tuple[dict[str, tuple[int, ...]], float]:
    """(sizes per trial mode: GEMM n, or copy bytes for ``"copy"``; budget of one trial in seconds)."""
    if dev.type == "cuda":
        sizes = (1024, 2048) if quick else (4096, 8192, 16384)
        free, _total = torch.cuda.mem_get_info(dev)
        plan = {m: tuple(n for n in sizes if 3 * n * n * MODES[m].itemsize < 0.5 * free) for m in MODES}
        copies = (64 * 2**20,) if quick else (256 * 2**20, 2**30)
        plan[COPY] = tuple(s for s in copies if 2 * s < 0.5 * free)
        return plan, 0.05 if quick else 0.2
    sizes = (256, 512) if quick else (1024, 2048, 4096)   # 2 cores: 4096 reaches ~5% above 2048
    return {"fp32": sizes, "bf16": sizes, COPY: (64 * 2**20,) if quick else (512 * 2**20,)}, 0.03 if quick else 0.2


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
               budget_s: float) -> tuple[list[Trial], list[str]]:
    """Interleaved trials: ``rounds`` rounds, each running every (mode, size) of ``plan`` once in
    the same order, so that a load that comes and goes hits every mode alike.

    In the first round a mode stops at a size that fails (noted) or whose one repetition takes
    over ``budget_s / 5`` (larger sizes would blow the budget); later rounds run the sizes the
    first round kept. Returns the trials and the notes."""
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
            if t.time_s > budget_s / 5:
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


# --------------------------------------------------------------------------- measure
def measure_ceilings(device: str | torch.device = "auto", refresh: bool = False,
                     cache_dir: str | Path | None = None, quick: bool = False, rounds: int = DEFAULT_ROUNDS,
                     trial: TrialFn | None = None) -> Ceilings:
    """Peak FLOP/s per mode and copy bandwidth of ``device``: the best of ``rounds`` interleaved
    rounds of trials, cached per machine, torch build and thread count unless a roof's rounds
    disagree (see the module docstring).

    ``quick=True`` uses small sizes (a check, not a ceiling: a few seconds on a 2-core CPU).
    ``trial`` replaces the real GEMM/copy trial (tests pass a fake one).
    """
    dev = resolve_device(device)
    name = device_name(dev)
    path = cache_path(cache_dir, name, quick)
    cached = None if refresh else _read_cache(path)
    if cached is not None:
        return cached
    plan, budget_s = _plan(dev, quick)
    trials, notes = run_trials(plan, rounds, trial or device_trial(dev, budget_s), budget_s)
    best, spread = best_of_trials(trials)
    bw = best.pop(COPY, None)
    if COPY in spread:
        spread["bytes_per_s"] = spread.pop(COPY)
    flagged, flag_notes = _flag(spread, AGREEMENT_BOUND)
    sheet = lookup(name) if dev.type == "cuda" else None
    ratio = {k: v / sheet[k] for k, v in best.items() if sheet.get(k)} if sheet else {}
    if sheet and bw is not None and sheet.get("bytes_per_s"):
        ratio["bytes_per_s"] = bw / sheet["bytes_per_s"]
    notes += flag_notes + (["quick=True: small sizes, a smoke check rather than a ceiling"] if quick else [])
    result = Ceilings(dev.type, name, torch.__version__, _today(), "measured", best, bw, sheet, ratio, tuple(trials),
                      spread, flagged, threads=torch.get_num_threads(), host=socket.gethostname(), quick=quick,
                      notes=notes)
    if flagged:
        log.warning("ceilings of %s not cached: %s; re-run `%s` on a quiet machine", name, "; ".join(flag_notes),
                    refresh_command(str(dev)))
    else:
        write_json_atomic(path, result.to_dict())
        result.cache_file = str(path)
    return result
