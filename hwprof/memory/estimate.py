"""``hwprof.estimate_memory``: four memory predictors side by side, on fake tensors.

Predictors (rows of ``MemoryEstimate.predictors``; each module's docstring has its formula):

* ``seed``           seed 000's naive rule: params x (1 + grad + optimizer states) + feature maps x 2
                     (``hwprof.memory.seed``);
* ``seed_per_layer`` seed 003: params + input + the sum of every leaf module's output;
* ``formula``        closed form from the tensors autograd saves, deduplicated by storage, plus
                     params, grads, optimizer state, inputs and the largest transients
                     (``hwprof.memory.formula``);
* ``simulated``      a replay of the whole step on fake tensors through a model of the CUDA
                     caching allocator: predicted ``max_memory_allocated`` and ``max_memory_reserved``
                     (``hwprof.memory.simulate``, ``hwprof.memory.allocator``).

``MemoryEstimate.components`` (bytes) takes the accounting terms from the formula (params,
buffers, grads, optimizer_state, activations_saved, inputs, transient) and the peak terms from
the simulation (workspace, allocator_rounding, peak_predicted, reserved_predicted): the
components need not add up to the peak, since not everything is live at once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from torch import nn

from hwprof.amp import ambient_amp
from hwprof.memory.formula import Inspection, formula, inspect_forward
from hwprof.memory.seed import seed_per_layer_rule, seed_rule
from hwprof.memory.simulate import simulate
from hwprof.spec import parse_dtype
from hwprof.training import OPTIMIZERS

__all__ = ["PREDICTORS", "COMPONENTS", "MemoryEstimate", "estimate_memory", "predictor_columns"]

logger = logging.getLogger(__name__)

PREDICTORS = ("seed", "seed_per_layer", "formula", "simulated")
#: accounting terms, in bytes (the predictors table names them ``<term>_bytes``)
COMPONENTS = ("params", "buffers", "grads", "optimizer_state", "activations_saved", "inputs", "transient",
              "workspace", "allocator_rounding")


def predictor_columns() -> list[str]:
    """Columns of ``MemoryEstimate.predictors`` in order."""
    return [f"{c}_bytes" for c in COMPONENTS] + ["peak_predicted_bytes", "reserved_predicted_bytes", "notes"]


@dataclass
class MemoryEstimate:
    """Result of :func:`estimate_memory`. All byte values are integers (None: not modelled).

    * ``components``: dict of bytes (see module docstring);
    * ``predictors``: DataFrame, index = predictor, columns = :func:`predictor_columns`;
    * ``layers``: per-module table of the formula pass (params, leaf input/output bytes,
      activations saved); ``saved``: every tensor autograd saved;
    * ``timeline`` / ``phase_peaks``: the simulation's allocation events and per-phase peaks;
    * ``config``: the run being predicted; ``notes``: what was modelled and how.
    """

    components: dict[str, int | None]
    predictors: pd.DataFrame
    layers: pd.DataFrame
    saved: pd.DataFrame
    timeline: pd.DataFrame
    phase_peaks: pd.DataFrame
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    @property
    def peak_bytes(self) -> int:
        """The best prediction of the peak (simulated if it ran, else formula)."""
        return int(self.components["peak_predicted"] or 0)

    @property
    def reserved_bytes(self) -> int | None:
        return self.components.get("reserved_predicted")

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for JSON): config, components, predictors, notes."""
        return {"config": {k: str(v) if isinstance(v, torch.dtype) else v for k, v in self.config.items()},
                "components": dict(self.components),
                "predictors": self.predictors.reset_index().to_dict(orient="records"),
                "notes": list(self.notes)}


def _row(components: dict[str, int | None], notes: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = {f"{c}_bytes": components.get(c) for c in COMPONENTS}
    row["peak_predicted_bytes"] = components.get("peak_predicted")
    row["reserved_predicted_bytes"] = components.get("reserved_predicted")
    row["notes"] = "; ".join(notes)
    return row


def _batch_of(insp: Inspection) -> int | None:
    for t in insp.setup.inputs:
        if isinstance(t, torch.Tensor) and t.dim() > 0:
            return int(t.shape[0])
    return None


def estimate_memory(model: nn.Module, inputs: Any, mode: str = "train", optimizer: str | None = None,
                    dtype: torch.dtype | str = torch.float32, amp: bool | str | torch.dtype = False,
                    batch: int | None = None, device: str = "cuda", predictors: tuple[str, ...] = PREDICTORS,
                    fake_device: str | None = None) -> MemoryEstimate:
    """Predict the memory of one training step (or inference forward) of ``model`` on ``inputs``.

    Args:
        model: any ``nn.Module`` (real, or built under ``torch.device("meta")``); never modified.
        inputs: a tensor, a tuple of tensors, or a spec string like ``"3x224x224"``.
        mode: ``"train"`` (forward, backward, optimizer step) or ``"inference"`` (forward under no_grad).
        optimizer: None (no step), ``"sgd"``, ``"momentum"``, ``"adam"`` or ``"adamw"`` (torch.optim defaults).
        dtype: parameters, buffers and floating inputs; with ``amp=True`` the autocast dtype instead
            (parameters stay fp32; fp16 if ``dtype`` is fp32). ``amp="bf16" | "fp16"`` names the autocast
            dtype itself (``dtype`` is then ignored). Called inside the user's own ``torch.autocast`` region
            for ``device``, the prediction autocasts as that region does.
        batch: batch size for a spec string; for tensors it replaces dimension 0.
        device: the device whose memory is predicted: ``"cuda"`` (the caching allocator is modelled)
            or ``"cpu"`` (exact bytes).
        predictors: which rows to compute.
        fake_device: where the fake tensors live (default the CPU, with CUDA's dropout and attention
            kernels emulated for a CUDA target); ``"cuda"`` replays on fake CUDA tensors where CUDA exists.
    """
    ambient = None if amp else ambient_amp(device)
    if ambient is not None:
        # inside the user's own autocast region: predict the step that region autocasts, exactly as amp= does,
        # on a thread of its own (autocast's state, and its cache of cast weights that a nested region keeps
        # alive past its end, are per thread)
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(1) as pool:
            return pool.submit(estimate_memory, model, inputs, mode, optimizer, dtype, ambient, batch, device,
                               predictors, fake_device).result()
    if isinstance(amp, (str, torch.dtype)):   # amp="bf16": autocast to bf16, the parameters as they are
        dtype, amp = amp, True
    dtype = parse_dtype(dtype)
    if mode not in ("train", "inference"):
        raise ValueError(f"mode must be 'train' or 'inference', got {mode!r}")
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS} or None")
    unknown = set(predictors) - set(PREDICTORS)
    if unknown:
        raise ValueError(f"unknown predictors {sorted(unknown)}; expected some of {PREDICTORS}")
    opt = optimizer if mode == "train" else None
    kw: dict[str, Any] = {"mode": mode, "dtype": dtype, "amp": amp, "batch": batch, "device": device}
    insp = inspect_forward(model, inputs, fake_device=fake_device, **kw)    # InputShapeError if the model fails
    rows: dict[str, dict[str, Any]] = {}
    notes: list[str] = []
    layers = saved = pd.DataFrame()
    formula_comps: dict[str, int | None] | None = None
    if "seed" in predictors:
        r = seed_rule(inspection=insp, mode=mode, optimizer=opt)
        rows["seed"] = _row(r.components, r.notes)
    if "seed_per_layer" in predictors:
        r = seed_per_layer_rule(inspection=insp, mode=mode)
        rows["seed_per_layer"] = _row(r.components, r.notes)
    if "formula" in predictors:
        f = formula(model, inputs, optimizer=opt, inspection=insp, **kw)
        rows["formula"] = _row(f.components, f.notes)
        layers, saved, formula_comps = f.layers, f.saved, f.components
    timeline = phase_peaks = pd.DataFrame()
    sim_comps: dict[str, int | None] | None = None
    fake_device = str(insp.setup.fake_device)
    if "simulated" in predictors:
        try:
            s = simulate(model, inputs, optimizer=opt, fake_device=fake_device, **kw)
        except Exception as e:     # noqa: BLE001 - keep the other predictors; say why this one is missing
            logger.warning("simulated predictor failed: %s", e)
            notes.append(f"simulated predictor failed: {type(e).__name__}: {e}")
            rows["simulated"] = _row({}, [f"failed: {type(e).__name__}"])
        else:
            rows["simulated"] = _row(s.components, s.notes)
            timeline, phase_peaks, sim_comps, fake_device = s.timeline, s.phase_peaks, s.components, s.fake_device
    df = pd.DataFrame.from_dict(rows, orient="index", columns=predictor_columns())
    df.index.name = "predictor"
    df = df.astype({c: "Int64" for c in predictor_columns() if c != "notes"})
    components = _combine(formula_comps, sim_comps, rows)
    config = {"mode": mode, "optimizer": opt, "dtype": str(dtype).replace("torch.", ""), "amp": amp,
              "batch": _batch_of(insp), "device": device, "fake_device": fake_device,
              "n_params": insp.setup.n_params, "torch": torch.__version__}
    return MemoryEstimate(components, df, layers, saved, timeline, phase_peaks, config, notes)


def _combine(formula_comps: dict[str, int | None] | None, sim_comps: dict[str, int | None] | None,
             rows: dict[str, dict[str, Any]]) -> dict[str, int | None]:
    """Accounting terms from the formula, peak terms from the simulation (see module docstring)."""
    out: dict[str, int | None] = {c: None for c in COMPONENTS}
    out["peak_predicted"] = out["reserved_predicted"] = None
    base = formula_comps or sim_comps
    if base is None and rows:                      # only seed rows were asked for
        first = next(iter(rows.values()))
        return {**out, **{c: first.get(f"{c}_bytes") for c in COMPONENTS},
                "peak_predicted": first["peak_predicted_bytes"]}
    if base is not None:
        out.update({c: base.get(c) for c in COMPONENTS})
        out["peak_predicted"] = base.get("peak_predicted")
    if sim_comps is not None:
        for c in ("workspace", "allocator_rounding", "peak_predicted", "reserved_predicted"):
            out[c] = sim_comps.get(c)
    return out
