"""``hwprof.profile``: counts + measured times + measured ceilings, joined per layer.

    count (fake tensors)  ->  per-layer FLOPs, bytes (self: the layer's own ops)
    measure (real runs)   ->  per-layer self times from a hooked pass, whole-model phase times
    ceilings              ->  compute roofs per dtype/math mode, memory bandwidth
    join + derive         ->  achieved FLOP/s, bytes/s, intensity, attainable, efficiency, bound

In ``mode="train"`` a layer's headline numbers are forward + backward (FLOPs, bytes, time);
the per-phase columns stay beside them. The optimizer step is timed as a phase but not
split per layer. Whole-model achieved FLOP/s divides all counted FLOPs by the whole-model
time (sum of the timed phases' medians, step excluded), never by the sum of layer times.
"""

from __future__ import annotations

import datetime
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from hwprof.counting.counter import CountResult, count
from hwprof.files import write_atomic, write_json_atomic
from hwprof.placement import model_float_dtype
from hwprof.roofline import MathModes, derive, roof_key

__all__ = ["profile", "Profile", "layer_variant", "CONV_OPS", "MATMUL_OPS"]

log = logging.getLogger(__name__)

CONV_OPS = frozenset({"aten.convolution", "aten._convolution", "aten.cudnn_convolution", "aten.convolution_backward",
                      "aten.mkldnn_convolution", "aten._conv_depthwise2d", "aten.cudnn_convolution_transpose"})
MATMUL_OPS = frozenset({"aten.mm", "aten.addmm", "aten.bmm", "aten.baddbmm", "aten._scaled_mm", "aten.mv",
                        "aten.mkldnn_rnn_layer", "aten.mkldnn_rnn_layer_backward", "aten._cudnn_rnn",
                        "aten._cudnn_rnn_backward", "aten._native_multi_head_attention",
                        "aten._transformer_encoder_layer_fwd",
                        *(f"aten._scaled_dot_product_{k}{b}" for k in ("flash_attention", "flash_attention_for_cpu",
                                                                      "efficient_attention", "cudnn_attention")
                          for b in ("", "_backward"))})


def layer_variant(module: nn.Module) -> str:
    """'depthwise' (groups = C_in > 1), 'grouped', 'pointwise' (1x1), 'dense' for convs; else ''."""
    if not isinstance(module, nn.modules.conv._ConvNd):
        return ""
    if module.groups > 1 and module.groups == module.in_channels:
        return "depthwise"
    if module.groups > 1:
        return "grouped"
    if all(k == 1 for k in module.kernel_size):
        return "pointwise"
    return "dense"


@dataclass
class Profile:
    """Per-layer roofline records of one model on one device (see DESIGN.md's API contract)."""

    layers: pd.DataFrame
    summary: dict[str, Any]
    counts: CountResult
    measurement: Any
    ceilings: Any
    config: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    ops: pd.DataFrame = field(default_factory=pd.DataFrame)
    """One row per counted aten op: the counts, ``time_s`` from the profiler pass where the op
    could be matched (NaN otherwise) and the same derived roofline columns as ``layers``."""

    def save(self, directory: str | Path, command: str | None = None) -> list[Path]:
        """Write CSV, JSON, Markdown, roofline + time plots (PNG/SVG) and a manifest, atomically."""
        from hwprof.report.profile_report import markdown_report

        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        written = [
            write_atomic(d / "layers.csv", self.layers.to_csv()),
            write_atomic(d / "ops.csv", self.ops.to_csv(index=False)),
            write_json_atomic(d / "profile.json", {
                "summary": self.summary, "config": self.config, "notes": self.notes,
                "phases": self.measurement.phases, "memory": self.measurement.memory,
                "ceilings": _ceilings_dict(self.ceilings), "layers": self.layers}),
            write_atomic(d / "report.md", markdown_report(self)),
        ]
        written += self._plots(d)
        written.append(write_json_atomic(d / "manifest.json", manifest(self, command)))
        return written

    def _plots(self, d: Path) -> list[Path]:
        try:
            from hwprof.report import plots
        except ImportError as e:  # pragma: no cover - plots.py ships with hwprof
            self.notes.append(f"plots skipped: {e}")
            return []
        pts = self.layers.reset_index().rename(columns={"path": "name"})
        pts["layer_type"] = [v or t for v, t in zip(pts["variant"], pts["type"], strict=True)]
        title = f"{self.config['model']} ({self.config['dtype']}, {self.config['mode']}, batch {self.config['batch']})"
        try:
            out = plots.roofline_plot(pts[pts["time_s"] > 0], self.ceilings, d / "roofline.png", title=title)
            out += plots.time_bar_plot(pts, d / "layer_time.png", title=title)
        except plots.PlotUnavailable as e:
            self.notes.append(str(e))
            return []
        return out


def _ceilings_dict(k: Any) -> dict[str, Any]:
    return k.to_dict() if hasattr(k, "to_dict") else dict(k)


def manifest(p: Profile, command: str | None) -> dict[str, Any]:
    from hwprof.report.manifest import versions

    v = versions()
    return {
        "command": command or " ".join(sys.argv),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        **{k: v[k] for k in ("hwprof", "torch", "cuda", "python", "platform")}, "versions": v,
        "device": p.measurement.device, "ceilings": _ceilings_dict(p.ceilings), "config": p.config,
    }


# ----------------------------------------------------------------------------- the join
def profile(
    model: nn.Module,
    inputs: Any,
    device: str | torch.device = "auto",
    dtype: str | torch.dtype | None = None,
    mode: str = "inference",
    optimizer: Any = None,
    channels_last: bool = False,
    batch: int | None = None,
    budget_s: float = 1.0,
    ceilings: Any = None,
    depth: int | None = None,
    name: str | None = None,
    progress: bool = False,
) -> Profile:
    """Count, measure and place every layer of ``model`` on this machine's measured roofline.

    ``progress=True`` shows a progress bar (tqdm, on stderr) over the stages."""
    from tqdm import tqdm

    from hwprof.measuring.runner import measure

    bar = tqdm(total=3, desc=f"{name or type(model).__name__}: measure", disable=not progress, leave=False)
    try:
        m = measure(model, inputs, device=device, mode=mode, optimizer=optimizer, per_layer=True, depth=depth,
                    batch=batch, dtype=dtype, channels_last=channels_last, budget_s=budget_s, per_op=True)
        bar.update()
        bar.set_description(f"{name or type(model).__name__}: count")
        dev_type = str(m.device.get("type", "cpu"))
        train = mode == "train"
        c = count(model, inputs, backward=train, batch=batch, dtype=dtype,
                  device=_count_device(dev_type), training=train)
        bar.update()
        bar.set_description(f"{name or type(model).__name__}: ceilings")
        if ceilings is None:
            from hwprof.hardware.ceilings import measure_ceilings

            ceilings = measure_ceilings(device=dev_type)
        bar.update()
    finally:
        bar.close()
    k = ceilings
    modes = MathModes.current(dev_type)
    modules = dict(model.named_modules())
    layers = join_layers(c, m.layers, train, modes, {p: layer_variant(mod) for p, mod in modules.items()})
    layers = derive(layers, k.flop_per_s, k.bytes_per_s)
    ops = derive(join_ops(c.ops, m.ops, modes), k.flop_per_s, k.bytes_per_s)
    whole_s = whole_model_time_s(m.phases, train)
    summary = summarize(layers, c, whole_s, k, train, ops)
    config = {"model": name or type(model).__name__, "device": dev_type, "mode": mode,
              "dtype": str(dtype or model_float_dtype(model)).removeprefix("torch."), "optimizer": optimizer,
              "channels_last": channels_last, "batch": batch, "budget_s": budget_s,
              "math_modes": {"cudnn_tf32": modes.cudnn_tf32, "matmul_tf32": modes.matmul_tf32}}
    return Profile(layers, summary, c, m, k, config, list(m.notes) + list(c.notes), ops)


def _count_device(dev_type: str) -> torch.device:
    if dev_type == "cuda":
        return torch.device("cuda")
    return torch.device("cpu")


def op_class(op: str) -> str:
    """'conv', 'matmul' (matmul/attention/RNN kernels) or 'other' (see :func:`hwprof.roofline.roof_key`)."""
    return "conv" if op in CONV_OPS else ("matmul" if op in MATMUL_OPS else "other")


def join_ops(counted: pd.DataFrame, measured: pd.DataFrame, modes: MathModes) -> pd.DataFrame:
    """Counted ops with their measured ``time_s``, matched per phase in dispatch order.

    The measured pass may run a few ops the count does not (the loss ``sum`` and its seed
    gradient, for instance), so the two op-name sequences are aligned with
    ``difflib.SequenceMatcher``; counted ops left unmatched keep NaN time. Adds ``roof_key``."""
    import difflib

    out = counted.copy()
    out["time_s"] = float("nan")
    for phase in ("fwd", "bwd"):
        c_idx = out.index[out["phase"] == phase]
        m_sel = measured[measured["phase"] == phase] if len(measured) else measured
        if not len(c_idx) or not len(m_sel):
            continue
        a, b = list(out.loc[c_idx, "op"]), list(m_sel["op"])
        times = list(m_sel["time_s"])
        for block in difflib.SequenceMatcher(a=a, b=b, autojunk=False).get_matching_blocks():
            for i in range(block.size):
                out.loc[c_idx[block.a + i], "time_s"] = times[block.b + i]
    out["roof_key"] = [roof_key(d or "float32", op_class(o), modes) for d, o in zip(out["dtype"], out["op"], strict=True)]
    return out


def _op_class_and_dtype(ops: pd.DataFrame) -> pd.DataFrame:
    """Per module: 'conv' if it runs a convolution, 'matmul' if a matmul/attention/RNN kernel,
    else 'other'; and the dtype of its FLOP-heaviest op."""
    if ops.empty:
        return pd.DataFrame(columns=["op_class", "dtype"])
    cls = ops["op"].map(op_class)
    rank = cls.map({"conv": 2, "matmul": 1, "other": 0})
    frame = ops.assign(op_class=cls, rank=rank)
    best = frame.sort_values(["rank", "flops"], ascending=False).groupby("module").head(1).set_index("module")
    return best[["op_class", "dtype"]]


def join_layers(c: CountResult, times: pd.DataFrame, train: bool, modes: MathModes,
                variants: dict[str, str]) -> pd.DataFrame:
    """One row per module that ran and does work of its own: counts (self) + measured self times.

    Headline ``flops``/``bytes``/``time_s`` are forward (inference) or forward + backward (train).
    ``roof_key`` names the compute roof of the layer's math mode (see :func:`hwprof.roofline.roof_key`).
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
    cls = _op_class_and_dtype(c.ops)
    rows["op_class"] = cls["op_class"].reindex(rows.index).fillna("other")
    rows["dtype"] = cls["dtype"].reindex(rows.index).fillna("float32")
    rows["roof_key"] = [roof_key(d, o, modes) for d, o in zip(rows["dtype"], rows["op_class"], strict=True)]
    rows["variant"] = [variants.get(p, "") for p in rows.index]
    rows["uncounted_calls"] = rows["uncounted_calls_fwd"] + (rows["uncounted_calls_bwd"] if train else 0)
    return rows


def whole_model_time_s(phases: pd.DataFrame, train: bool) -> float:
    """Median time of the timed forward (+ backward) phases; the optimizer step is excluded."""
    names = ["fwd", "bwd"] if train else ["fwd_nograd"]
    return float(sum(phases.loc[n, "median_s"] for n in names if n in phases.index))


def summarize(layers: pd.DataFrame, c: CountResult, whole_s: float, k: Any,
              train: bool, ops: pd.DataFrame | None = None) -> dict[str, Any]:
    """Whole-model figures and the by-type breakdown, all computed from the records.

    The share of time taken by ops without a formula comes from the per-op times when they
    were measured, else (coarser) from the time of the layers that ran such ops."""
    flops = float(c.totals["flops_fwd"] + (c.totals["flops_bwd"] if train else 0))
    main_key = layers.loc[layers["op_class"] != "other", "roof_key"].mode()
    peak_key = str(main_key.iloc[0]) if len(main_key) else "fp32"
    peak = float(k.flop_per_s.get(peak_key, float("nan")))
    by = layers.assign(kind=[v or t for v, t in zip(layers["variant"], layers["type"], strict=True)])
    by_type = by.groupby("kind").agg(time_s=("time_s", "sum"), flops=("flops", "sum"), layers=("type", "size"))
    by_type["time_share"] = by_type["time_s"] / by_type["time_s"].sum()
    by_type["flops_share"] = by_type["flops"] / by_type["flops"].sum()
    by_type["achieved_flop_per_s"] = by_type["flops"] / by_type["time_s"].where(by_type["time_s"] > 0)
    by_type = by_type.sort_values("time_s", ascending=False)
    unc = layers["uncounted_calls"] > 0
    layer_sum = float(layers["time_s"].sum())
    return {
        "whole_model_time_s": whole_s,
        "sum_of_layer_times_s": layer_sum,
        "layer_sum_over_whole": layer_sum / whole_s if whole_s else float("nan"),
        "flops": flops,
        "achieved_flop_per_s": flops / whole_s if whole_s else float("nan"),
        "peak_key": peak_key,
        "peak_flop_per_s": peak,
        "fraction_of_peak": (flops / whole_s) / peak if whole_s and peak == peak else float("nan"),
        "bytes_per_s_roof": float(k.bytes_per_s),
        "memory_bound_time_share": float(layers.loc[layers["bound"] == "memory", "time_share"].sum()),
        "above_roof_layers": list(layers.index[layers["above_roof"]]),
        "uncounted": dict(c.uncounted),
        "uncounted_time_share": _uncounted_share(layers, unc, ops),
        "ops_matched_share": float(ops["time_s"].notna().mean()) if ops is not None and len(ops) else float("nan"),
        "by_type": by_type,
    }



def _uncounted_share(layers: pd.DataFrame, unc: pd.Series, ops: pd.DataFrame | None) -> float:
    if ops is not None and len(ops) and ops["time_s"].notna().any():
        t = ops["time_s"].fillna(0.0)
        return float(t[~ops["counted"]].sum() / t.sum()) if t.sum() > 0 else 0.0
    return float(layers.loc[unc, "time_share"].sum())
