"""``hwprof.profile``: measure + count + ceilings + :func:`hwprof.join`, on this machine, now.

    measure (real runs)   ->  Measurement (times, memory, the math modes it ran under)
    count (fake tensors)  ->  CountResult (per-layer and per-op FLOPs, bytes, op classes, variants)
    ceilings              ->  Ceilings (measured roofs, from the user cache when they are there)
    join                  ->  Profile (a pure function of the three: :mod:`hwprof.joining`)

When a measured rate contradicts ceilings read from the cache (a layer above its roof, or the
whole model above its peak: :func:`hwprof.joining.roof_violations`), the ceilings are re-measured
once and the records joined again; a contradiction that survives stays flagged in the profile.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hwprof.counting.counter import CountResult, count
from hwprof.hardware.ceilings import Ceilings
from hwprof.joining import Profile, _join, join
from hwprof.measuring.records import Measurement
from hwprof.profile_folder import load_profile
from hwprof.spec import Mode

__all__ = ["profile", "profile_step", "trusted_join", "Profile", "join", "load_profile"]

log = logging.getLogger(__name__)

Remeasure = Callable[[Ceilings, str], Ceilings]
"""``remeasure(ceilings, device) -> fresh ceilings`` (``device`` as the measurement ran on it, "cuda:0")."""


def profile(
    model: nn.Module,
    inputs: Any,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    mode: Mode = "inference",
    optimizer: Any = None,
    channels_last: bool = False,
    batch: int | None = None,
    budget_s: float = 1.0,
    ceilings: Ceilings | None = None,
    depth: int | None = None,
    name: str | None = None,
    progress: bool = False,
    *,
    amp: str | torch.dtype | None = None,
    loss_fn: Callable[[Any], torch.Tensor] | None = None,
) -> Profile:
    """Count, measure and place every layer of ``model`` on this machine's measured roofline.

    ``model(inputs)`` is one kind of step: hwprof runs it with its own loss (``loss_fn(output)``, default
    the sum of the floating outputs) and ``optimizer`` (a name, an Optimizer class, the caller's own
    optimizer, or a list of them; restored afterwards), and times forward, backward and the optimizer
    step as phases apart (the whole-model time is forward + backward; ``summary["optimizer_step_s"]``
    beside it). For a training step of the user's own, use :func:`profile_step`. ``amp="bf16"|"fp16"``
    runs the forward under ``torch.autocast`` (parameters keep their dtype), counted and measured alike.
    ``ceilings`` None measures them (or reads them from the user cache: :func:`hwprof.measure_ceilings`).
    ``progress=True`` shows a progress bar (tqdm, on stderr) over the stages."""
    from tqdm import tqdm

    from hwprof.measuring.runner import measure

    label = name or type(model).__name__
    bar = tqdm(total=3, desc=f"{label}: measure", disable=not progress, leave=False)
    try:
        m = measure(model, inputs, device=device, mode=mode, optimizer=optimizer, per_layer=True, depth=depth,
                    batch=batch, dtype=dtype, channels_last=channels_last, budget_s=budget_s, per_op=True, amp=amp,
                    loss_fn=loss_fn)
        bar.update()
        bar.set_description(f"{label}: count")
        train = mode == "train"
        c = count(model, inputs, backward=train, batch=batch, dtype=dtype, mode=mode, amp=m.run.amp, loss_fn=loss_fn,
                  device=torch.device("cuda" if m.math_modes.device_type == "cuda" else "cpu"))
        bar.update()
        bar.set_description(f"{label}: ceilings")
        ceilings = ceilings if ceilings is not None else _ceilings(m.run.device)
        bar.update()
    finally:
        bar.close()
    return trusted_join(c, m, ceilings, name=label)


def _ceilings(device: str) -> Ceilings:
    from hwprof.hardware.ceilings import measure_ceilings

    return measure_ceilings(device=device)


def profile_step(step: Callable[..., Any], *args: Any, models: nn.Module | Mapping[str, nn.Module] | None = None,
                 budget_s: float = 1.0, restore: bool = True, ceilings: Ceilings | None = None,
                 **kwargs: Any) -> Profile:
    """Profile the step the user actually runs: ``step(*args, **kwargs)``, any callable (a training step
    with gradient accumulation, clipping and a scheduler; a GAN's two models and two optimizers; a
    distillation step with its teacher inside the loss; its own ``torch.autocast``).

    Everything inside it is counted (the counter's dispatch mode on the real tensors, so each op has
    the dtype autocast really gave it: forward, backward and optimizer ops), timed (the whole step:
    ``summary["step_time_s"]``, its median over repetitions after warm-up; every module whose forward
    ran, whoever owns it, found with torch's global hooks; per op from the profiler pass), probed for
    memory and joined with the ceilings into the same :class:`Profile` as :func:`profile`. The step's
    time is split into forward, backward, optimizer and not owned by any layer
    (``summary["step_split"]``). ``models`` (a module or a dict name -> module) names the layers;
    without it they are named by where the step found its modules (``generator.conv1``).

    ``restore=True`` (default): every module, optimizer, LR scheduler and GradScaler the step touched,
    and the random generators, are snapshotted before it first runs and put back bit-identical
    afterwards, so profiling does not train the user's model (an iterator the step draws batches from
    does advance). ``restore=False`` leaves the effects of all repetitions in place."""
    from hwprof.counting.counter import count_step
    from hwprof.measuring.runner import measure_step
    from hwprof.stepping.unit import prepare_step

    prepared = prepare_step(step, args, kwargs, models=models, restore=restore)
    try:
        m = measure_step(prepared, budget_s=budget_s)
        c = count_step(prepared)
    finally:
        prepared.restore()
    k = ceilings if ceilings is not None else _ceilings(m.run.device)
    return trusted_join(c, m, k, name=prepared.label)


def _remeasure(k: Ceilings, device: str) -> Ceilings:
    """The ceilings measured afresh, into the cache folder ``k`` was read from."""
    from hwprof.hardware.ceilings import measure_ceilings

    return measure_ceilings(device=device, refresh=True, quick=k.quick,
                            cache_dir=Path(k.cache_file).parent if k.cache_file else None)


def trusted_join(count: CountResult, measurement: Measurement, ceilings: Ceilings, *, name: str | None = None,
                 remeasure: Remeasure = _remeasure) -> Profile:
    """:func:`hwprof.join`; when it finds a FLOP rate above a compute roof of ceilings read from the
    cache, the ceilings are re-measured once (``remeasure``) and the records joined again. Whatever
    the last join still finds is logged and kept in the profile (notes, ``summary["roof_violations"]``).

    Layers above the memory roof are warned about but do not trigger a re-measure: on CPUs small
    tensors served from cache run above the DRAM bandwidth in every run, and re-measuring the
    bandwidth each time would undo the cache."""
    p = _join(count, measurement, ceilings, name=name)
    compute = [v for v in p.summary["roof_violations"] if v["unit"] == "FLOP/s"]
    if compute and ceilings.source == "cache":
        what = ", ".join(v["what"] for v in compute[:3])
        log.warning("measured rates contradict the cached ceilings of %s (%s, measured %s): %s; re-measuring them "
                    "once", ceilings.device_name, ceilings.cache_file or "cache", ceilings.date, what)
        fresh = remeasure(ceilings, measurement.run.device)
        fresh = dataclasses.replace(fresh, notes=[*fresh.notes, f"re-measured: the cached ceilings of "
                                                  f"{ceilings.date} were contradicted by {what}"])
        p = _join(count, measurement, fresh, name=name)
    for w in p.warnings:
        log.warning(w)
    return p
