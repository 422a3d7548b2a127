"""Roofline arithmetic: pure functions on plain numbers and DataFrames.

For a layer doing ``flops`` FLOPs and moving ``bytes`` bytes in ``time_s`` seconds:

    intensity            = flops / bytes                                  [FLOP/byte]
    achieved_flop_per_s  = flops / time_s
    achieved_bytes_per_s = bytes / time_s
    attainable_flop_per_s = min(compute_roof, intensity * bandwidth)      (Williams et al., CACM 2009)
    efficiency           = achieved_flop_per_s / attainable_flop_per_s
    bound                = "memory" if intensity * bandwidth < compute_roof else "compute"
    ridge intensity      = compute_roof / bandwidth

``bandwidth`` is the one of the memory level the row's working set fits in (:func:`place`: its
bytes touched against each level's effective capacity, the hierarchical roofline of Ilic, Pratas
and Sousa, "Cache-aware roofline model", IEEE CAL 2014): a BatchNorm over a tensor that stays in
the L2 is held to the L2's bandwidth, not DRAM's. With one level (ceilings without a sweep) that
is main memory's bandwidth for every row.

The compute roof is the one of the math mode the op actually runs in (:func:`roof_key`):
on CUDA, cuDNN runs fp32 convolutions in TF32 unless ``torch.backends.cudnn.allow_tf32`` is
off, while fp32 matmuls use TF32 only if ``torch.backends.cuda.matmul.allow_tf32`` is on;
bf16/fp16 matmuls and convs use the tensor-core roof of their dtype. Elementwise, norm and
pooling work never runs on tensor cores: it is held to the fp32 (CUDA-core / SIMD) roof.
Roofs are dense peaks (measured, or datasheet), never sparse ones, so efficiency is <= 1
unless the kernel does less work than counted (Winograd/FFT convolutions, fused kernels):
such rows are flagged ``above_roof``, never clipped.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from hwprof.counting.formulas import CONV_CLASSES, MATMUL_CLASSES, TENSOR_CLASSES
from hwprof.device import MathModes
from hwprof.hardware.levels import MemoryLevel, level_of

__all__ = ["MathModes", "roof_key", "derive", "ridge_intensity", "place", "CONV_CLASSES", "MATMUL_CLASSES",
           "TENSOR_CLASSES", "LEVEL_COLUMNS"]

LEVEL_COLUMNS = ("working_set_bytes", "memory_level", "level_bytes_per_s")
"""What :func:`place` adds: the working set placed, its level's name and bandwidth."""

_DTYPE_ROOF = {"float32": "fp32", "bfloat16": "bf16", "float16": "fp16", "float64": "fp64"}



def roof_key(dtype: str, op_class: str, modes: MathModes) -> str:
    """Which compute roof applies: ``op_class`` an op class of the formula registry ("conv",
    "matmul", "attention", "rnn", "norm", "elementwise", ...; "other"); ``dtype`` a torch dtype
    name ("float32", "bfloat16"...); ``modes`` the TF32 switches the run ran under (recorded
    with the measurement). Returns a key of ``Ceilings.flop_per_s``.

    "conv" takes the cuDNN TF32 rule, "matmul", "attention" and "rnn" the cuBLAS one; every other
    class runs on CUDA cores / SIMD units: the fp32 roof for 16-bit dtypes, the dtype's own otherwise."""
    d = _DTYPE_ROOF.get(dtype.removeprefix("torch."), "fp32")
    if op_class not in TENSOR_CLASSES:
        return "fp32" if d in ("bf16", "fp16") else d
    if d == "fp32" and modes.device_type == "cuda":
        if (op_class in CONV_CLASSES and modes.cudnn_tf32) or (op_class in MATMUL_CLASSES and modes.matmul_tf32):
            return "tf32"
    return d


def ridge_intensity(compute_roof_flop_per_s: float, bytes_per_s: float) -> float:
    """Intensity (FLOP/byte) where the bandwidth slope meets the compute roof."""
    return compute_roof_flop_per_s / bytes_per_s


def place(df: pd.DataFrame, levels: Sequence[MemoryLevel], working_set: str = "working_set_bytes") -> pd.DataFrame:
    """A copy of ``df`` with ``memory_level`` and ``level_bytes_per_s``: the smallest level of
    ``levels`` whose effective capacity holds the row's ``working_set`` bytes (main memory when
    none does; a level the sweep could not resolve takes the next larger level's bandwidth:
    :func:`hwprof.hardware.levels.level_of`). Without levels: "" and NaN."""
    out = df.copy()
    placed = [level_of(float(ws), levels) for ws in out[working_set]]
    out["memory_level"] = [name for name, _ in placed]
    out["level_bytes_per_s"] = pd.Series([bw for _, bw in placed], index=out.index, dtype=float)
    return out


def derive(df: pd.DataFrame, flop_per_s: Mapping[str, float], bytes_per_s: float,
           flops: str = "flops", bytes_: str = "bytes", time_s: str = "time_s", roof: str = "roof_key",
           tolerance: float = 1.0, level_bandwidth: str = "level_bytes_per_s") -> pd.DataFrame:
    """Add the derived roofline columns to a copy of ``df``.

    ``df`` needs columns ``flops``, ``bytes``, ``time_s`` and ``roof_key`` (see :func:`roof_key`).
    The memory roof of a row is its ``level_bandwidth`` column (:func:`place`) where the row has
    one, else ``bytes_per_s`` (main memory); ``pct_of_memory_roof`` is against that same bandwidth.
    A row whose achieved FLOP/s exceeds ``tolerance`` x attainable is flagged ``above_roof``.
    Rows with no time or no bytes get NaN metrics, never a made-up number.
    """
    out = df.copy()
    t = out[time_s].where(out[time_s] > 0)
    b = out[bytes_].where(out[bytes_] > 0)
    roof_values = out[roof].map(lambda k: flop_per_s.get(k, np.nan)).astype(float)
    bw = out[level_bandwidth].fillna(bytes_per_s) if level_bandwidth in out else pd.Series(bytes_per_s, index=out.index)
    out["intensity"] = out[flops] / b
    out["achieved_flop_per_s"] = out[flops] / t
    out["achieved_bytes_per_s"] = out[bytes_] / t
    out["compute_roof_flop_per_s"] = roof_values
    out["memory_roof_flop_per_s"] = out["intensity"] * bw
    out["attainable_flop_per_s"] = np.minimum(roof_values, out["memory_roof_flop_per_s"])
    out["efficiency"] = out["achieved_flop_per_s"] / out["attainable_flop_per_s"].where(out["attainable_flop_per_s"] > 0)
    out["pct_of_compute_roof"] = 100 * out["achieved_flop_per_s"] / roof_values
    out["pct_of_memory_roof"] = 100 * out["achieved_bytes_per_s"] / bw
    out["bound"] = np.where(out["intensity"].isna(), "",
                            np.where(out["memory_roof_flop_per_s"] < roof_values, "memory", "compute"))
    out["above_roof"] = (out["efficiency"] > tolerance).fillna(False)
    return out
