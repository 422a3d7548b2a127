"""Vendor datasheet peaks of common NVIDIA GPUs: DENSE figures (no 2:4 sparsity), in FLOP/s and bytes/s.

Fields per entry: ``fp32`` (CUDA cores, no TF32), ``tf32``, ``bf16``, ``fp16`` (tensor cores,
FP32 accumulate: the mode PyTorch's GEMMs use), ``fp64`` (FP64 tensor cores where the GPU has
them, since a float64 matmul uses them; else the FP64 vector rate), ``bytes_per_s`` (DRAM
bandwidth). ``None`` = the datasheet gives no such mode (e.g. no TF32 before Ampere).

Datasheets print sparse tensor figures with an asterisk; every tensor figure here is that
number halved (H100 SXM: BF16 1,979 TFLOP/s sparse -> 989.4 dense). Consumer cards (RTX 2080 Ti,
RTX 4090) run FP16 tensor math with FP32 accumulate at half the FP16-accumulate rate; the
FP32-accumulate figure is the one listed. Boost clocks of the reference design.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["DATASHEET", "lookup", "FIELDS"]

FIELDS = ("fp32", "tf32", "bf16", "fp16", "fp64", "bytes_per_s")

T = 1e12   # FLOP/s per TFLOP/s
GB = 1e9   # bytes/s per GB/s

_H100_SXM = dict(fp32=66.9 * T, tf32=494.7 * T, bf16=989.4 * T, fp16=989.4 * T, fp64=66.9 * T)
_H100_PCIE = dict(fp32=51.2 * T, tf32=378.0 * T, bf16=756.0 * T, fp16=756.0 * T, fp64=51.2 * T)
_A100 = dict(fp32=19.5 * T, tf32=156.0 * T, bf16=312.0 * T, fp16=312.0 * T, fp64=19.5 * T)

DATASHEET: dict[str, dict[str, Any]] = {
    "H100 SXM": dict(_H100_SXM, bytes_per_s=3350 * GB, source="NVIDIA H100 Tensor Core GPU datasheet (SXM5 80GB HBM3)"),
    "H100 PCIe": dict(_H100_PCIE, bytes_per_s=2000 * GB, source="NVIDIA H100 Tensor Core GPU datasheet (PCIe 80GB HBM2e)"),
    "H200": dict(_H100_SXM, bytes_per_s=4800 * GB, source="NVIDIA H200 Tensor Core GPU datasheet (SXM 141GB HBM3e)"),
    "A100 SXM 40GB": dict(_A100, bytes_per_s=1555 * GB, source="NVIDIA A100 datasheet (SXM4 40GB HBM2)"),
    "A100 SXM 80GB": dict(_A100, bytes_per_s=2039 * GB, source="NVIDIA A100 datasheet (SXM4 80GB HBM2e)"),
    "A100 PCIe 40GB": dict(_A100, bytes_per_s=1555 * GB, source="NVIDIA A100 datasheet (PCIe 40GB HBM2)"),
    "A100 PCIe 80GB": dict(_A100, bytes_per_s=1935 * GB, source="NVIDIA A100 datasheet (PCIe 80GB HBM2e)"),
    "L4": dict(fp32=30.3 * T, tf32=60.0 * T, bf16=121.0 * T, fp16=121.0 * T, fp64=None, bytes_per_s=300 * GB,
               source="NVIDIA L4 Tensor Core GPU datasheet"),
    "L40S": dict(fp32=91.6 * T, tf32=183.0 * T, bf16=362.05 * T, fp16=362.05 * T, fp64=None, bytes_per_s=864 * GB,
                 source="NVIDIA L40S GPU datasheet"),
    "RTX 4090": dict(fp32=82.6 * T, tf32=82.6 * T, bf16=165.2 * T, fp16=165.2 * T, fp64=1.29 * T,
                     bytes_per_s=1008 * GB, source="NVIDIA Ada Lovelace architecture whitepaper (GeForce RTX 4090)"),
    "V100 SXM2": dict(fp32=15.7 * T, tf32=None, bf16=None, fp16=125.0 * T, fp64=7.8 * T, bytes_per_s=900 * GB,
                      source="NVIDIA Tesla V100 datasheet (SXM2)"),
    "V100 PCIe": dict(fp32=14.0 * T, tf32=None, bf16=None, fp16=112.0 * T, fp64=7.0 * T, bytes_per_s=900 * GB,
                      source="NVIDIA Tesla V100 datasheet (PCIe)"),
    "RTX 2080 Ti": dict(fp32=13.4 * T, tf32=None, bf16=None, fp16=53.8 * T, fp64=0.42 * T, bytes_per_s=616 * GB,
                        source="NVIDIA Turing architecture whitepaper (GeForce RTX 2080 Ti reference)"),
}

# (pattern on the upper-cased device name, entry key); first match wins, so specific before general.
_RULES: tuple[tuple[str, str | None], ...] = (
    (r"H100.*\bNVL\b", None),                 # H100 NVL: different clocks, not tabulated
    (r"H100.*PCIE", "H100 PCIe"),
    (r"H100", "H100 SXM"),                    # "NVIDIA H100 80GB HBM3" is the SXM5 part
    (r"H200.*\bNVL\b", None),
    (r"H200", "H200"),
    (r"A100.*SXM.*80\s*GB|A100.*80\s*GB.*SXM", "A100 SXM 80GB"),
    (r"A100.*SXM", "A100 SXM 40GB"),
    (r"A100.*PCIE.*80\s*GB|A100.*80\s*GB.*PCIE", "A100 PCIe 80GB"),
    (r"A100.*PCIE", "A100 PCIe 40GB"),
    (r"\bL40S\b", "L40S"),
    (r"\bL4\b", "L4"),
    (r"RTX\s*4090(?!\s*(D|LAPTOP))", "RTX 4090"),
    (r"V100S", None),
    (r"V100.*SXM", "V100 SXM2"),
    (r"V100.*PCIE", "V100 PCIe"),
    (r"RTX\s*2080\s*TI", "RTX 2080 Ti"),
)


def lookup(device_name: str) -> dict[str, Any] | None:
    """The datasheet entry for a CUDA device name (e.g. ``"NVIDIA H100 80GB HBM3"`` -> H100 SXM), or None.

    Returns a copy with an added ``"key"`` field naming the table row.
    """
    name = device_name.upper()
    for pattern, key in _RULES:
        if re.search(pattern, name):
            if key is None:
                return None
            return {"key": key, **DATASHEET[key]}
    return None
