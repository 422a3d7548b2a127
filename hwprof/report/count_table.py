"""The outputs of ``hwprof count``: the per-layer table (torchstat/torchsummary style), its
header and totals, rendered in every format (:func:`count_outputs`).

Units (:mod:`hwprof.report.tables`): bytes of memory in binary units labelled MiB/GiB, FLOPs
and MACs with decimal prefixes. Every format carries what the text table shows:

* ``table``: the header line, the per-layer table and the totals lines;
* ``json``: one object: model, input, batch, mode, backward, dtype, device, layers (one record
  per row of the table), totals (``CountResult.totals``, the backward ones only when counted),
  uncounted (op -> calls) and notes;
* ``md``: the header, the table and the totals as a list;
* ``csv``: the per-layer table, pandas-readable (``pd.read_csv(path, index_col=0)``), and a
  last row ``(total)`` holding the model totals from ``CountResult.totals``, not column sums
  (a shared parameter counts once; ``feature_map_mib`` includes the input). The header line,
  the ops without a formula and the notes are in the other formats only.
"""

from __future__ import annotations

import json
from typing import Any

import pandas as pd

from hwprof.counting.counter import CountResult
from hwprof.files import to_jsonable
from hwprof.report.tables import MiB, human, human_bytes, render

__all__ = ["layer_table", "totals_lines", "header_line", "count_outputs", "TOTAL_ROW"]

TOTAL_ROW = "(total)"


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
        "feature_map_mib": (rows["output_bytes"].where(~rows["output_is_alias"], 0) / MiB).round(3),
    })
    if backward:
        out["macs_bwd"] = rows["macs_bwd"].astype(int)
        out["flops_bwd"] = rows["flops_bwd"].astype(int)
        out["bytes_bwd"] = rows["bytes_bwd"].astype(int)
    out.index = out.index.map(lambda p: p or "(root)")
    out.index.name = "layer"
    return out


def header_line(c: CountResult, model: str, input_spec: str | None = None) -> str:
    """'lenet5 (input 1x28x28, batch 1, float32, inference mode, forward) counted with cpu kernels'."""
    cfg = c.config
    phases = "forward + backward" if cfg.get("backward") else "forward"
    amp = f" under {cfg['amp']} autocast" if cfg.get("amp") else ""
    return (f"{model} (input {input_spec or cfg.get('inputs')}, batch {cfg.get('batch')}, {cfg.get('dtype')}{amp}, "
            f"{cfg.get('mode')} mode, {phases}) counted with {cfg.get('device')} kernels")


def totals_lines(c: CountResult, backward: bool) -> list[str]:
    t = c.totals
    lines = [
        f"params: {t['params']:,} ({t['trainable_params']:,} trainable), {human_bytes(t['params_bytes'])}",
        f"forward: {human(t['macs_fwd'])}MACs, {human(t['flops_fwd'])}FLOPs, {human_bytes(t['bytes_fwd'])} moved, "
        f"intensity {t['flops_fwd'] / max(t['bytes_fwd'], 1):.2f} FLOP/B",
    ]
    if backward:
        lines.append(f"backward: {human(t['macs_bwd'])}MACs, {human(t['flops_bwd'])}FLOPs, "
                     f"{human_bytes(t['bytes_bwd'])} moved")
    lines.append(f"feature maps (input + new leaf outputs): {human_bytes(t['feature_map_bytes'])}")
    if c.uncounted:
        lines.append("UNCOUNTED ops (no formula, not counted as zero): "
                     + ", ".join(f"{k} x{v}" for k, v in sorted(c.uncounted.items())))
    lines += [f"note: {n}" for n in c.notes]
    return lines


def _total_row(c: CountResult, table: pd.DataFrame) -> pd.DataFrame:
    """The model totals under the table's columns (see the module docstring)."""
    t = c.totals
    values: dict[str, Any] = {
        "type": "", "output_shape": "", "params": t["params"], "macs": t["macs_fwd"], "flops": t["flops_fwd"],
        "bytes": t["bytes_fwd"], "intensity_flop_per_byte": round(t["flops_fwd"] / t["bytes_fwd"], 2)
        if t["bytes_fwd"] else float("nan"),
        "feature_map_mib": round(t["feature_map_bytes"] / MiB, 3),
        "macs_bwd": t["macs_bwd"], "flops_bwd": t["flops_bwd"], "bytes_bwd": t["bytes_bwd"],
    }
    row = pd.DataFrame([{col: values[col] for col in table.columns}], index=pd.Index([TOTAL_ROW], name="layer"))
    return row.astype(table.dtypes.to_dict())


def _json(c: CountResult, table: pd.DataFrame, model: str, input_spec: str | None) -> str:
    cfg = c.config
    backward = bool(cfg.get("backward"))
    totals = {k: v for k, v in c.totals.items() if backward or not k.endswith("_bwd")}
    body = {"model": model, "input": input_spec or cfg.get("inputs"), "batch": cfg.get("batch"),
            "mode": cfg.get("mode"), "backward": backward, "dtype": cfg.get("dtype"), "device": cfg.get("device"),
            "layers": table, "totals": totals, "uncounted": dict(sorted(c.uncounted.items())), "notes": c.notes}
    return json.dumps(to_jsonable(body), indent=1)


def count_outputs(c: CountResult, model: str, input_spec: str | None = None,
                  all_modules: bool = False) -> dict[str, str]:
    """Format -> text of ``hwprof count``'s output for every format ("table", "csv", "json", "md");
    what each holds is in the module docstring. ``input_spec`` defaults to the count's own."""
    backward = bool(c.config.get("backward"))
    table = layer_table(c, backward, all_modules=all_modules)
    head, totals = header_line(c, model, input_spec), totals_lines(c, backward)
    return {
        "table": f"{head}\n{render(table, 'table')}\n\n" + "\n".join(totals),
        "csv": render(pd.concat([table, _total_row(c, table)]), "csv").rstrip("\n"),
        "json": _json(c, table, model, input_spec),
        "md": f"**{head}**\n\n{render(table, 'md')}\n" + "\n".join(f"- {line}" for line in totals),
    }
