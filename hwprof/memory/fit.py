"""``--fit``: the largest batch predicted to fit in a memory budget, and its real check.

Search (``largest_fitting_batch``): memory grows with the batch, so double the batch from 1
until the prediction exceeds the limit, then bisect between the last size that fits and the
first that does not: ``2 * ceil(log2(answer))`` predictions at most. The simulated predictor
runs on fake tensors, whose cost does not depend on the batch size.

Criterion: on CUDA the simulated *reserved* bytes (the segments the caching allocator must
obtain from the driver) must fit; this is conservative, since the real allocator frees its
unused cached segments and retries before raising out-of-memory, and the model does not. On
CPU the simulated peak must fit. ``--fit auto`` is what this process can still allocate:
the driver's free memory (after the CUDA context and other processes) plus what this
process's caching allocator already holds (:func:`device_total_bytes`).

Check (``check_fit``): a real step at the answer must succeed and at answer + 1 must run out
of memory. On CUDA the caching allocator is capped at the limit for the check
(``torch.cuda.set_per_process_memory_fraction(limit / total)``, the previous fraction restored
in ``finally``), so ``--fit 8GB`` is checked on an 80 GB GPU. On CPU the host does not raise
out-of-memory at a budget: the measured peak of live tensors (``alloc_trace_peak_bytes``, from
torch's allocator events, :mod:`hwprof.measuring.alloc_trace`) is compared with the limit
instead, and the RSS growth is reported beside it; ``measured_fit`` is None only where no
allocator trace ran (and the run did not really run out of memory).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from hwprof.errors import DeviceUnavailableError
from hwprof.memory.simulate import simulate
from hwprof.memory.validate import MeasureFn, run_measure

__all__ = ["parse_size", "device_total_bytes", "largest_fitting_batch", "FitResult", "fit_batch", "check_fit",
           "MAX_BATCH", "MAX_SIZE_BYTES"]

logger = logging.getLogger(__name__)

MAX_BATCH = 1 << 20
"""The largest batch :func:`fit_batch` tries: an answer of this size means "at least this many"."""

MAX_SIZE_BYTES = 2**60
"""The largest memory size :func:`parse_size` takes (1 EiB): beyond any device, a typo."""

_UNITS = {"": 1, "b": 1, "kb": 10**3, "mb": 10**6, "gb": 10**9, "tb": 10**12,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40, "k": 2**10, "m": 2**20, "g": 2**30, "t": 2**40}


def parse_size(text: str | int) -> int:
    """``"80GB"`` -> 80 * 10**9, ``"80GiB"`` / ``"80G"`` -> 80 * 2**30, ``"512MB"``, ``"1e9"``, ints as bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-zA-Z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(f"bad memory size {text!r}; expected e.g. 80GB, 16GiB, 512MB or a number of bytes")
    size = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if not 1 <= size <= MAX_SIZE_BYTES:
        raise ValueError(f"memory size {text!r} is {'below one byte' if size < 1 else 'beyond 1 EiB'}; expected e.g. "
                         "80GB, 16GiB or 512MB")
    return int(size)


def device_total_bytes(device: str = "cuda") -> int:
    """What this process can still allocate on the current CUDA device (``--fit auto``): the
    driver's free memory (``torch.cuda.mem_get_info``, which creates the CUDA context first, so
    the context and other processes are already subtracted) plus what this process's caching
    allocator holds (``memory_reserved``, reusable by the run)."""
    if device != "cuda" or not torch.cuda.is_available():
        raise DeviceUnavailableError("--fit auto needs a CUDA device (give a size such as 80GB instead)")
    dev = torch.cuda.current_device()
    free, _total = torch.cuda.mem_get_info(dev)
    return int(free) + int(torch.cuda.memory_reserved(dev))


def largest_fitting_batch(predict: Callable[[int], int], limit_bytes: int, *, max_batch: int = MAX_BATCH
                          ) -> tuple[int, dict[int, int]]:
    """Largest ``b`` in [1, max_batch] with ``predict(b) <= limit_bytes`` (0 if even 1 does not fit),
    assuming ``predict`` grows with ``b``; also returns every evaluated ``{batch: bytes}``."""
    seen: dict[int, int] = {}

    def fits(b: int) -> bool:
        if b not in seen:
            seen[b] = int(predict(b))
        return seen[b] <= limit_bytes

    if not fits(1):
        return 0, seen
    lo = 1
    hi = 2
    while hi <= max_batch and fits(hi):
        lo, hi = hi, hi * 2
    if hi > max_batch:
        if fits(max_batch):
            return max_batch, seen
        hi = max_batch
    while hi - lo > 1:                     # invariant: fits(lo), not fits(hi)
        mid = (lo + hi) // 2
        if fits(mid):
            lo = mid
        else:
            hi = mid
    return lo, seen


@dataclass
class FitResult:
    """The answer of :func:`fit_batch`; ``evaluations`` has one row per predicted batch size."""

    limit_bytes: int
    batch: int
    criterion: str                    # "reserved_predicted_bytes" or "peak_predicted_bytes"
    evaluations: pd.DataFrame
    checks: pd.DataFrame | None = None
    notes: list[str] = field(default_factory=list)
    max_batch: int = MAX_BATCH

    @property
    def at_cap(self) -> bool:
        """The answer is the search cap: the limit holds at least ``batch``, how much more is not known."""
        return self.batch >= self.max_batch

    @property
    def predicted_bytes(self) -> int | None:
        row = self.evaluations[self.evaluations["batch"] == self.batch]
        return int(row[self.criterion].iloc[0]) if len(row) else None


def fit_batch(model: nn.Module, inputs: Any, limit_bytes: int, *, mode: str = "train", optimizer: str | None = None,
              dtype: torch.dtype | str = torch.float32, amp: bool = False, device: str = "cuda",
              max_batch: int = MAX_BATCH, predict: Callable[[int], dict[str, int | None]] | None = None) -> FitResult:
    """Largest batch whose simulated step fits in ``limit_bytes`` (criterion: see module docstring).

    ``predict(batch) -> {"peak_predicted": ..., "reserved_predicted": ...}`` replaces the
    simulation (tests use a fake one).
    """
    criterion = "reserved_predicted" if device == "cuda" else "peak_predicted"

    def simulated(b: int) -> dict[str, int | None]:
        r = simulate(model, inputs, mode=mode, optimizer=optimizer, dtype=dtype, amp=amp, batch=b, device=device,
                     record_timeline=False)
        return r.components

    pred = predict or simulated
    cache: dict[int, dict[str, int | None]] = {}

    def one(b: int) -> int:
        cache[b] = pred(b)
        logger.info("fit: batch %d -> %s bytes", b, cache[b].get(criterion))
        return int(cache[b].get(criterion) or cache[b]["peak_predicted"] or 0)

    batch, _ = largest_fitting_batch(one, limit_bytes, max_batch=max_batch)
    if batch and batch + 1 not in cache and batch < max_batch:
        one(batch + 1)
    rows = [{"batch": b, "peak_predicted_bytes": c.get("peak_predicted"),
             "reserved_predicted_bytes": c.get("reserved_predicted"),
             "fits": int(c.get(criterion) or c.get("peak_predicted") or 0) <= limit_bytes}
            for b, c in sorted(cache.items())]
    evaluations = pd.DataFrame(rows, columns=["batch", "peak_predicted_bytes", "reserved_predicted_bytes", "fits"])
    return FitResult(limit_bytes, batch, f"{criterion}_bytes", evaluations, max_batch=max_batch)


@contextlib.contextmanager
def capped_cuda_memory(limit_bytes: int, device: str) -> Iterator[None]:
    """Cap the caching allocator at ``limit_bytes`` for the block (CUDA only); restore the previous fraction."""
    if device != "cuda" or not torch.cuda.is_available():
        yield
        return
    dev = torch.cuda.current_device()
    total = torch.cuda.get_device_properties(dev).total_memory
    getter = getattr(torch.cuda, "get_per_process_memory_fraction", None)
    previous = float(getter(dev)) if getter is not None else 1.0
    torch.cuda.set_per_process_memory_fraction(min(1.0, limit_bytes / total), dev)
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(previous, dev)


def check_fit(model: nn.Module, inputs: Any, fit: FitResult, *, device: str, mode: str = "train",
              optimizer: str | None = None, dtype: torch.dtype | str = torch.float32, budget_s: float = 0.5,
              measure_fn: MeasureFn | None = None) -> pd.DataFrame:
    """Real steps at ``fit.batch`` (expected to fit) and ``fit.batch + 1`` (expected not to); see module docstring."""
    rows = []
    for b, expect in ((fit.batch, True), (fit.batch + 1, False)):
        if b < 1:
            continue
        with capped_cuda_memory(fit.limit_bytes, device):
            m = run_measure(model, inputs, device=device, mode=mode, optimizer=optimizer, batch=b, dtype=dtype,
                            budget_s=budget_s, measure_fn=measure_fn)
        trace = m.get("alloc_trace_peak_bytes")
        fits: bool | None
        if device == "cuda" or m["oom"]:
            fits = not m["oom"]
        else:   # the CPU does not raise at a budget: compare the measured tensor peak with it
            fits = None if trace is None else int(trace) <= fit.limit_bytes
        rss = m["rss_peak_bytes"] - m["rss_baseline_bytes"] \
            if m["rss_peak_bytes"] is not None and m["rss_baseline_bytes"] is not None else None
        rows.append({"batch": b, "expected_fit": expect, "measured_fit": fits, "oom": m["oom"],
                     "alloc_peak_bytes": m["alloc_peak_bytes"], "reserved_peak_bytes": m["reserved_peak_bytes"],
                     "alloc_trace_peak_bytes": trace, "rss_peak_minus_baseline_bytes": rss,
                     "agrees": None if fits is None else fits == expect})
    df = pd.DataFrame(rows, columns=["batch", "expected_fit", "measured_fit", "oom", "alloc_peak_bytes",
                                     "reserved_peak_bytes", "alloc_trace_peak_bytes", "rss_peak_minus_baseline_bytes",
                                     "agrees"])
    fit.checks = df
    return df
