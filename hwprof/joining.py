"""``hwprof.join`` (this module: ``hwprof.joining``, so that the package attribute stays the function):
counts + a measurement + ceilings, joined per layer into a :class:`Profile`.

    count (CountResult)        ->  per-layer FLOPs, bytes (self: the layer's own ops), op class, variant
    measurement (Measurement)  ->  per-layer self times, whole-model phase times, per-op times,
                                   the math modes (TF32 switches) the run ran under
    ceilings (Ceilings)        ->  compute roofs per dtype/math mode, memory levels, op overhead
    join + derive              ->  achieved FLOP/s, bytes/s, intensity, attainable, efficiency, bound
    predict                    ->  predicted time per op, layer and whole model (hwprof.predict)

Each op and layer is held to the bandwidth of the memory level its working set fits in (bytes
touched against each level's effective capacity; a layer's working set is its largest op's:
``working_set_bytes``, ``memory_level``, ``level_bytes_per_s``), so a small tensor served from
the L2 is no longer "above" a DRAM roof. ``predicted_s`` (per op and layer) and
``summary["predicted_time_s"]`` beside ``["whole_model_time_s"]`` come from the counts and the
ceilings alone (:mod:`hwprof.predict`); ``summary["prediction_error"]`` is (predicted - measured) /
measured, and ``summary["by_type"]`` carries the residual per layer class.

:func:`join` is a pure function of those three records: no model, no live torch state (the
compute roof of an op follows the math modes the measurement recorded, not the switches in force
now), so :func:`hwprof.load_profile` (:mod:`hwprof.profile_folder`) rebuilds a :class:`Profile` from the folder :meth:`Profile.save`
wrote. In ``mode="train"`` a layer's headline numbers are forward + backward (FLOPs, bytes,
time); the per-phase columns stay beside them. The optimizer step is timed as a phase but not
split per layer. Whole-model achieved FLOP/s divides all counted FLOPs by the whole-model time
(sum of the timed phases' medians, step excluded), never by the sum of layer times.

Roofs that measured rates contradict: a layer whose achieved FLOP/s exceeds its compute roof, or
whose achieved bytes/s exceeds the memory roof, by more than :data:`LAYER_ROOF_MARGIN` (10%:
per-layer times come from a hooked pass and move by a few percent), or a whole model above its
peak at all, is named in a warning (logged and in the profile's notes) with the roof, the rate and
the command that re-measures the roof; the summary keeps them under ``roof_violations`` and
``roofs_trusted``.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd

from hwprof.counting.counter import CountResult, layer_top_ops
from hwprof.counting.formulas import TENSOR_CLASSES, op_class
from hwprof.hardware.ceilings import Ceilings, refresh_command
from hwprof.measuring.records import Measurement
from hwprof.predict import phases_of, predict_layers, predict_ops, residuals
from hwprof.roofline import MathModes, derive, place, roof_key

__all__ = ["join", "Profile", "RoofViolation", "roof_violations", "LAYER_ROOF_MARGIN", "join_layers", "join_ops", "summarize", "whole_model_time_s"]

log = logging.getLogger(__name__)

LAYER_ROOF_MARGIN = 0.10
"""A layer is reported above a roof when its achieved rate exceeds (1 + margin) x the roof."""

STEP_PHASE = "whole_step"
"""The one timed phase of a user's step (:class:`hwprof.measuring.passes.StepWork`)."""

def _with_classes(count: CountResult) -> CountResult:
    """The count with ``op_class`` on its ops and ``op_class`` + ``variant`` on its layers. Counts
    made by this version carry them; for a count saved without them, the op classes come from the
    formula registry (:func:`hwprof.counting.formulas.op_class`, by op name) and the layer variants
    (depthwise, pointwise, ...), which need the module, are left empty with a note."""
    ops, layers, notes = count.ops, count.layers, list(count.notes)
    if "op_class" in ops and "op_class" in layers and "variant" in layers:
        return count
    if "op_class" not in ops:
        ops = ops.assign(op_class=[op_class(o) for o in ops["op"]])
    if "op_class" not in layers:
        layers = layers.assign(op_class=layer_top_ops(ops)["op_class"].reindex(layers.index).fillna("other"))
    if "variant" not in layers:
        layers = layers.assign(variant="")
        notes.append("layer variants (depthwise, pointwise, ...) unknown: the saved count has no 'variant' column")
    return dataclasses.replace(count, layers=layers, ops=ops, notes=notes)


@dataclass(frozen=True)
class RoofViolation:
    """A measured rate above its roof. ``what``: ``"layer <path>"`` or ``"whole model"``; ``roof_key``:
    a compute roof ("fp32", "tf32", ...; rates in FLOP/s) or ``"memory"`` (the bandwidth roof; rates
    in bytes/s), as ``unit`` says."""

    what: str
    roof_key: str
    roof_per_s: float
    achieved_per_s: float
    unit: Literal["FLOP/s", "B/s"] = "FLOP/s"

    @property
    def compute(self) -> bool:
        return self.unit == "FLOP/s"


@dataclass
class Profile:
    """Per-layer roofline records of one model on one device (:func:`join`'s result)."""

    layers: pd.DataFrame
    summary: dict[str, Any]
    counts: CountResult
    measurement: Measurement
    ceilings: Ceilings
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    ops: pd.DataFrame = field(default_factory=pd.DataFrame)
    """One row per counted aten op: the counts, ``time_s`` from the profiler pass where the op
    could be matched (NaN otherwise) and the same derived roofline columns as ``layers``."""
    warnings: list[str] = field(default_factory=list)
    """The roof warnings among ``notes`` (rates above their roofs)."""

    def save(self, directory: str | Path, command: str | None = None, html: bool = True) -> list[Path]:
        """Write the folder complete or not at all (:func:`hwprof.files.atomic_dir`): layers/ops CSV,
        ``profile.json``, the Markdown report, roofline + time plots (PNG/SVG), a manifest, the
        interactive ``report.html`` (unless ``html`` is False; without plotly a note says why it is
        missing), the Chrome trace ``trace.json`` (Perfetto), and the three records
        :func:`load_profile` rebuilds the profile from (``count.json``, ``measurement.json``,
        ``ceilings.json``). Returns the paths written."""
        from hwprof.profile_folder import save_profile

        return save_profile(self, directory, command, html)


# ----------------------------------------------------------------------------- the join
def join(count: CountResult, measurement: Measurement, ceilings: Ceilings, *, name: str | None = None) -> Profile:
    """Place every layer and op of ``count`` on the roofline of ``ceilings`` with the times of
    ``measurement``: a pure function of the three records (see the module docstring). Rates above
    their roofs are logged as warnings and kept in the profile's notes and summary."""
    p = _join(count, measurement, ceilings, name=name)
    for w in p.warnings:
        log.warning(w)
    return p


def _join(count: CountResult, m: Measurement, k: Ceilings, *, name: str | None) -> Profile:
    c = _with_classes(count)
    step = m.config.kind == "step"
    train = bool(c.config.get("backward")) if step else m.config.mode == "train"
    bw = k.bytes_per_s if k.bytes_per_s is not None else math.nan
    ops = predict_ops(join_ops(c.ops, m.ops, m.math_modes), k, m.math_modes)
    layers = with_prediction(join_layers(c, m.layers, train, m.math_modes), ops, train, k, step)
    layers = derive(layers, k.flop_per_s, bw)
    ops = derive(ops, k.flop_per_s, bw)
    summary = summarize(layers, c, whole_model_time_s(m.phases, train), k, train, ops, step)
    summary.update(time_split(m, c))
    summary["layer_sum_paired"] = paired_layer_ratios(m.layer_sum, train)
    violations = roof_violations(layers, summary)
    summary["roof_violations"] = [dataclasses.asdict(v) for v in violations]
    summary["ceilings_flagged"] = list(k.flagged)
    summary["roofs_trusted"] = not violations and not k.flagged
    warnings = roof_warnings(violations, k, m.run.device)
    notes = [*m.notes, *c.notes, *k.notes, *warnings]
    return Profile(layers, summary, c, m, k, _config(m, name), notes, ops, warnings)


def _config(m: Measurement, name: str | None) -> dict[str, Any]:
    cfg, modes = m.config, m.math_modes
    return {"model": name or m.run.model, "kind": cfg.kind, "device": m.run.device.split(":")[0], "mode": cfg.mode,
            "dtype": m.run.dtype, "amp": m.run.amp, "optimizer": cfg.optimizer_name, "channels_last": cfg.channels_last,
            "batch": m.run.batch, "budget_s": cfg.budget_s,
            "math_modes": {"cudnn_tf32": modes.cudnn_tf32, "matmul_tf32": modes.matmul_tf32}}


def join_ops(counted: pd.DataFrame, measured: pd.DataFrame, modes: MathModes) -> pd.DataFrame:
    """Counted ops (with ``op_class``) with their measured ``time_s``, matched per phase in dispatch order.

    The measured pass may run a few ops the count does not (the loss ``sum`` and its seed
    gradient, for instance), so the two op-name sequences are aligned with
    ``difflib.SequenceMatcher``; counted ops left unmatched keep NaN time. Adds ``roof_key``."""
    out = counted.copy()
    out["time_s"] = float("nan")
    for phase in ("fwd", "bwd", "opt"):
        c_idx = out.index[out["phase"] == phase]
        m_sel = measured[measured["phase"] == phase] if len(measured) else measured
        if not len(c_idx) or not len(m_sel):
            continue
        a, b = list(out.loc[c_idx, "op"]), list(m_sel["op"])
        times = list(m_sel["time_s"])
        for block in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks():
            for i in range(block.size):
                out.loc[c_idx[block.a + i], "time_s"] = times[block.b + i]
    out["roof_key"] = [roof_key(d or "float32", o, modes) for d, o in zip(out["dtype"], out["op_class"], strict=True)]
    return out


def join_layers(c: CountResult, times: pd.DataFrame, train: bool, modes: MathModes) -> pd.DataFrame:
    """One row per module that ran and does work of its own: counts (self) + measured self times.

    Headline ``flops``/``bytes``/``time_s`` are forward (inference) or forward + backward (train).
    ``roof_key`` names the compute roof of the layer's class and dtype under ``modes``
    (:func:`hwprof.roofline.roof_key`); ``c`` carries ``op_class`` and ``variant`` columns.
    """
    lay = c.layers
    own = (lay["flops_fwd"] + lay["bytes_fwd"] + lay["flops_bwd"] + lay["bytes_bwd"]) > 0
    rows = lay[(lay["calls"] > 0) & (lay["is_leaf"] | own)].copy()
    t = times.reindex(rows.index) if len(times) else pd.DataFrame(index=rows.index, columns=["fwd_s", "bwd_s"])
    rows["fwd_s"] = t["fwd_s"].astype(float)
    rows["bwd_s"] = t["bwd_s"].astype(float) if train else 0.0
    rows["flops"] = rows["flops_fwd"] + (rows["flops_bwd"] if train else 0)
    rows["macs"] = rows["macs_fwd"] + (rows["macs_bwd"] if train else 0)
    rows["bytes"] = rows["bytes_fwd"] + (rows["bytes_bwd"] if train else 0)
    rows["time_s"] = rows["fwd_s"].fillna(0) + (rows["bwd_s"].fillna(0) if train else 0)
    total_t = rows["time_s"].sum()
    rows["time_share"] = rows["time_s"] / total_t if total_t > 0 else 0.0
    total_f = rows["flops"].sum()
    rows["flops_share"] = rows["flops"] / total_f if total_f > 0 else 0.0
    rows["op_class"] = rows.pop("op_class").fillna("other")
    rows["dtype"] = layer_top_ops(c.ops)["dtype"].reindex(rows.index).fillna("float32")
    rows["roof_key"] = [roof_key(d, o, modes) for d, o in zip(rows["dtype"], rows["op_class"], strict=True)]
    rows["variant"] = rows.pop("variant").fillna("")
    rows["uncounted_calls"] = rows["uncounted_calls_fwd"] + (rows["uncounted_calls_bwd"] if train else 0)
    return rows


def with_prediction(rows: pd.DataFrame, ops: pd.DataFrame, train: bool, k: Ceilings,
                    step: bool = False) -> pd.DataFrame:
    """Layer rows with their predicted time (the sum over their own ops in the headline phases,
    :func:`hwprof.predict.predict_layers`) and their memory level: the level of their largest op's
    working set (:func:`hwprof.roofline.place`). A layer without ops of its own (a view such as
    Flatten) is predicted 0 s; one whose ops could not be predicted (a roof the ceilings lack) NaN."""
    pred = predict_layers(ops, phases_of(train, step))
    has_ops = rows.index.isin(pred.index)
    pred = pred.reindex(rows.index)
    out = rows.assign(predicted_s=pred["predicted_s"].astype(float).where(has_ops, 0.0),
                      working_set_bytes=pred["working_set_bytes"].astype(float))   # NaN: no op, no level
    return place(out, k.memory_levels())


def whole_model_time_s(phases: pd.DataFrame, train: bool) -> float:
    """Median time of the timed forward (+ backward) phases, the optimizer step excluded; for a user's step
    the median of the whole step (``whole_step``: forward, backward, optimizers and everything else)."""
    if STEP_PHASE in phases.index:
        return float(phases.loc[STEP_PHASE, "median_s"])
    names = ["fwd", "bwd"] if train else ["fwd_nograd"]
    return float(sum(phases.loc[n, "median_s"] for n in names if n in phases.index))


def time_split(m: Measurement, c: CountResult) -> dict[str, Any]:
    """What the whole time holds. A user's step: ``step_time_s`` (the ``whole_step`` median) and
    ``step_split`` (seconds of one hooked step inside the modules' forwards, their backward nodes, the
    optimizers and the rest, medians over the per-layer pass's pairs, and ``hooked_over_whole``, what
    the hooks added); a model: ``optimizer_in_whole_time`` (False: the ``step`` phase is timed apart)
    and ``optimizer_step_s`` (its median, None without an optimizer)."""
    if m.config.kind == "step":
        s = m.layer_sum
        split = {part: s.get(f"step_{part}") for part in ("fwd_s", "bwd_s", "optimizer_s", "not_owned_s", "hooked_s")}
        return {"step_time_s": float(m.phases.loc[STEP_PHASE, "median_s"]), "optimizer_in_whole_time": True,
                "step_split": {**split, "hooked_over_whole": s.get("step_hooked_ratio")},
                "flops_optimizer": float(c.totals.get("flops_opt", 0))}
    step_s = float(m.phases.loc["step", "median_s"]) if "step" in m.phases.index else None
    return {"optimizer_in_whole_time": False, "optimizer_step_s": step_s}


def summarize(layers: pd.DataFrame, c: CountResult, whole_s: float, k: Ceilings,
              train: bool, ops: pd.DataFrame | None = None, step: bool = False) -> dict[str, Any]:
    """Whole-model figures and the by-type breakdown, all computed from the records.

    The whole model's peak is the roof most of its tensor-class layers (conv, matmul, attention,
    rnn) use, else fp32. The share of time taken by ops without a formula comes from the per-op
    times when they were measured, else (coarser) from the time of the layers that ran such ops."""
    flops = float(c.totals["flops_fwd"] + (c.totals["flops_bwd"] if train else 0)
                  + (c.totals.get("flops_opt", 0) if step else 0))
    main_key = layers.loc[layers["op_class"].isin(list(TENSOR_CLASSES)), "roof_key"].mode()
    peak_key = str(main_key.iloc[0]) if len(main_key) else "fp32"
    peak = float(k.flop_per_s.get(peak_key, float("nan")))
    by = layers.assign(kind=[v or t for v, t in zip(layers["variant"], layers["type"], strict=True)])
    by_type = by.groupby("kind").agg(time_s=("time_s", "sum"), flops=("flops", "sum"), layers=("type", "size"))
    by_type["time_share"] = by_type["time_s"] / by_type["time_s"].sum()
    by_type["flops_share"] = by_type["flops"] / by_type["flops"].sum()
    by_type["achieved_flop_per_s"] = by_type["flops"] / by_type["time_s"].where(by_type["time_s"] > 0)
    if "predicted_s" in by:
        res = residuals(by, "kind")
        by_type = by_type.join(res[["predicted_s", "error", "residual_share"]].rename(
            columns={"error": "prediction_error"}))
    by_type = by_type.sort_values("time_s", ascending=False)
    unc = layers["uncounted_calls"] > 0
    layer_sum = float(layers["time_s"].sum())
    return {
        "whole_model_time_s": whole_s,
        **_predicted(ops, train, whole_s, step),
        "sum_of_layer_times_s": layer_sum,
        "layer_sum_over_whole": layer_sum / whole_s if whole_s else float("nan"),
        "flops": flops,
        "achieved_flop_per_s": flops / whole_s if whole_s else float("nan"),
        "peak_key": peak_key,
        "peak_flop_per_s": peak,
        "fraction_of_peak": (flops / whole_s) / peak if whole_s and peak == peak else float("nan"),
        "bytes_per_s_roof": float(k.bytes_per_s) if k.bytes_per_s is not None else float("nan"),
        "memory_bound_time_share": float(layers.loc[layers["bound"] == "memory", "time_share"].sum()),
        "above_roof_layers": list(layers.index[layers["above_roof"]]),
        "uncounted": dict(c.uncounted),
        "uncounted_time_share": _uncounted_share(layers, unc, ops),
        "ops_matched_share": float(ops["time_s"].notna().mean()) if ops is not None and len(ops) else float("nan"),
        "by_type": by_type,
    }


def paired_layer_ratios(layer_sum: Mapping[str, Any], train: bool) -> dict[str, dict[str, float | None]]:
    """Per timed phase ("fwd", and "bwd" in training): sum of per-layer self times / whole-model time
    from the measurement's paired repetitions (each hooked repetition beside an unhooked one, so the
    ratio holds while the machine's load drifts): ``ratio`` (median over pairs), ``q25``, ``q75`` and
    ``pairs``. Phases the measurement has no pairs for are left out (measurements saved before pairing)."""
    out: dict[str, dict[str, float | None]] = {}
    for ph in ("fwd", "bwd") if train else ("fwd",):
        if layer_sum.get(f"{ph}_paired_ratio") is not None:
            out[ph] = {"ratio": layer_sum[f"{ph}_paired_ratio"], "q25": layer_sum.get(f"{ph}_paired_ratio_q25"),
                       "q75": layer_sum.get(f"{ph}_paired_ratio_q75"), "pairs": layer_sum.get(f"{ph}_pairs")}
    return out


def _predicted(ops: pd.DataFrame | None, train: bool, whole_s: float, step: bool = False) -> dict[str, Any]:
    """``predicted_time_s`` (the sum of the ops' predictions in the headline phases; NaN when an op
    could not be predicted: a roof the ceilings lack), ``prediction_error`` ((predicted - measured)
    / measured) and ``op_overhead_time_s`` (the predicted time that is per-op overhead)."""
    if ops is None or "predicted_s" not in ops:
        return {"predicted_time_s": math.nan, "prediction_error": math.nan, "op_overhead_time_s": math.nan}
    sel = ops[ops["phase"].isin(list(phases_of(train, step)))]
    total = float(sel["predicted_s"].sum()) if len(sel) and sel["predicted_s"].notna().all() else math.nan
    return {"predicted_time_s": total,
            "prediction_error": total / whole_s - 1 if whole_s and total == total else math.nan,
            "op_overhead_time_s": float(sel["overhead_s"].sum()) if len(sel) else math.nan}


def _uncounted_share(layers: pd.DataFrame, unc: pd.Series, ops: pd.DataFrame | None) -> float:
    if ops is not None and len(ops) and ops["time_s"].notna().any():
        t = ops["time_s"].fillna(0.0)
        return float(t[~ops["counted"]].sum() / t.sum()) if t.sum() > 0 else 0.0
    return float(layers.loc[unc, "time_share"].sum())


# ----------------------------------------------------------------------------- rates above roofs
def roof_violations(layers: pd.DataFrame, summary: Mapping[str, Any],
                    margin: float = LAYER_ROOF_MARGIN) -> list[RoofViolation]:
    """Rates above their roofs, largest excess first: layers whose achieved FLOP/s exceeds ``(1 +
    margin)`` x their compute roof, layers whose achieved bytes/s exceeds ``(1 + margin)`` x the
    memory roof (``summary["bytes_per_s_roof"]``), then the whole model when its achieved FLOP/s
    exceeds its peak at all. NaN rates (no time, no bytes) are never above anything.

    The memory roof of a layer is the bandwidth of its memory level (``level_bytes_per_s``, named
    by ``memory_level``) where the layers carry one, else ``summary["bytes_per_s_roof"]`` ("memory")."""
    bw = float(summary["bytes_per_s_roof"])
    checks: tuple[tuple[str | None, str, Literal["FLOP/s", "B/s"]], ...] = (
        ("compute_roof_flop_per_s", "achieved_flop_per_s", "FLOP/s"), (None, "achieved_bytes_per_s", "B/s"))
    level_bw = layers["level_bytes_per_s"].fillna(bw) if "level_bytes_per_s" in layers else pd.Series(bw, index=layers.index)
    level = layers["memory_level"].replace("", "memory") if "memory_level" in layers else pd.Series("memory", index=layers.index)
    found = []
    for roof_col, rate_col, unit in checks:
        roof = layers[roof_col] if roof_col else level_bw
        ratio = layers[rate_col] / roof
        for path in ratio.index[ratio > 1 + margin]:
            key = str(layers.loc[path, "roof_key"]) if roof_col else str(level[path])
            found.append((float(ratio[path]), RoofViolation(f"layer {path or '(root)'}", key, float(roof[path]),
                                                            float(layers.loc[path, rate_col]), unit)))
    out = [v for _, v in sorted(found, key=lambda rv: -rv[0])]
    rate, peak = float(summary["achieved_flop_per_s"]), float(summary["peak_flop_per_s"])
    if rate > peak:   # NaN compares False
        out.append(RoofViolation("whole model", str(summary["peak_key"]), peak, rate))
    return out


def _rate(x: float, unit: str = "FLOP/s") -> str:
    """A rate with an SI prefix (base 1000): 1.634e11 -> '163.4 GFLOP/s'."""
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= factor:
            return f"{x / factor:.1f} {prefix}{unit}"
    return f"{x:.1f} {unit}"


def roof_warnings(violations: Sequence[RoofViolation], k: Ceilings, device: str) -> list[str]:
    """One warning per roof the layers exceed, and one for the whole model: the roof, the rate,
    where the ceilings came from and the command that re-measures them."""
    origin = f"ceilings: {k.source}, {k.date}"
    fix = f"re-measure the ceilings with `{refresh_command(device)}` on a quiet machine"
    why = {"FLOP/s": "a roof measured under load is too low; a kernel that does fewer operations than counted, "
                     "e.g. Winograd, also runs above it",
           "B/s": "data served from cache runs above the bandwidth of a larger level (an op reading what the one before "
                  "it just wrote); a bandwidth measured under load is too low"}
    out = []
    layers = [v for v in violations if v.what != "whole model"]
    for key in dict.fromkeys(v.roof_key for v in layers):
        top = [v for v in layers if v.roof_key == key]
        verb = "ran above" if top[0].compute else "moved data faster than"
        out.append(f"{len(top)} layer(s) {verb} {1 + LAYER_ROOF_MARGIN:.2f}x the {key} roof of "
                   f"{_rate(top[0].roof_per_s, top[0].unit)} ({origin}), up to {_rate(top[0].achieved_per_s, top[0].unit)}"
                   f" in {top[0].what.removeprefix('layer ')} ({top[0].achieved_per_s / top[0].roof_per_s:.2f}x): "
                   f"{why[top[0].unit]}; {fix}")
    for v in violations:
        if v.what == "whole model":
            out.append(f"the whole model ran at {_rate(v.achieved_per_s)}, above the {v.roof_key} roof of "
                       f"{_rate(v.roof_per_s)} ({origin}): {why['FLOP/s']}; {fix}")
    return out
