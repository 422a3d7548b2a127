"""Roofs and derived metrics: the math modes in force and the roofline columns of the sweep's rows."""

from __future__ import annotations

import math

import pandas as pd

from hwprof import roofline
from hwprof.hardware.ceilings import Ceilings
from hwprof.roofline import MathModes, roof_key


def math_modes(device_type: str) -> MathModes:
    """The math-mode switches in force (:meth:`hwprof.roofline.MathModes.current`)."""
    return MathModes.current(device_type)


def derive(df: pd.DataFrame, ceilings: Ceilings, modes: MathModes) -> pd.DataFrame:
    """Add the roofline columns to the sweep's rows with :func:`hwprof.roofline.derive`.

    Every point is a convolution, so its roof is ``roof_key(dtype, "conv", modes)``: "tf32" for
    fp32 on CUDA while cuDNN may use TF32 (the default), else the dtype's roof. Added here:
    ``memory_roof_bytes_per_s`` (the bandwidth used) and ``above_compute_roof`` (achieved FLOP/s
    above the compute roof itself: fewer multiplies than the direct-convolution count, e.g.
    Winograd/FFT), beside roofline's ``above_roof`` (above ``min(compute roof, bandwidth x
    intensity)``, which caches can also cause).
    """
    out = df.copy()
    for c in ("flops", "bytes", "time_s"):
        out[c] = pd.to_numeric(out[c], errors="coerce").astype(float)
    out["roof_key"] = [roof_key(_TORCH_DTYPE_NAME.get(str(d), str(d)), "conv", modes) for d in out["dtype"]]
    roofs = {k: float(v) for k, v in ceilings.flop_per_s.items() if v}
    bw = float(ceilings.bytes_per_s or math.nan)
    out = roofline.derive(out, roofs, bw)
    out["memory_roof_bytes_per_s"] = bw
    out["above_compute_roof"] = (out["achieved_flop_per_s"] > out["compute_roof_flop_per_s"]).fillna(False).astype(bool)
    out["above_roof"] = out["above_roof"].astype(bool)
    return out


_TORCH_DTYPE_NAME = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16", "fp64": "float64"}
