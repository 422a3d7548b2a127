"""Model level: MobileNetV1 against its dense twin, and the depthwise layers' share of FLOPs
and of time."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import pandas as pd
import torch
from torch import nn

from hwprof.device import free_device_memory
from hwprof.errors import HwprofError, is_oom
from hwprof.hardware.ceilings import Ceilings
from hwprof.spec import parse_dtype
from hwprof.studies.depthwise.measure import (
    CountFn,
    TimeFn,
    _first_line,
    _public,
    _resolve_count,
    _resolve_time,
    _rng_devices,
    _totals_row,
)


def depthwise_paths(model: nn.Module) -> set[str]:
    """Module paths of depthwise convolutions: ``nn.Conv*`` with groups == in_channels > 1."""
    return {path for path, m in model.named_modules()
            if isinstance(m, nn.modules.conv._ConvNd) and m.groups > 1 and m.groups == m.in_channels}


def _leaf_mask(layers: pd.DataFrame) -> pd.Series:
    """Leaf rows: the ``is_leaf`` column when present, else rows whose index path is no other
    row's prefix (``"a.b"`` is a parent of ``"a.b.c"``; the root ``""`` is everyone's parent)."""
    if "is_leaf" in layers:
        return layers["is_leaf"].astype(bool)
    paths = [str(p) for p in layers.index]
    return pd.Series([not any(q != p and (p == "" or q.startswith(p + ".")) for q in paths) for p in paths],
                     index=layers.index)


def depthwise_shares(layers: pd.DataFrame, depthwise: Iterable[str] | None = None, *,
                     flops_col: str = "flops_fwd", time_col: str = "fwd_s") -> dict[str, float]:
    """Share of FLOPs vs share of time spent in depthwise layers, over the *leaf* layers of a
    Profile-like ``layers`` frame (index = module path; columns ``type``, ``flops_col``,
    ``time_col``, and one way to tell depthwise layers):

    * ``depthwise``: the paths of depthwise layers (e.g. :func:`depthwise_paths` of the model); or
    * a boolean column ``depthwise``; or
    * ``groups`` (+ ``in_channels`` when present): depthwise iff groups > 1 (and == in_channels).

    depthwise_flop_share = sum(flops of depthwise leaves) / sum(flops of all leaves), the same
    for time. A missing time column gives NaN time shares.
    """
    leaves = layers[_leaf_mask(layers)]
    if depthwise is not None:
        paths = set(depthwise)
        mask = pd.Series([str(p) in paths for p in leaves.index], index=leaves.index)
    elif "depthwise" in leaves:
        mask = leaves["depthwise"].astype(bool)
    elif "groups" in leaves:
        g = pd.to_numeric(leaves["groups"], errors="coerce").fillna(1)
        mask = g > 1
        if "in_channels" in leaves:
            mask &= g == pd.to_numeric(leaves["in_channels"], errors="coerce")
    else:
        raise ValueError("depthwise_shares needs depthwise paths, a 'depthwise' column or a 'groups' column")
    flops = pd.to_numeric(leaves[flops_col], errors="coerce").fillna(0.0)
    out = {"depthwise_layers": int(mask.sum()), "leaf_layers": len(leaves),
           "depthwise_flops": float(flops[mask].sum()), "total_flops": float(flops.sum())}
    out["depthwise_flop_share"] = out["depthwise_flops"] / out["total_flops"] if out["total_flops"] else math.nan
    if time_col and time_col in leaves:
        t = pd.to_numeric(leaves[time_col], errors="coerce").fillna(0.0)
        out["depthwise_time_s"] = float(t[mask].sum())
        out["total_time_s"] = float(t.sum())
        out["depthwise_time_share"] = out["depthwise_time_s"] / out["total_time_s"] if out["total_time_s"] else math.nan
    else:
        out["depthwise_time_s"] = out["total_time_s"] = out["depthwise_time_share"] = math.nan
    return out


def _profile_fn() -> Callable[..., Any] | None:
    """``hwprof.profile`` when the module behind it exists in this build, else None."""
    return _public("profile")


def model_comparison(*, device: torch.device | str, dtype: str = "fp32", batch: int = 1, input_size: int = 224,
                     names: Sequence[str] = ("mobilenet_v1", "mobilenet_v1_dense"), count_fn: CountFn | None = None,
                     time_fn: TimeFn | None = None, budget_s: float = 0.25, warmup: int = 3, min_reps: int = 10,
                     ceilings: Ceilings | None = None, use_profile: bool = True) -> pd.DataFrame:
    """MobileNetV1 vs its dense twin (zoo models), forward in eval mode.

    Whole model: FLOPs from the counter, median time from ``time_fn``. Depthwise layers' share
    of FLOPs from the counter's leaf layers; their share of time from ``hwprof.profile``'s
    per-layer forward times (``fwd_s``) when it is available and ``ceilings`` are given
    (:func:`depthwise_shares` either way). A failure of the per-layer pass is recorded in
    ``profile_error``; the whole-model numbers stand.
    """
    from hwprof import zoo

    dev = torch.device(device)
    count, timer = _resolve_count(count_fn), _resolve_time(time_fn)
    dt = parse_dtype(dtype)
    prof = _profile_fn() if use_profile and ceilings is not None else None
    rows = []
    for name in names:
        with torch.random.fork_rng(devices=_rng_devices(dev)):
            torch.manual_seed(0)
            model = zoo.build(name)[0].eval().to(device=dev, dtype=dt)
            x = torch.randn(batch, 3, input_size, input_size, device=dev, dtype=dt)
        dw = depthwise_paths(model)
        row: dict[str, Any] = {"model": name, "input": f"3x{input_size}x{input_size}", "batch": batch, "dtype": dtype,
                               "depthwise_layers": len(dw)}
        try:
            c = count(model, (x,), backward=False)
            row.update(_totals_row(c, False))
            layers = getattr(c, "layers", None)
            if layers is not None and "flops_fwd" in layers:
                row["depthwise_flop_share"] = depthwise_shares(layers, dw, time_col="")["depthwise_flop_share"]

            def fwd(model: nn.Module = model, x: torch.Tensor = x) -> None:
                with torch.no_grad():
                    model(x)
            stats = timer(fwd, device=dev, budget_s=budget_s, warmup=warmup, min_reps=min_reps)
            row.update(time_s=float(stats.median_s), iqr_s=float(stats.iqr_s), reps=int(stats.reps), status="ok")
        except (RuntimeError, HwprofError, MemoryError) as e:
            row.update(status="oom" if is_oom(e) else "error", error=_first_line(e))
        if prof is not None and ceilings is not None and row.get("status") == "ok" and dw:
            try:
                p = prof(model, (x,), device=str(dev), mode="inference", ceilings=ceilings,
                         budget_s=budget_s, name=name)
                shares = depthwise_shares(p.layers, dw, flops_col="flops_fwd", time_col="fwd_s")
                row["depthwise_time_share"] = shares["depthwise_time_share"]
                row["depthwise_flop_share_profile"] = shares["depthwise_flop_share"]
            except (ImportError, RuntimeError, HwprofError, MemoryError) as e:
                row["profile_error"] = _first_line(e)
        elif prof is not None and row.get("status") == "ok":
            row["depthwise_time_share"] = 0.0   # no depthwise layer: nothing to time
        rows.append(row)
        del model, x
        free_device_memory(dev)
    df = pd.DataFrame(rows)
    for col in ("depthwise_flop_share", "depthwise_time_share", "time_s", "flops"):
        if col not in df:
            df[col] = math.nan
    df["achieved_flop_per_s"] = df["flops"] / df["time_s"]
    return df
