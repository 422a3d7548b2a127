"""The headline (each operator against its dense twin) and the study's Markdown summary:
number formatters and one function per section."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from hwprof.hardware.ceilings import Ceilings
from hwprof.report.tables import render
from hwprof.studies.depthwise.sweep import REFERENCE_SHAPE

REFERENCE_H100: dict[str, Any] = {
    "source": "H100 reference figures (one H100 80GB HBM3, torch 2.11, measured 2026-11; docs/REFERENCES.md)",
    "shape": "N64 C256 56x56",
    "depthwise_fp32_nchw_fwd_ms": 0.53,
    "dense_fp32_nchw_fwd_ms": 0.90,
    "speedup_fp32_nchw_fwd": 1.7,
    "depthwise_fp32_nchw_fwd_tflop_per_s": 1.75,
    "depthwise_intensity_fp32": 2.25,
    "depthwise_fp32_channels_last_fwd_tflop_per_s": 4.85,
    "depthwise_bf16_channels_last_fwd_tflop_per_s": 7.0,
    "dense_bf16_channels_last_fwd_tflop_per_s": 703.0,
}
"""Not measured by this run: cited in the summary as the reference, labelled as such."""


def fmt_ratio(x: float) -> str:
    """2.345 -> '2.3x'; 256.0 -> '256x' (no decimals from 100 up)."""
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.0f}x" if abs(x) >= 100 else f"{x:.1f}x"


def fmt_time(t_s: float) -> str:
    """Seconds -> '0.531 ms' / '52.1 us' / '1.23 s' (3 significant digits)."""
    if t_s is None or not math.isfinite(t_s):
        return "-"
    if t_s >= 1:
        return f"{t_s:.3g} s"
    if t_s >= 1e-3:
        return f"{t_s * 1e3:.3g} ms"
    return f"{t_s * 1e6:.3g} us"


def fmt_pct(p: float) -> str:
    """12.345 -> '12.3%' (3 significant digits)."""
    if p is None or not math.isfinite(p):
        return "-"
    return f"{p:.3g}%"


def fmt_rate(x: float, unit: str = "FLOP/s") -> str:
    """3.1e12 -> '3.1 TFLOP/s' (decimal prefixes, 3 significant digits)."""
    if x is None or not math.isfinite(x):
        return "-"
    for factor, prefix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= factor:
            return f"{x / factor:.3g} {prefix}{unit}"
    return f"{x:.3g} {unit}"


def _fmt_count(x: float) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    for factor, prefix in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K")):
        if abs(x) >= factor:
            return f"{x / factor:.3g}{prefix}"
    return f"{x:.3g}"


def headline_shape(df: pd.DataFrame, dense: str = "dense_3x3", op: str = "depthwise_3x3") -> tuple[int, int, int] | None:
    """(C, spatial, batch) for the headline: the reference shape C=256 56x56 when the run has
    ``op`` and ``dense`` measured there, else the largest C*H*W shape that has both; the
    largest batch at which both ran."""
    ok = df[df["status"] == "ok"]
    have = ok[ok["op"].isin([dense, op])]
    pairs = have.groupby(["channels", "spatial", "batch"])["op"].nunique()
    pairs = pairs[pairs == 2]
    if pairs.empty:
        return None
    keys = list(pairs.index)
    ref = [k for k in keys if (k[0], k[1]) == REFERENCE_SHAPE]
    pool = ref or keys
    return max(pool, key=lambda k: (k[0] * k[1] * k[1], k[2]))


def compare_to_dense(df: pd.DataFrame, shape: tuple[int, int, int], dense: str = "dense_3x3") -> pd.DataFrame:
    """Every ok row at ``shape`` = (C, spatial, batch) with its dense twin's numbers beside it:
    flops_ratio = dense FLOPs / FLOPs ("x fewer FLOPs"), speedup = dense time / time ("x faster")."""
    c, s, n = shape
    ok = df[(df["status"] == "ok") & (df["channels"] == c) & (df["spatial"] == s) & (df["batch"] == n)]
    base = ok[ok["op"] == dense].set_index(["dtype", "format", "pass"])
    rows = []
    for _, r in ok.iterrows():
        key = (r["dtype"], r["format"], r["pass"])
        d = base.loc[key] if key in base.index else None
        rows.append({**r.to_dict(),
                     "dense_flops": float(d["flops"]) if d is not None else math.nan,
                     "dense_time_s": float(d["time_s"]) if d is not None else math.nan,
                     "dense_intensity": float(d["intensity"]) if d is not None else math.nan,
                     "flops_ratio": float(d["flops"]) / float(r["flops"]) if d is not None else math.nan,
                     "speedup": float(d["time_s"]) / float(r["time_s"]) if d is not None else math.nan})
    return pd.DataFrame(rows)


def _headline_sentence(r: Mapping[str, Any], c: int, s: int, n: int) -> str:
    speed = r["speedup"]
    faster = (f"only {fmt_ratio(speed)} faster" if speed >= 1
              else f"{fmt_ratio(1 / speed)} slower")
    return (f"**{r['op_label']} at C={c}, {s}x{s}, bs {n} ({r['variant']}, {r['pass']})**: "
            f"{fmt_ratio(r['flops_ratio'])} fewer FLOPs than dense 3x3, {faster} "
            f"({fmt_time(r['time_s'])} vs {fmt_time(r['dense_time_s'])}); "
            f"{fmt_pct(r['pct_of_compute_roof'])} of the {r['roof_key']} compute roof "
            f"({fmt_rate(r['achieved_flop_per_s'])} of {fmt_rate(r['compute_roof_flop_per_s'])}); "
            f"{fmt_pct(r['pct_of_memory_roof'])} of the memory roof "
            f"({fmt_rate(r['achieved_bytes_per_s'], 'B/s')} of {fmt_rate(r['memory_roof_bytes_per_s'], 'B/s')}); "
            f"intensity {r['intensity']:.3g} FLOP/byte vs {r['dense_intensity']:.3g} for dense.")


def _variant_order(df: pd.DataFrame, then: str | None = None) -> pd.DataFrame:
    """fwd before fwd+bwd, fp32 NCHW first, then the other variants; within, ``then`` descending."""
    if df.empty:
        return df
    key = [({"fwd": 0, "fwd+bwd": 1}.get(p, 9), v != "fp32 NCHW", v) for p, v in zip(df["pass"], df["variant"], strict=True)]
    out = df.assign(_k=key, _t=-df[then] if then else 0).sort_values(["_k", "_t"], kind="stable")
    return out.drop(columns=["_k", "_t"])


def _vs_dense(ratio: float, more: str, less: str) -> str:
    if ratio is None or not math.isfinite(ratio):
        return "-"
    return f"{fmt_ratio(ratio)} {more}" if ratio >= 1 else f"{fmt_ratio(1 / ratio)} {less}"


def _operator_table(t: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame({
        "operator": t["op_label"], "dtype/format": t["variant"],
        "FLOPs": [_fmt_count(v) for v in t["flops"]], "bytes": [_fmt_count(v) for v in t["bytes"]],
        "FLOP/byte": [f"{v:.3g}" for v in t["intensity"]], "time": [fmt_time(v) for v in t["time_s"]],
        "achieved": [fmt_rate(v) for v in t["achieved_flop_per_s"]],
        "% compute roof": [fmt_pct(v) for v in t["pct_of_compute_roof"]],
        "% memory roof": [fmt_pct(v) for v in t["pct_of_memory_roof"]], "bound": t["bound"],
        "above roof": ["yes" if v else "" for v in t["above_roof"]],
        "FLOPs vs dense": [_vs_dense(v, "fewer", "more") for v in t["flops_ratio"]],
        "time vs dense": [_vs_dense(v, "faster", "slower") for v in t["speedup"]],
    })


def _md_table(df: pd.DataFrame) -> str:
    return render(df, "md", index=False)


def summary_markdown(points: pd.DataFrame, *, ceilings: Ceilings, manifest: Mapping[str, Any],
                     fasternet: pd.DataFrame | None = None, models: pd.DataFrame | None = None,
                     counters: pd.DataFrame | None = None, files: Sequence[str] = ()) -> str:
    """The study's Markdown summary; every number is read from the frames passed in (the ones
    written to CSV), except the block explicitly labelled *reference*."""
    device = manifest.get("device", {}).get("name") or ceilings.device_name or ""
    lines = [f"# Depthwise convolution study — {device}", "",
             f"`{manifest.get('command', 'hwprof study depthwise')}` on {manifest.get('date_utc', '')} "
             f"(torch {manifest.get('versions', {}).get('torch', '')}, "
             f"{manifest.get('device', {}).get('threads', '?')} torch CPU threads). "
             "Every number below is this run's (from `depthwise.csv` and the other CSVs beside it), "
             "except the lines marked *reference*. FLOP = one add or multiply; MAC = one multiply-accumulate "
             "(FLOPs = 2 x MACs for convolutions). Bytes = tensor bytes read + written per aten op (unfused).", ""]
    shape = headline_shape(points)
    lines += ["## Headline", ""]
    if shape is None:
        lines += ["No (dense 3x3, depthwise 3x3) pair ran successfully: no headline.", ""]
        cmp_df = pd.DataFrame()
    else:
        c, s, n = shape
        cmp_df = compare_to_dense(points, shape)
        dw = _variant_order(cmp_df[cmp_df["op"] == "depthwise_3x3"]) if len(cmp_df) else cmp_df
        for _, r in dw.iterrows():
            lines.append("- " + _headline_sentence(r, c, s, n))
        ref = REFERENCE_H100
        lines += ["- *Reference, not this run* "
                  f"({ref['source']}, {ref['shape']}): depthwise 3x3 fp32 NCHW forward "
                  f"{ref['depthwise_fp32_nchw_fwd_ms']:.2f} ms vs dense {ref['dense_fp32_nchw_fwd_ms']:.2f} ms "
                  f"({ref['speedup_fp32_nchw_fwd']}x); depthwise {ref['depthwise_fp32_nchw_fwd_tflop_per_s']} TFLOP/s "
                  f"at {ref['depthwise_intensity_fp32']} FLOP/byte, {ref['depthwise_fp32_channels_last_fwd_tflop_per_s']} "
                  f"TFLOP/s channels_last, {ref['depthwise_bf16_channels_last_fwd_tflop_per_s']} TFLOP/s bf16 "
                  f"channels_last vs {ref['dense_bf16_channels_last_fwd_tflop_per_s']:.0f} TFLOP/s for the dense conv.", ""]
        for pass_name in ("fwd", "fwd+bwd"):
            t = cmp_df[cmp_df["pass"] == pass_name] if len(cmp_df) else cmp_df
            if len(t):
                lines += [f"## Every operator at C={c}, {s}x{s}, bs {n}: {pass_name}", "",
                          _md_table(_operator_table(_variant_order(t, "flops")))]
    lines += _roofs_section(ceilings, manifest)
    if fasternet is not None and len(fasternet):
        lines += _fasternet_section(fasternet)
    if models is not None and len(models):
        lines += _models_section(models)
    if counters is not None and len(counters):
        lines += _counters_section(counters)
    lines += _status_section(points)
    if files:
        lines += ["## Files", ""] + [f"- `{f}`" for f in files] + [""]
    return "\n".join(lines).rstrip() + "\n"


def _roofs_section(ceilings: Ceilings, manifest: Mapping[str, Any]) -> list[str]:
    rows = [{"roof": k, "FLOP/s": fmt_rate(v)} for k, v in ceilings.flop_per_s.items() if v]
    rows.append({"roof": "memory", "FLOP/s": fmt_rate(ceilings.bytes_per_s or math.nan, "B/s")})
    mm = manifest.get("math_mode", {})
    return ["## Roofs used (measured on this machine)", "",
            f"Source: {ceilings.source}. Convolution roof by math mode: fp32 -> "
            f"'{mm.get('fp32_conv_roof', 'fp32')}' (cuDNN TF32 for fp32 convolutions: {mm.get('cudnn_conv_tf32')}), "
            "bf16 -> 'bf16'. A point above its roof is flagged (`above_roof`), never clipped.", "",
            _md_table(pd.DataFrame(rows))]


def _fasternet_section(fn: pd.DataFrame) -> list[str]:
    agg = fn[fn["shape"] == "all"]
    table = pd.DataFrame({
        "operator (10 layers)": agg["operator"], "batch": agg["batch"], "dtype": agg["dtype"],
        "FLOPs": [_fmt_count(v) for v in agg["flops"]], "time": [fmt_time(v) for v in agg["time_s"]],
        "this device FLOP/s": [fmt_rate(v) for v in agg["achieved_flop_per_s"]],
        "this device MAC/s (paper's 'FLOPS')": [fmt_rate(v, "MAC/s") for v in agg["achieved_mac_per_s"]],
        "paper, RTX 2080Ti, as printed (MAC/s)": [fmt_rate(v, "MAC/s") for v in agg["paper_2080ti_mac_per_s"]],
        "paper, RTX 2080Ti, in FLOP/s (x2)": [fmt_rate(v) for v in agg["paper_2080ti_flop_per_s"]],
    })
    return ["## FasterNet-style table", "",
            "FasterNet (Chen et al., CVPR 2023, Table 1) stacks 10 layers of each operator and reports "
            "on-device 'FLOPS' that count MACs as FLOPs. hwprof counts FLOP = 2 x MAC, so the paper's "
            "figures are shown as printed (MAC/s) and converted (x2). Only the paper's RTX 2080Ti figures "
            "for DWConv (313) and the dense Conv (10,151 G) are given, as quoted in docs/REFERENCES.md; the paper's "
            "CPU/ARM columns are not reproduced. This device's rows: total FLOPs / total time over the "
            f"shapes {', '.join(sorted(set(fn.loc[fn['shape'] != 'all', 'shape'])))} (FasterNet-T2's stage "
            "shapes; per-shape rows in `fasternet.csv`), forward, NCHW. PConv = 3x3 conv on C/4 channels, the "
            "rest passed through (split + cat).", "",
            _md_table(table)]


def _models_section(models: pd.DataFrame) -> list[str]:
    cols = [c for c in ("model", "input", "batch", "dtype", "depthwise_layers", "flops", "time_s", "achieved_flop_per_s",
                        "depthwise_flop_share", "depthwise_time_share") if c in models]
    m = models[cols].copy()
    for c in ("flops",):
        m[c] = [_fmt_count(v) for v in m[c]]
    m["time_s"] = [fmt_time(v) for v in m["time_s"]]
    m["achieved_flop_per_s"] = [fmt_rate(v) for v in m["achieved_flop_per_s"]]
    for c in ("depthwise_flop_share", "depthwise_time_share"):
        if c in m:
            m[c] = [fmt_pct(100 * v) if v is not None and math.isfinite(v) else "-" for v in m[c]]
    lines = ["## Model level: MobileNetV1 vs its dense twin (forward)", ""]
    if len(models) == 2:
        a, b = models.iloc[0], models.iloc[1]
        lines += [f"{b['model']} does {fmt_ratio(b['flops'] / a['flops'])} the FLOPs of {a['model']} and takes "
                  f"{fmt_ratio(b['time_s'] / a['time_s'])} its time.", ""]
    if "depthwise_time_share" in models and not models["depthwise_time_share"].notna().any():
        lines += ["Per-layer time shares were not measured in this run (`hwprof.profile` unavailable or "
                  "failed: see `manifest.json` notes); FLOP shares come from the counter.", ""]
    else:
        lines += ["Depthwise time share: the depthwise layers' forward self-time (per-layer pass of "
                  "`hwprof.profile`) over all layers' forward self-time.", ""]
    return lines + [_md_table(m)]


def _counters_section(counters: pd.DataFrame) -> list[str]:
    cols = [c for c in ("name", "status", "kernels", "bytes", "dram_bytes", "dram_bytes_read", "dram_bytes_written",
                        "l2_bytes", "dram_pct_of_peak", "sm_pct_of_peak", "kernel_time_s") if c in counters]
    return ["## Hardware counters (Nsight Compute)", "",
            "`bytes` is hwprof's analytic count; `dram_bytes` what the kernels moved from/to DRAM; "
            "percentages are time-weighted over the point's kernels.", "", _md_table(counters[cols])]


def _status_section(points: pd.DataFrame) -> list[str]:
    counts = points["status"].value_counts().to_dict()
    lines = ["## Sweep", "",
             f"{len(points)} rows: " + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + "."]
    bad = points[points["status"] != "ok"]
    for _, r in bad.head(20).iterrows():
        lines.append(f"- {r['status']}: {r['name']} — {r['error']}")
    if len(bad) > 20:
        lines.append(f"- ... {len(bad) - 20} more in `depthwise.csv`")
    noisy = points[(points["iqr_s"] / points["time_s"]) > 0.10]
    if len(noisy):
        lines.append(f"- {len(noisy)} point(s) with IQR/median above 10% (noisy timing; `iqr_s` in the CSV).")
    above = points[points.get("above_roof", pd.Series(False, index=points.index)).astype(bool)]
    if len(above):
        lines.append(f"- {len(above)} point(s) above their roof (flagged, not clipped): "
                     + ", ".join(above["name"].head(10)))
    return lines + [""]
