"""The per-layer table of ``hwprof count`` (torchstat/torchsummary style) and its totals."""

from __future__ import annotations

import pandas as pd

from hwprof.counting.counter import CountResult
from hwprof.report.tables import human

__all__ = ["layer_table", "totals_lines"]

MiB = 2**20


def layer_table(c: CountResult, backward: bool, all_modules: bool = False) -> pd.DataFrame:
    """One row per leaf module that ran (plus non-leaf modules doing work of their own, e.g.
    residual adds); numbers as plain values so CSV/JSON keep full precision."""
    lay = c.layers
    own_work = (lay["flops_fwd"] > 0) | (lay["bytes_fwd"] > 0)
    keep = lay["calls"] > 0 if all_modules else (lay["is_leaf"] & (lay["calls"] > 0)) | (~lay["is_leaf"] & own_work)
    rows = lay[keep]
    out = pd.DataFrame({
        "type": rows["type"],
        "output_shape": rows["output_shapes"],
        "params": rows["params"].astype(int),
        "macs": rows["macs_fwd"].astype(int),
        "flops": rows["flops_fwd"].astype(int),
        "bytes": rows["bytes_fwd"].astype(int),
        "intensity_flop_per_byte": rows["intensity_fwd"].round(2),
        "feature_map_mb": (rows["output_bytes"].where(~rows["output_is_alias"], 0) / MiB).round(3),
    })
    if backward:
        out["macs_bwd"] = rows["macs_bwd"].astype(int)
        out["flops_bwd"] = rows["flops_bwd"].astype(int)
        out["bytes_bwd"] = rows["bytes_bwd"].astype(int)
    out.index = out.index.map(lambda p: p or "(root)")
    out.index.name = "layer"
    return out


def totals_lines(c: CountResult, backward: bool) -> list[str]:
    t = c.totals
    lines = [
        f"params: {t['params']:,} ({t['trainable_params']:,} trainable), {t['params_bytes'] / MiB:.2f} MB",
        f"forward: {human(t['macs_fwd'])}MACs, {human(t['flops_fwd'])}FLOPs, {t['bytes_fwd'] / MiB:.2f} MB moved, "
        f"intensity {t['flops_fwd'] / max(t['bytes_fwd'], 1):.2f} FLOP/B",
    ]
    if backward:
        lines.append(f"backward: {human(t['macs_bwd'])}MACs, {human(t['flops_bwd'])}FLOPs, "
                     f"{t['bytes_bwd'] / MiB:.2f} MB moved")
    lines.append(f"feature maps (input + new leaf outputs): {t['feature_map_bytes'] / MiB:.2f} MB")
    if c.uncounted:
        lines.append("UNCOUNTED ops (no formula, not counted as zero): "
                     + ", ".join(f"{k} x{v}" for k, v in sorted(c.uncounted.items())))
    lines += [f"note: {n}" for n in c.notes]
    return lines
