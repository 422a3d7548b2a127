"""What ``hwprof profile`` shows: the per-layer table, a plain-language summary computed from
the records, the Markdown report, and the MobileNetV1-vs-dense-twin comparison of the default run."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import pandas as pd

from hwprof.report.tables import human, render

if TYPE_CHECKING:
    from hwprof.joining import Profile

__all__ = ["terminal_table", "op_table", "summary_lines", "markdown_report", "variant_shares", "comparison_lines",
           "phase_table", "memory_table", "memory_line", "memory_lines", "level_lines", "prediction_lines"]

MIB = 2**20


def _paired_text(paired: dict[str, Any]) -> str:
    """'; paired with unhooked reps: fwd 96% (q25-q75 93-99%, 10 pairs)' or '' without pairs."""
    parts = [f"{ph} {_pct(r['ratio'])} (q25-q75 {_pct(r['q25'])}-{_pct(r['q75'])}, {r['pairs']} pairs)"
             for ph, r in paired.items()]
    return "; each hooked rep beside an unhooked one: " + ", ".join(parts) if parts else ""


def _pct(x: float) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.1f}%"


def _ms(x: float) -> str:
    return "-" if x != x else f"{x * 1e3:.3f} ms"


def terminal_table(p: Profile, top: int | None = None) -> pd.DataFrame:
    """name, type, shape, FLOPs, time, predicted time, achieved FLOP/s, % of roof, intensity,
    memory level, bound (strings)."""
    lay = p.layers.sort_values("time_s", ascending=False) if top else p.layers
    if top:
        lay = lay.head(top)
    df = pd.DataFrame({
        "type": [f"{t}/{v}" if v else t for t, v in zip(lay["type"], lay["variant"], strict=True)],
        "output": lay["output_shapes"],
        "flops": lay["flops"].map(human),
        "time": lay["time_s"].map(_ms),
        "predicted": lay["predicted_s"].map(_ms) if "predicted_s" in lay else "-",
        "time%": lay["time_share"].map(_pct),
        "flop/s": lay["achieved_flop_per_s"].map(human),
        "%roof": lay["pct_of_compute_roof"].map(lambda x: "-" if x != x else f"{x:.2f}%"),
        "roof": lay["roof_key"],
        "AI": lay["intensity"].map(lambda x: "-" if x != x else f"{x:.2f}"),
        "level": lay["memory_level"] if "memory_level" in lay else "",
        "bound": lay["bound"] + lay["above_roof"].map(lambda f: " ABOVE ROOF" if f else ""),
    }, index=lay.index.map(lambda s: s or "(root)"))
    df.index.name = "layer"
    return df


def summary_lines(p: Profile) -> list[str]:
    """A short summary whose every number comes from the profile."""
    s = p.summary
    k = p.ceilings
    roofs = ", ".join(f"{key} {human(v)}FLOP/s" + (" (flagged)" if key in k.flagged else "")
                      for key, v in k.flop_per_s.items())
    lines = [
        f"device {k.device_name}: roofs {roofs}, bandwidth {human(k.bytes_per_s)}B/s ({k.source})",
        *level_lines(p),
        *whole_time_lines(p),
        *prediction_lines(p),
        f"sum of per-layer times {s['sum_of_layer_times_s'] * 1e3:.3f} ms = {_pct(s['layer_sum_over_whole'])} of the "
        "whole-model time (from the hooked pass: below 100%, time between layers that no layer owns; "
        "above, the hooks' own overhead)" + _paired_text(s.get("layer_sum_paired") or {}),
    ]
    by = s["by_type"]
    top = by.head(4)
    lines.append("time vs FLOPs by layer type: " + "; ".join(
        f"{kind} {_pct(r.time_share)} of time / {_pct(r.flops_share)} of FLOPs" for kind, r in top.iterrows()))
    lay = p.layers
    hog = lay.sort_values("time_s", ascending=False).head(3)
    lines.append("slowest layers: " + ", ".join(
        f"{n or '(root)'} ({_pct(r.time_share)} of time, {_pct(r.flops_share)} of FLOPs)" for n, r in hog.iterrows()))
    lines.append(f"memory-bound layers take {_pct(s['memory_bound_time_share'])} of the layer time")
    above = lay[lay["above_roof"]].sort_values("time_s", ascending=False)
    if len(above):
        names = ", ".join(n or "(root)" for n in above.index[:5]) + (", ..." if len(above) > 5 else "")
        lines.append(
            f"ABOVE ROOF: {len(above)} layers ({_pct(float(above['time_share'].sum()))} of the time) ran faster than "
            f"their roof allows: data still in a faster level than their working set was placed in (left there by "
            f"the op before), fewer operations than counted (Winograd/FFT), or a roof measured low; flagged, not "
            f"clipped: {names}")
    mem = memory_line(p.measurement.memory)
    if mem:
        lines.append(mem)
    if s["uncounted"]:
        lines.append(f"ops without a formula: {s['uncounted']}; they ran in layers holding "
                     f"{_pct(s['uncounted_time_share'])} of the time")
    if s.get("ops_matched_share") == s.get("ops_matched_share"):  # not NaN
        lines.append(f"per-op times (torch.profiler pass): {_pct(s['ops_matched_share'])} of the counted ops "
                     "matched a measured op (the rest keep no time in ops.csv)")
    lines += [f"warning: {n}" if n in p.warnings else f"note: {n}" for n in p.notes]
    return lines


def whole_time_lines(p: Profile) -> list[str]:
    """The whole time and what it holds: a user's step (its median, and one hooked step split into
    forward, backward, optimizer and not owned), or a model (forward + backward; whether the optimizer
    step, timed apart, is in it)."""
    s = p.summary
    rate = (f"{human(s['flops'])}FLOPs = {human(s['achieved_flop_per_s'])}FLOP/s, "
            f"{_pct(s['fraction_of_peak'])} of the {s['peak_key']} peak")
    if "step_time_s" in s:
        sp = s.get("step_split") or {}
        line = [f"step: {s['step_time_s'] * 1e3:.3f} ms (median, the whole step: forward, backward, optimizer and "
                f"everything else) for {rate}"]
        if sp.get("hooked_s"):
            parts = ", ".join(f"{label} {sp[k] * 1e3:.3f} ms ({_pct(sp[k] / sp['hooked_s'])})" for k, label in
                              (("fwd_s", "forward"), ("bwd_s", "backward"), ("optimizer_s", "optimizer"),
                               ("not_owned_s", "not owned by any layer")) if sp.get(k) is not None)
            ratio = sp.get("hooked_over_whole")
            line.append(f"split of a hooked step ({sp['hooked_s'] * 1e3:.3f} ms"
                        + (f", {ratio:.2f}x the unhooked step" if ratio else "") + f"): {parts}")
        return line
    opt = s.get("optimizer_step_s")
    what = "forward + backward" if p.config.get("mode") == "train" else "forward"
    extra = (f"; the optimizer step ({opt * 1e3:.3f} ms, timed apart) is not in it" if opt is not None else
             "; no optimizer step" if p.config.get("mode") == "train" else "")
    return [f"whole model ({what}{extra}): {s['whole_model_time_s'] * 1e3:.3f} ms for {rate}"]


def level_lines(p: Profile) -> list[str]:
    """One line on the memory levels the layers were placed against (none without a sweep)."""
    k = p.ceilings
    if not k.levels:
        return []
    parts = []
    for lv in k.levels:
        bw = f"{human(lv.bytes_per_s)}B/s" if lv.bytes_per_s else "not resolved"
        parts.append(f"{lv.name} {bw}" + (f" up to {human(lv.capacity_bytes, 'B', 1024)}" if lv.capacity_bytes else ""))
    overhead = f"; op overhead {k.op_overhead_s * 1e6:.2f} us" if k.op_overhead_s else ""
    return ["memory levels: " + ", ".join(parts) + overhead]


def prediction_lines(p: Profile) -> list[str]:
    """The whole model's predicted time beside the measured one, and the residual per layer type
    (the classes the roofline model gets most wrong, by their share of the gap)."""
    s = p.summary
    pred = s.get("predicted_time_s", float("nan"))
    if pred != pred:
        return []
    lines = [f"predicted (max(FLOPs / roof, bytes / level bandwidth) + op overhead, per op): {pred * 1e3:.3f} ms vs "
             f"{s['whole_model_time_s'] * 1e3:.3f} ms measured, error {100 * s['prediction_error']:+.1f}% "
             f"({s['op_overhead_time_s'] * 1e3:.3f} ms of it per-op overhead)"]
    by = s["by_type"]
    if "prediction_error" in by:
        top = by.sort_values("residual_share", ascending=False).head(4)
        lines.append("predicted vs measured by layer type (largest share of the gap first): " + "; ".join(
            f"{kind} {r.predicted_s * 1e3:.3f} vs {r.time_s * 1e3:.3f} ms ({100 * r.prediction_error:+.0f}%, "
            f"{_pct(r.residual_share)} of the gap)" for kind, r in top.iterrows()))
    return lines


def variant_shares(p: Profile, variant: str = "depthwise") -> dict[str, Any]:
    """Share of FLOPs and time, achieved FLOP/s, fraction of roof and median intensity of one conv variant."""
    lay = p.layers
    sel = lay[lay["variant"] == variant]
    if sel.empty:
        return {}
    t, f = float(sel["time_s"].sum()), float(sel["flops"].sum())
    roof = float(sel["compute_roof_flop_per_s"].iloc[0])
    return {
        "layers": int(len(sel)),
        "flops_share": f / float(lay["flops"].sum()),
        "time_share": t / float(lay["time_s"].sum()),
        "achieved_flop_per_s": f / t if t > 0 else float("nan"),
        "fraction_of_roof": (f / t) / roof if t > 0 else float("nan"),
        "roof_key": str(sel["roof_key"].iloc[0]),
        "median_intensity": float(sel["intensity"].median()),
        "memory_bound_layers": int((sel["bound"] == "memory").sum()),
    }


def comparison_lines(sep: Profile, dense: Profile) -> list[str]:
    """MobileNetV1 vs its dense twin, every number measured in this run."""
    d = variant_shares(sep, "depthwise")
    lines = []
    if d:
        lines.append(
            f"MobileNetV1: the {d['layers']} depthwise layers hold {_pct(d['flops_share'])} of the FLOPs but take "
            f"{_pct(d['time_share'])} of the layer time, running at {human(d['achieved_flop_per_s'])}FLOP/s = "
            f"{_pct(d['fraction_of_roof'])} of the {d['roof_key']} peak; {d['memory_bound_layers']} of "
            f"{d['layers']} are memory-bound, median intensity {d['median_intensity']:.2f} FLOP/byte.")
    fs, fd = sep.summary["flops"], dense.summary["flops"]
    ts, td = sep.summary["whole_model_time_s"], dense.summary["whole_model_time_s"]
    lines.append(
        f"Dense twin: {fd / fs:.1f}x the FLOPs of MobileNetV1 but only {td / ts:.1f}x the time "
        f"({td * 1e3:.2f} ms vs {ts * 1e3:.2f} ms); achieved {human(dense.summary['achieved_flop_per_s'])}FLOP/s "
        f"({_pct(dense.summary['fraction_of_peak'])} of peak) vs {human(sep.summary['achieved_flop_per_s'])}FLOP/s "
        f"({_pct(sep.summary['fraction_of_peak'])}).")
    return lines


def op_table(p: Profile, top: int = 25) -> pd.DataFrame:
    """The ``top`` ops by measured time: module, phase, op, FLOPs, time, achieved FLOP/s, intensity, bound."""
    ops = p.ops
    if ops.empty or "time_s" not in ops or ops["time_s"].isna().all():
        return pd.DataFrame({"note": ["no per-op times"]})
    o = ops.dropna(subset=["time_s"]).sort_values("time_s", ascending=False).head(top)
    return pd.DataFrame({
        "module": o["module"].map(lambda m: m or "(root)"), "phase": o["phase"], "op": o["op"],
        "flops": o["flops"].map(human), "time": o["time_s"].map(lambda t: f"{t * 1e3:.3f} ms"),
        "flop/s": o["achieved_flop_per_s"].map(human),
        "AI": o["intensity"].map(lambda x: "-" if x != x else f"{x:.2f}"), "bound": o["bound"],
    }).reset_index(drop=True)


def memory_line(memory: dict[str, Any]) -> str:
    """One line on the measured peak: ``max_memory_allocated`` (CUDA) or the allocator trace's
    peak of live tensor bytes (CPU), the op running at the trace's peak and its scratch share;
    "" when neither was measured."""
    mib = MIB
    cuda_peak = memory.get("alloc_peak_bytes")
    trace = memory.get("alloc_trace_peak_bytes")
    if cuda_peak is not None:
        line = f"memory: max_memory_allocated {cuda_peak / mib:,.1f} MiB"
        reserved = memory.get("reserved_peak_bytes")
        if reserved is not None:
            line += f", reserved {reserved / mib:,.1f} MiB"
    elif trace is not None:
        line = f"memory: peak of live tensor bytes {trace / mib:,.1f} MiB (torch's allocator events)"
    else:
        return ""
    op = memory.get("alloc_trace_peak_op")
    if op:
        line += (f"; the allocator trace peaks in {op}, {(memory.get('alloc_trace_workspace_at_peak_bytes') or 0) / mib:,.1f}"
                 f" MiB of it that op's scratch")
    return line


def memory_lines(mem: dict[str, Any]) -> list[str]:
    """The measured memory, one line per probe that ran (bytes as KiB/MiB/GiB)."""
    def b(key: str) -> str:
        return human(mem.get(key), "B", 1024)

    out = []
    if mem.get("alloc_peak_bytes") is not None:
        out.append(f"  CUDA allocator: max allocated {b('alloc_peak_bytes')}, max reserved {b('reserved_peak_bytes')}"
                   + (f" (incl. the {b('l2_flush_buffer_bytes')} L2 flush buffer)"
                      if mem.get("l2_flush_buffer_bytes") else ""))
    if mem.get("nvml_used_peak_bytes") is not None:
        out.append(f"  NVML: device used peak {b('nvml_used_peak_bytes')} over a {b('nvml_baseline_bytes')} baseline"
                   + (f", this process {b('nvml_process_bytes')}" if mem.get("nvml_process_bytes") is not None else ""))
    if mem.get("alloc_trace_peak_bytes") is not None:
        out.append(f"  allocator trace: peak {b('alloc_trace_peak_bytes')} of live tensors "
                   f"({b('alloc_trace_live_before_bytes')} live before the pass), reached in "
                   f"{mem.get('alloc_trace_peak_op') or '-'} with {b('alloc_trace_workspace_at_peak_bytes')} of "
                   f"in-op workspace; without workspaces {b('alloc_trace_peak_without_workspace_bytes')}; largest "
                   f"in-op workspace {b('alloc_trace_max_op_transient_bytes')} "
                   f"({mem.get('alloc_trace_max_op_transient_op') or '-'})")
    if mem.get("rss_peak_bytes") is not None:
        out.append(f"  process RSS: peak {b('rss_peak_bytes')} over a {b('rss_baseline_bytes')} baseline "
                   f"(lifetime peak {b('ru_maxrss_bytes')})")
    return out


def _value(key: str, v: Any) -> str:
    """A probe's value as shown: bytes in MiB (``*_bytes``), other numbers with thousands separators."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return str(v)
    if key.endswith("_bytes"):
        return f"{v / MIB:,.1f} MiB"
    return f"{v:,}" if float(v).is_integer() else f"{v:,.3g}"


def memory_table(memory: Mapping[str, Any]) -> pd.DataFrame:
    """The measured memory fields that are set, formatted: bytes as MiB, counts and the op at the
    allocator trace's peak as they are."""
    rows = [{"quantity": k, "value": _value(k, v)} for k, v in memory.items()
            if not (v is None or (isinstance(v, float) and math.isnan(v)) or v == "")]
    return pd.DataFrame(rows, columns=["quantity", "value"]).set_index("quantity")


def phase_table(phases: pd.DataFrame) -> pd.DataFrame:
    """The timed phases formatted: times in ms, repetitions as integers, IQR / median in percent."""
    out = pd.DataFrame(index=phases.index)
    for col in ("median_s", "iqr_s", "min_s", "mean_s"):
        if col in phases:
            out[col.removesuffix("_s")] = phases[col].map(_ms)
    if "reps" in phases:
        out["reps"] = phases["reps"].map(lambda r: "-" if r != r else f"{int(r)}")
    if "iqr_over_median" in phases:
        out["iqr/median"] = phases["iqr_over_median"].map(_pct)
    return out


def markdown_report(p: Profile, figures: Sequence[str] = ("roofline.png", "layer_time.png"),
                    extra_notes: Sequence[str] = ()) -> str:
    """The report.md of a saved profile; ``figures`` the plot files written beside it, ``extra_notes``
    what saving added (a plot skipped). Every number formatted with its unit."""
    cfg = p.config
    figs = ", ".join(f"`{f}`" for f in figures)
    parts = [
        f"# hwprof profile: {cfg['model']}",
        "",
        f"device **{p.ceilings.device_name}** ({cfg['device']}), dtype {cfg['dtype']}, mode {cfg['mode']}, "
        f"batch {cfg['batch']}, channels_last {cfg['channels_last']}",
        "",
        "## Summary",
        "",
        *[f"- {line}" for line in summary_lines(p)],
        *[f"- note: {n}" for n in extra_notes],
        "",
        "## Layers (by time)",
        "",
        render(terminal_table(p, top=40), "md"),
        "## Slowest aten ops (torch.profiler pass)",
        "",
        render(op_table(p, top=25), "md"),
        "## Phases (whole model)",
        "",
        render(phase_table(p.measurement.phases), "md"),
        "## Memory",
        "",
        render(memory_table(p.measurement.memory), "md"),
        (f"Figures: {figs}; all numbers: " if figures else "All numbers: ") + "`layers.csv`, `profile.json`.",
        "",
    ]
    return "\n".join(parts)
