"""The FasterNet-style table (Chen et al., "Run, Don't Walk", CVPR 2023, Table 1): 10-layer
stacks of Conv / GConv / DWConv / PConv, against the paper's RTX 2080Ti figures."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import pandas as pd
import torch
from torch import nn

from hwprof.spec import parse_dtype
from hwprof.studies.depthwise.measure import (
    CountFn,
    TimeFn,
    _measure,
    _resolve_count,
    _resolve_time,
    _rng_devices,
)
from hwprof.studies.depthwise.operators import _conv

FASTERNET_PAPER: dict[str, dict[str, float]] = {
    "DWConv": {"gpu_2080ti_gmac_per_s": 313.0},
    "Conv": {"gpu_2080ti_gmac_per_s": 10151.0},
}
"""FasterNet (Chen et al., CVPR 2023), Table 1, RTX 2080Ti column, as quoted in docs/REFERENCES.md. The
paper's "FLOPS" counts multiply-accumulates: 313 G = 313e9 MAC/s = 626e9 FLOP/s in hwprof's
convention. Other cells of the table are left out (not verified here)."""

FASTERNET_SHAPES: tuple[tuple[int, int], ...] = ((96, 56), (192, 28), (384, 14), (768, 7))
"""(C, H=W) of the four stages of FasterNet-T2 (embed_dim 96, patch stride 4, 224x224 input; the
repository's cfg/fasternet_t2.yaml). Whether the paper's Table 1 used these shapes is not claimed."""

FASTERNET_OPS: tuple[str, ...] = ("Conv", "GConv", "DWConv", "PConv")


class PartialConv(nn.Module):
    """FasterNet's PConv (``split_cat`` form): a 3x3 conv on the first C / ``n_div`` channels,
    the other channels passed through, then concatenated."""

    def __init__(self, channels: int, n_div: int = 4) -> None:
        super().__init__()
        self.dim_conv = channels // n_div
        self.dim_untouched = channels - self.dim_conv
        self.conv = nn.Conv2d(self.dim_conv, self.dim_conv, 3, 1, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x1, x2 = torch.split(x, [self.dim_conv, self.dim_untouched], dim=1)
        return torch.cat((self.conv(x1), x2), 1)


def build_fasternet_stack(op: str, channels: int, layers: int = 10) -> nn.Sequential:
    """``layers`` stacked layers of ``op``: Conv (dense 3x3), GConv (3x3, groups 16), DWConv (3x3,
    groups C), PConv (3x3 on C/4 channels)."""
    def one() -> nn.Module:
        if op == "Conv":
            return _conv(channels, 3, 1)
        if op == "GConv":
            return _conv(channels, 3, 16)
        if op == "DWConv":
            return _conv(channels, 3, channels)
        if op == "PConv":
            return PartialConv(channels)
        raise ValueError(f"unknown FasterNet operator {op!r}; expected one of {FASTERNET_OPS}")
    return nn.Sequential(*(one() for _ in range(layers)))


def fasternet_table(*, device: torch.device | str, batch: int = 1, dtype: str = "fp32",
                    shapes: Sequence[tuple[int, int]] = FASTERNET_SHAPES, ops: Sequence[str] = FASTERNET_OPS,
                    layers: int = 10, count_fn: CountFn | None = None, time_fn: TimeFn | None = None,
                    budget_s: float = 0.25, warmup: int = 3, min_reps: int = 10,
                    progress: Callable[[str], None] | None = None) -> pd.DataFrame:
    """Forward of each operator's 10-layer stack (NCHW) at each shape, plus one row per operator
    over all shapes (shape "all": total FLOPs / total time).

    achieved_mac_per_s = macs / time_s is the paper's "FLOPS"; the paper columns hold its
    RTX 2080Ti figure as printed (MAC/s) and x2 (FLOP/s) where :data:`FASTERNET_PAPER` has one.
    """
    dev = torch.device(device)
    count, timer = _resolve_count(count_fn), _resolve_time(time_fn)
    dt = parse_dtype(dtype)
    rows = []
    for op in ops:
        for c, s in shapes:
            def build(op: str = op, c: int = c, s: int = s) -> tuple[nn.Module, torch.Tensor]:
                with torch.random.fork_rng(devices=_rng_devices(dev)):
                    torch.manual_seed(0)
                    m = build_fasternet_stack(op, c, layers).to(device=dev, dtype=dt)
                    x = torch.randn(batch, c, s, s, device=dev, dtype=dt)
                return m, x
            r = _measure(build, False, device=dev, count_fn=count, time_fn=timer, budget_s=budget_s,
                         warmup=warmup, min_reps=min_reps)
            rows.append({"operator": op, "shape": f"{c}x{s}x{s}", "channels": c, "spatial": s, "batch": batch,
                         "dtype": dtype, "layers": layers, **r})
            if progress is not None:
                progress(f"FasterNet {op} {c}x{s}x{s}")
    df = pd.DataFrame(rows)
    agg_rows = []
    for op in ops:
        g = df[(df["operator"] == op) & (df["status"] == "ok")]
        if g.empty:
            continue
        agg_rows.append({"operator": op, "shape": "all", "batch": batch, "dtype": dtype, "layers": layers,
                         "status": "ok", "flops": g["flops"].sum(), "macs": g["macs"].sum(),
                         "bytes": g["bytes"].sum(), "time_s": g["time_s"].sum()})
    df = pd.concat([df, pd.DataFrame(agg_rows)], ignore_index=True)
    df["intensity"] = df["flops"] / df["bytes"]
    df["achieved_flop_per_s"] = df["flops"] / df["time_s"]
    df["achieved_mac_per_s"] = df["macs"] / df["time_s"]
    paper = [FASTERNET_PAPER.get(op, {}).get("gpu_2080ti_gmac_per_s", math.nan) * 1e9 for op in df["operator"]]
    df["paper_2080ti_mac_per_s"] = paper
    df["paper_2080ti_flop_per_s"] = [2.0 * v for v in paper]
    return df
