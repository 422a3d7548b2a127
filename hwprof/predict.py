"""``hwprof predict``: time predicted from the counts and a ceilings record, before anything runs.

The roofline read as a model of time (Williams et al., CACM 2009): an op doing ``F`` FLOPs and
touching ``W`` bytes cannot finish before both its arithmetic and its traffic are done, and every
op pays a fixed cost to start. Per aten op of the count (each op its own kernel, as the counter's
bytes assume):

    compute_s   = F / P[roof_key]            P: the compute roof of the op's class, dtype and math mode
    memory_s    = W / B[level(W)]            B: the bandwidth of the level W fits in (cache-aware:
                                                hwprof.roofline.place), W = bytes read + written
    predicted_s = max(compute_s, memory_s) + op_overhead_s

``op_overhead_s`` is the measured time of an empty op on the device (``Ceilings.op_overhead_s``:
dispatch on a CPU, the kernel launch on a GPU). A layer's prediction is the sum over its own ops
(forward; + backward in train mode), the whole model's the sum over all ops; the optimizer step is
not predicted (as the measured whole-model time leaves it out). An op without a FLOP formula is
predicted from its bytes alone (its compute term is 0, and the notes say how many).

``predicted_bound`` names the term that sets an op's time: "compute", "memory", or "overhead"
when the fixed cost exceeds both. The model assumes every kernel reaches its roofs: a kernel that
does not (a depthwise convolution far below both roofs, a fused kernel doing less than counted)
is where prediction and measurement part, and :func:`residuals` says by how much per layer class.

Calibrated prediction (optional): the measured efficiency of each layer kind against this model,

    efficiency[key] = sum(predicted_s) / sum(measured time_s)     over the key's layers in saved profiles
    calibrated_s    = predicted_s / efficiency[key]

fitted on profiles measured on the same machine (:func:`fit_efficiency`). A layer's key is the
narrowest of: its kind and dtype ("depthwise|float32"), its kind, its op class and dtype
("class:matmul|bfloat16"), its op class, that the profiles hold at least :data:`MIN_LAYERS` layers
of; with none the layer keeps the roofline prediction (and the notes name its kind). Kernels of
one kind run at very different fractions of their roofs per dtype (a bf16 convolution against
the AMX GEMM roof), hence the dtype in the first key.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from hwprof.counting.counter import CountResult
from hwprof.device import MathModes
from hwprof.errors import HwprofError
from hwprof.hardware.ceilings import Ceilings
from hwprof.roofline import place, roof_key

__all__ = ["Prediction", "predict", "predict_ops", "predict_layers", "residuals", "PREDICT_COLUMNS", "phases_of",
           "fit_efficiency", "calibrated", "layer_kind", "MIN_LAYERS", "uncalibrated_kinds"]

PREDICT_COLUMNS = ("working_set_bytes", "memory_level", "level_bytes_per_s", "compute_s", "memory_s", "overhead_s",
                   "predicted_s", "predicted_bound")
"""The columns :func:`predict_ops` adds to an op table."""


def phases_of(train: bool, step: bool = False) -> tuple[str, ...]:
    """The phases a prediction sums: forward, and backward in train mode; a user's step also its optimizers
    (``opt``: in a step they are part of the time measured)."""
    if step:
        return ("fwd", "bwd", "opt")
    return ("fwd", "bwd") if train else ("fwd",)


def predict_ops(ops: pd.DataFrame, ceilings: Ceilings, modes: MathModes | None = None) -> pd.DataFrame:
    """A copy of an op table (counter columns ``op``, ``dtype``, ``flops``, ``bytes``, ``op_class``;
    ``roof_key`` when already set) with the :data:`PREDICT_COLUMNS` of the module docstring.

    ``modes``: the math modes the ops run under (None: the device's defaults, TF32 off for
    matmuls and on for cuDNN convolutions). An op whose roof the ceilings lack gets NaN times."""
    modes = modes or MathModes(ceilings.device_type, True, False)
    out = ops.copy()
    if "roof_key" not in out:
        out["roof_key"] = [roof_key(d or "float32", c, modes) for d, c in zip(out["dtype"], out["op_class"], strict=True)]
    out["working_set_bytes"] = out["bytes"].astype(float)
    out = place(out, ceilings.memory_levels())
    roof = out["roof_key"].map(lambda k: ceilings.flop_per_s.get(k, math.nan)).astype(float)
    flops = out["flops"].astype(float).fillna(0.0)
    out["compute_s"] = np.where(flops > 0, flops / roof, 0.0)
    out["memory_s"] = out["working_set_bytes"] / out["level_bytes_per_s"]
    out["overhead_s"] = float(ceilings.op_overhead_s or 0.0)
    slowest = np.maximum(out["compute_s"], out["memory_s"])   # NaN propagates: no roof, no level
    out["predicted_s"] = slowest + out["overhead_s"]
    out["predicted_bound"] = np.where(slowest.isna(), "",
                                      np.where(out["overhead_s"] > slowest, "overhead",
                                               np.where(out["compute_s"] >= out["memory_s"], "compute", "memory")))
    return out


def layer_kind(layers: pd.DataFrame) -> pd.Series:
    """A layer's kind: its conv variant ("depthwise", "pointwise", ...) or else its module type."""
    variant = layers["variant"].fillna("") if "variant" in layers else pd.Series("", index=layers.index)
    return pd.Series([v or t for v, t in zip(variant, layers["type"], strict=True)], index=layers.index, dtype=object)


MIN_LAYERS = 3
"""Layers a calibration key needs before its efficiency is used (else the next, broader key)."""


def _keys(layers: pd.DataFrame) -> list[tuple[str, ...]]:
    """Per layer its calibration keys, narrowest first: kind and dtype, kind, op class and dtype, op class."""
    n = len(layers)
    dtype = layers["dtype"].fillna("").astype(str) if "dtype" in layers else pd.Series([""] * n, index=layers.index)
    op_class = layers["op_class"].fillna("other").astype(str) if "op_class" in layers else pd.Series(["other"] * n,
                                                                                                       index=layers.index)
    return [(f"{k}|{d}", k, f"class:{c}|{d}", f"class:{c}")
            for k, d, c in zip(layer_kind(layers), dtype, op_class, strict=True)]


def fit_efficiency(profiles_layers: Iterable[pd.DataFrame], min_layers: int = MIN_LAYERS) -> dict[str, float]:
    """``sum(predicted_s) / sum(time_s)`` per calibration key (``"<kind>|<dtype>"``, ``"<kind>"``,
    ``"class:<op_class>|<dtype>"``, ``"class:<op_class>"``) over the layers of the given per-layer
    tables (a profile's ``layers``) that have a measured time and a prediction; a key with fewer
    than ``min_layers`` layers is left out. 1 when the roofline model is right about those layers,
    0.4 when they take 2.5x what it predicts."""
    sums: dict[str, list[float]] = {}
    for lay in profiles_layers:
        if "predicted_s" not in lay:
            continue
        ok = lay[(lay["time_s"] > 0) & (lay["predicted_s"] > 0)]
        for keys, p, t in zip(_keys(ok), ok["predicted_s"], ok["time_s"], strict=True):
            for key in keys:
                acc = sums.setdefault(key, [0.0, 0.0, 0])
                acc[0], acc[1], acc[2] = acc[0] + float(p), acc[1] + float(t), acc[2] + 1
    return {key: pred / meas for key, (pred, meas, n) in sums.items() if n >= min_layers}


def uncalibrated_kinds(layers: pd.DataFrame, efficiency: Mapping[str, float]) -> list[str]:
    """The kinds of the layers no key of which has an efficiency (they keep the roofline prediction)."""
    return sorted({k for k, keys in zip(layer_kind(layers), _keys(layers), strict=True)
                   if not any(x in efficiency for x in keys)})


def calibrated(layers: pd.DataFrame, efficiency: Mapping[str, float]) -> pd.Series:
    """``predicted_s / efficiency`` per layer, with the efficiency of its narrowest key that has one
    (:func:`fit_efficiency`); a layer with none keeps ``predicted_s``."""
    e = [next((efficiency[k] for k in keys if k in efficiency), 1.0) for keys in _keys(layers)]
    return layers["predicted_s"] / pd.Series(e, index=layers.index, dtype=float)


def predict_layers(ops: pd.DataFrame, phases: Sequence[str]) -> pd.DataFrame:
    """Per module (index), sums of :func:`predict_ops`'s ``predicted_s``, ``compute_s``,
    ``memory_s``, ``overhead_s`` over its own ops in ``phases``, the op count, and the largest op
    working set (``working_set_bytes``: what one of its kernels touches)."""
    sel = ops[ops["phase"].isin(list(phases))]
    if sel.empty:
        return pd.DataFrame(columns=["predicted_s", "compute_s", "memory_s", "overhead_s", "predicted_ops",
                                     "working_set_bytes"])
    g = sel.groupby("module", sort=False)
    out = g[["predicted_s", "compute_s", "memory_s", "overhead_s"]].sum(min_count=1)
    out["predicted_ops"] = g.size()
    out["working_set_bytes"] = g["working_set_bytes"].max()
    return out


@dataclass
class Prediction:
    """Predicted times of one model on one device (:func:`predict`): ``ops`` (every counted op with
    the :data:`PREDICT_COLUMNS`), ``layers`` (per module: type, variant, FLOPs, bytes and the sums of
    :func:`predict_layers`), ``total_s`` (the whole model), the ``ceilings`` used and ``notes``."""

    ops: pd.DataFrame
    layers: pd.DataFrame
    total_s: float
    ceilings: Ceilings
    train: bool
    notes: list[str] = field(default_factory=list)
    calibrated_total_s: float | None = None
    """With efficiencies: the sum of the layers' ``calibrated_s`` (see the module docstring)."""

    def by(self, column: str = "kind") -> pd.DataFrame:
        """Predicted time per value of a layer column ("kind": the conv variant or the module type;
        "memory_level"; ...), with its share of the whole, largest first."""
        g = self.layers.groupby(column)["predicted_s"].agg(["sum", "size"]).rename(
            columns={"sum": "predicted_s", "size": "layers"})
        g["share"] = g["predicted_s"] / self.total_s if self.total_s > 0 else math.nan
        return g.sort_values("predicted_s", ascending=False)


def predict(count: CountResult, ceilings: Ceilings, *, train: bool = False, modes: MathModes | None = None,
            efficiency: Mapping[str, float] | None = None) -> Prediction:
    """Predict the time of the counted model on the device of ``ceilings`` (module docstring).

    ``count`` carries an ``op_class`` column on its ops and ``variant`` on its layers (the counter
    adds them; a count saved without them gets them from :func:`hwprof.profile_folder.load_profile`).
    ``train``: sum forward and backward ops (count with ``backward=True``). ``efficiency``: per
    layer kind (:func:`fit_efficiency`), adds ``calibrated_s`` to the layers. Raises
    :class:`~hwprof.errors.HwprofError` when the ceilings lack a roof the ops need."""
    if "op_class" not in count.ops:
        raise HwprofError("the count has no 'op_class' column (a count saved by an older hwprof): load it with "
                          "hwprof.load_profile, which adds it from the formula registry")
    ops = predict_ops(count.ops, ceilings, modes)
    phases = phases_of(train)
    used = ops[ops["phase"].isin(list(phases))]
    missing = sorted(set(used.loc[used["compute_s"].isna(), "roof_key"]))
    if missing:
        raise HwprofError(f"the ceilings of {ceilings.device_name} have no {', '.join(missing)} roof, which "
                          f"{int(used['compute_s'].isna().sum())} ops need (roofs: {sorted(ceilings.flop_per_s)})")
    if used["memory_s"].isna().any():
        raise HwprofError(f"the ceilings of {ceilings.device_name} have no memory bandwidth")
    lay = count.layers
    variant = lay["variant"] if "variant" in lay else pd.Series("", index=lay.index)
    layers = pd.DataFrame({"type": lay["type"], "variant": variant.fillna(""),
                           "op_class": lay["op_class"].fillna("other") if "op_class" in lay else "other",
                           "dtype": used.groupby("module")["dtype"].first().reindex(lay.index)})
    layers["kind"] = layer_kind(layers)
    layers = layers.join(used.groupby("module")[["flops", "bytes"]].sum(min_count=1), how="inner")
    layers = place(layers.join(predict_layers(used, phases), how="inner"), ceilings.memory_levels())
    notes = list(ceilings.notes)
    unc = int((~used["counted"]).sum()) if "counted" in used else 0
    if unc:
        notes.append(f"{unc} ops without a FLOP formula predicted from their bytes alone")
    total = None
    if efficiency is not None:
        layers["calibrated_s"] = calibrated(layers, efficiency)
        total = float(layers["calibrated_s"].sum())
        bare = uncalibrated_kinds(layers, efficiency)
        if bare:
            notes.append(f"no measured efficiency for {', '.join(bare)}: those layers keep the roofline prediction")
    return Prediction(used, layers, float(used["predicted_s"].sum()), ceilings, train, notes, total)


def residuals(layers: pd.DataFrame, by: str, measured: str = "time_s", predicted: str = "predicted_s") -> pd.DataFrame:
    """Per value of ``by``: measured and predicted time summed over its layers, the prediction's
    error ``(predicted - measured) / measured`` and its share of the total absolute residual
    (which classes the model gets wrong, and how much of the whole-model gap each one makes).
    Rows without a measured time are left out; largest measured time first."""
    rows = layers[layers[measured].notna() & (layers[measured] > 0)]
    g = rows.groupby(by).agg(layers=(measured, "size"), time_s=(measured, "sum"), predicted_s=(predicted, "sum"))
    g["error"] = g["predicted_s"] / g["time_s"] - 1
    gap = (g["predicted_s"] - g["time_s"]).abs()
    g["residual_share"] = gap / gap.sum() if gap.sum() > 0 else 0.0
    return g.sort_values("time_s", ascending=False)
