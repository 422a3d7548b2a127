"""The communication ceiling: bus bandwidth of each collective over message sizes, measured on this group.

``torchrun --nproc_per_node N -m hwprof ceilings --collectives`` runs, on every rank, each of
all_reduce, all_gather_into_tensor, reduce_scatter_tensor and broadcast on float32 messages of
1 KiB to 256 MiB (x4 steps; nccl-tests' message size: the all_reduce buffer, the all_gather
output, the reduce_scatter input). One trial of (collective, size)::

    barrier; t0; repeat k times: collective (CUDA: synchronize after the last); t1
    time_s = (t1 - t0) / k, the slowest rank's (all_reduce MAX: a collective ends when its last
    rank does; every rank then holds the same number, so all ranks take the same decisions)
    busbw  = size / time_s * factor(collective, N)          (nccl-tests' bus bandwidth)

with ``k`` sized to the trial budget from a first timed call (also agreed by MAX). As for the
compute ceilings (:mod:`hwprof.hardware.ceilings`), a ceiling is a maximum: trials run in
``rounds`` interleaved rounds (:func:`hwprof.hardware.ceilings.run_trials`), each (collective,
size) keeps its best round, and a collective whose best two rounds differ by more than
:data:`~hwprof.hardware.ceilings.AGREEMENT_BOUND` at the median message size (:func:`curve_spread`)
is flagged and the result not cached. Results
are cached beside the compute ceilings (``$HWPROF_CACHE_DIR/ceilings``, else the user cache),
one file per backend, world size, device, host, torch build and thread count.

A measured collective is placed against the curve as a layer against its roof
(:func:`place`): the ceiling's busbw at the collective's mean message size (log-log
interpolation between measured sizes) and the measured busbw as a share of it.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import socket
import time
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from hwprof.device import device_name
from hwprof.distributed.collectives import bus_factor
from hwprof.files import read_json_record, write_json_atomic
from hwprof.hardware.ceilings import (
    AGREEMENT_BOUND,
    DEFAULT_ROUNDS,
    Trial,
    TrialFn,
    TrialResult,
    best_of_trials,
    cache_path,
    run_trials,
)

__all__ = ["CollectiveCeilings", "measure_collective_ceilings", "cached_collective_ceilings", "collective_trial", "place",
           "KINDS", "SIZES", "QUICK_SIZES", "best_per_size", "curve_spread"]

log = logging.getLogger(__name__)

KINDS = ("all_reduce", "all_gather_into_tensor", "reduce_scatter_tensor", "broadcast")
SIZES = tuple(2**k for k in range(10, 29, 2))          # 1 KiB .. 256 MiB
QUICK_SIZES = tuple(2**k for k in range(10, 21, 2))    # 1 KiB .. 1 MiB


@dataclass
class CollectiveCeilings:
    """Best busbw (bytes/s) per collective and message size (bytes) on one group: ``backend``, ``world_size``,
    the device and host, the trials, per collective the ``spread`` of its best two rounds and the
    ``flagged`` collectives (rounds disagreeing beyond the bound: not cached)."""

    backend: str
    world_size: int
    device_type: str
    device_name: str
    host: str
    torch_version: str
    date: str
    source: str
    busbw: dict[str, dict[int, float]] = field(default_factory=dict)
    trials: tuple[Trial, ...] = ()
    spread: dict[str, float] = field(default_factory=dict)
    flagged: tuple[str, ...] = ()
    quick: bool = False
    notes: list[str] = field(default_factory=list)
    cache_file: str | None = None

    def peak(self, kind: str) -> float | None:
        """The largest busbw of ``kind`` over sizes (None when it was not measured)."""
        curve = self.busbw.get(kind)
        return max(curve.values()) if curve else None

    def busbw_at(self, kind: str, nbytes: float) -> float | None:
        """The ceiling's busbw of ``kind`` at ``nbytes``: log-log interpolation between the measured sizes,
        the end values outside them; None when ``kind`` was not measured."""
        curve = sorted((self.busbw.get(kind) or {}).items())
        if not curve or not nbytes or nbytes <= 0:
            return None
        if nbytes <= curve[0][0]:
            return curve[0][1]
        for (s0, b0), (s1, b1) in zip(curve, curve[1:], strict=False):
            if nbytes <= s1:
                w = (math.log(nbytes) - math.log(s0)) / (math.log(s1) - math.log(s0))
                return math.exp(math.log(b0) + w * (math.log(b1) - math.log(b0)))
        return curve[-1][1]

    def table(self) -> pd.DataFrame:
        """One row per message size, one busbw column per collective."""
        sizes = sorted({s for c in self.busbw.values() for s in c})
        return pd.DataFrame({k: [self.busbw[k].get(s, math.nan) for s in sizes] for k in self.busbw},
                            index=pd.Index(sizes, name="bytes"))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["busbw"] = {k: {str(s): v for s, v in c.items()} for k, c in self.busbw.items()}
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> CollectiveCeilings:
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        known["busbw"] = {k: {int(s): float(v) for s, v in c.items()} for k, c in (known.get("busbw") or {}).items()}
        known["trials"] = tuple(Trial(**t) for t in known.get("trials") or ())
        known["flagged"] = tuple(known.get("flagged") or ())
        return cls(**known)


def _buffers(kind: str, size: int, world: int, dev: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(output-side, input-side) float32 buffers for one message of ``size`` bytes (rounded to whole elements
    per rank)."""
    per_rank = max(1, size // 4 // world)
    full = per_rank * world
    if kind == "all_gather_into_tensor":
        return torch.empty(full, device=dev), torch.ones(per_rank, device=dev)
    if kind == "reduce_scatter_tensor":
        return torch.empty(per_rank, device=dev), torch.ones(full, device=dev)
    buf = torch.ones(full, device=dev)
    return buf, buf


def _call(kind: str) -> Any:
    import torch.distributed as dist

    return {"all_reduce": lambda out, inp: dist.all_reduce(out),
            "broadcast": lambda out, inp: dist.broadcast(out, src=0),
            "all_gather_into_tensor": lambda out, inp: dist.all_gather_into_tensor(out, inp),
            "reduce_scatter_tensor": lambda out, inp: dist.reduce_scatter_tensor(out, inp)}[kind]


def _agreed_s(seconds: float, dev: torch.device) -> float:
    """The largest of every rank's ``seconds``."""
    import torch.distributed as dist

    t = torch.tensor([seconds], dtype=torch.float64, device=dev)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t.item())


def _timed(fn: Any, reps: int, dev: torch.device) -> float:
    import torch.distributed as dist

    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)
    return _agreed_s((time.perf_counter() - t0) / reps, dev)


def collective_trial(dev: torch.device, world: int, budget_s: float) -> TrialFn:
    """``trial(kind, size)``: one timed trial of a collective (see the module docstring); ``rate_per_s`` is busbw."""

    def trial(kind: str, size: int) -> TrialResult:
        out, inp = _buffers(kind, size, world, dev)
        call = _call(kind)
        fn = lambda: call(out, inp)  # noqa: E731
        fn()                                        # warm-up: connections, buffers
        one = _timed(fn, 1, dev)
        reps = int(min(50, max(2, budget_s / max(one, 1e-6))))
        t = _timed(fn, reps, dev)
        nbytes = (out if kind != "reduce_scatter_tensor" else inp).numel() * 4
        return TrialResult(nbytes / t * bus_factor(kind, world), t, reps)

    return trial


def curve_spread(trials: list[Trial]) -> dict[str, float]:
    """Per collective, the median over message sizes of ``(best round - second-best round) / best round``: each
    size is a point of the ceiling, and a curve is trusted when its rounds agree at the typical point (the
    compute ceilings' rule, :func:`hwprof.hardware.ceilings.best_of_trials`, judges a roof by its fastest
    size alone, which for a curve is one point). NaN with a single round."""
    import statistics

    per_size: dict[str, list[float]] = {}
    for (kind, _size), group in _by_point(trials).items():
        _, s = best_of_trials(group)
        per_size.setdefault(kind, []).append(s.get(kind, math.nan))
    return {k: float(statistics.median(v)) if not any(math.isnan(x) for x in v) else math.nan
            for k, v in per_size.items()}


def _by_point(trials: list[Trial]) -> dict[tuple[str, int], list[Trial]]:
    out: dict[tuple[str, int], list[Trial]] = {}
    for t in trials:
        out.setdefault((t.mode, t.size), []).append(t)
    return out


def best_per_size(trials: list[Trial]) -> dict[str, dict[int, float]]:
    """Per collective and size, the best rate over the rounds."""
    out: dict[str, dict[int, float]] = {}
    for t in trials:
        curve = out.setdefault(t.mode, {})
        curve[t.size] = max(curve.get(t.size, 0.0), t.rate_per_s)
    return out


def _cache_file(cache_dir: str | Path | None, backend: str, world: int, name: str, quick: bool) -> Path:
    return cache_path(cache_dir, f"collectives-{backend}-{world}ranks-{name}", quick)


def _read(path: Path) -> CollectiveCeilings | None:
    k = read_json_record(path, CollectiveCeilings.from_dict, "collective ceilings")
    return None if k is None else dataclasses.replace(k, source="cache", cache_file=str(path))


def _cached_on_rank0(path: Path, refresh: bool) -> CollectiveCeilings | None:
    """Rank 0's cached result, broadcast to every rank (so that all measure, or none)."""
    import torch.distributed as dist

    box: list[Any] = [None]
    if dist.get_rank() == 0 and not refresh:
        cached = _read(path)
        box[0] = cached.to_dict() if cached is not None else None
    dist.broadcast_object_list(box, src=0)
    return CollectiveCeilings.from_dict(box[0]) if box[0] is not None else None


def measure_collective_ceilings(refresh: bool = False, cache_dir: str | Path | None = None, quick: bool = False,
                                rounds: int = DEFAULT_ROUNDS, trial: TrialFn | None = None,
                                kinds: tuple[str, ...] = KINDS) -> CollectiveCeilings:
    """busbw per collective and message size on the default process group (every rank calls it; see the module
    docstring); cached by rank 0 unless a collective is flagged. ``trial`` replaces the real one (tests)."""
    import torch.distributed as dist

    backend, world = str(dist.get_backend()), dist.get_world_size()
    dev = torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")
    name = device_name(dev)
    path = _cache_file(cache_dir, backend, world, name, quick)
    cached = _cached_on_rank0(path, refresh)
    if cached is not None:
        return cached
    budget_s = 0.02 if quick else 0.2
    sizes = QUICK_SIZES if quick else SIZES
    with warnings.catch_warnings():   # torch 2.13 deprecates the *_tensor names FSDP2 still dispatches
        warnings.simplefilter("ignore", FutureWarning)
        # every size runs (an infinite budget for run_trials' size cut-off, which is for GEMMs); the trial sizes
        # its own repetitions to ``budget_s``
        trials, notes = run_trials({k: sizes for k in kinds}, rounds, trial or collective_trial(dev, world, budget_s),
                                   math.inf)
    spread = curve_spread(trials)
    flagged = tuple(k for k, s in spread.items() if not s <= AGREEMENT_BOUND)
    notes += [f"{k}: best two rounds {100 * spread[k]:.1f}% apart (bound {100 * AGREEMENT_BOUND:.0f}%): not cached"
              for k in flagged]
    result = CollectiveCeilings(backend, world, dev.type, name, socket.gethostname(), torch.__version__,
                                time.strftime("%Y-%m-%d", time.gmtime()), "measured", best_per_size(trials),
                                tuple(trials), spread, flagged, quick, notes)
    if dist.get_rank() == 0 and not flagged:
        write_json_atomic(path, result.to_dict())
        result.cache_file = str(path)
    return result


def cached_collective_ceilings(backend: str, world: int, device: torch.device,
                               cache_dir: str | Path | None = None) -> CollectiveCeilings | None:
    """The cached (full, then quick) collective ceilings of this backend, world size and device, or None."""
    name = device_name(device)
    for quick in (False, True):
        k = _read(_cache_file(cache_dir, backend, world, name, quick))
        if k is not None:
            return k
    return None


def place(collectives: pd.DataFrame, ceilings: CollectiveCeilings | None) -> pd.DataFrame:
    """``collectives`` (:func:`hwprof.distributed.collectives.collective_table`) with the ceiling's busbw at each
    row's mean message size (``ceiling_busbw_bytes_per_s``) and the measured busbw as a share of it
    (``of_ceiling``); NaN where there is no ceiling for the kind."""
    out = collectives.copy()
    at = [ceilings.busbw_at(k, s) if ceilings is not None else None
          for k, s in zip(out["kind"], out["mean_message_bytes"], strict=True)]
    out["ceiling_busbw_bytes_per_s"] = [math.nan if v is None else v for v in at]
    out["of_ceiling"] = out["busbw_bytes_per_s"] / out["ceiling_busbw_bytes_per_s"]
    return out
