"""Vendor datasheet peaks of common GPUs: DENSE figures (no 2:4 sparsity), in FLOP/s and bytes/s.

Fields per entry: ``fp32`` (CUDA cores, no TF32), ``tf32``, ``bf16``, ``fp16`` (tensor cores,
FP32 accumulate: the mode PyTorch's GEMMs use), ``fp64`` (FP64 tensor cores where the GPU has
them, since a float64 matmul uses them; else the FP64 vector rate), ``bytes_per_s`` (DRAM
bandwidth), ``l2_bytes`` (the L2 cache, as the vendor's architecture documents give it; MI300X: its
4 MB L2 per XCD x 8 XCDs, beside a 256 MB Infinity Cache that is not tabulated). ``None`` = the
datasheet gives no such mode (e.g. no TF32 before Ampere). AMD's MI300X: matrix-core figures
(FP32 and FP64 matrix 163.4 TFLOP/s; TF32 653.7, BF16/FP16 1307.4 dense).

Datasheets print sparse tensor figures with an asterisk; every tensor figure here is that
number halved (H100 SXM: BF16 1,979 TFLOP/s sparse -> 989.4 dense). Consumer cards (RTX 2080 Ti,
RTX 4090) run FP16 tensor math with FP32 accumulate at half the FP16-accumulate rate; the
FP32-accumulate figure is the one listed. Boost clocks of the reference design.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["DATASHEET", "lookup", "resolve", "FIELDS", "HBM_PARTS"]

FIELDS = ("fp32", "tf32", "bf16", "fp16", "fp64", "bytes_per_s", "l2_bytes")

T = 1e12   # FLOP/s per TFLOP/s
GB = 1e9   # bytes/s per GB/s
MB = 2**20  # bytes per (binary) MB of cache, as vendors count cache sizes

_H100_SXM = dict(fp32=66.9 * T, tf32=494.7 * T, bf16=989.4 * T, fp16=989.4 * T, fp64=66.9 * T, l2_bytes=50 * MB)
_H100_PCIE = dict(fp32=51.2 * T, tf32=378.0 * T, bf16=756.0 * T, fp16=756.0 * T, fp64=51.2 * T, l2_bytes=50 * MB)
_A100 = dict(fp32=19.5 * T, tf32=156.0 * T, bf16=312.0 * T, fp16=312.0 * T, fp64=19.5 * T, l2_bytes=40 * MB)

DATASHEET: dict[str, dict[str, Any]] = {
    "H100 SXM": dict(_H100_SXM, bytes_per_s=3350 * GB, source="NVIDIA H100 Tensor Core GPU datasheet (SXM5 80GB HBM3)"),
    "H100 PCIe": dict(_H100_PCIE, bytes_per_s=2000 * GB, source="NVIDIA H100 Tensor Core GPU datasheet (PCIe 80GB HBM2e)"),
    "H200": dict(_H100_SXM, bytes_per_s=4800 * GB, source="NVIDIA H200 Tensor Core GPU datasheet (SXM 141GB HBM3e)"),
    "A100 SXM 40GB": dict(_A100, bytes_per_s=1555 * GB, source="NVIDIA A100 datasheet (SXM4 40GB HBM2)"),
    "A100 SXM 80GB": dict(_A100, bytes_per_s=2039 * GB, source="NVIDIA A100 datasheet (SXM4 80GB HBM2e)"),
    "A100 PCIe 40GB": dict(_A100, bytes_per_s=1555 * GB, source="NVIDIA A100 datasheet (PCIe 40GB HBM2)"),
    "A100 PCIe 80GB": dict(_A100, bytes_per_s=1935 * GB, source="NVIDIA A100 datasheet (PCIe 80GB HBM2e)"),
    "L4": dict(fp32=30.3 * T, tf32=60.0 * T, bf16=121.0 * T, fp16=121.0 * T, fp64=None, bytes_per_s=300 * GB,
               l2_bytes=48 * MB, source="NVIDIA L4 Tensor Core GPU datasheet"),
    "L40S": dict(fp32=91.6 * T, tf32=183.0 * T, bf16=362.05 * T, fp16=362.05 * T, fp64=None, bytes_per_s=864 * GB,
                 l2_bytes=96 * MB, source="NVIDIA L40S GPU datasheet"),
    "RTX 4090": dict(fp32=82.6 * T, tf32=82.6 * T, bf16=165.2 * T, fp16=165.2 * T, fp64=1.29 * T,
                     bytes_per_s=1008 * GB, l2_bytes=72 * MB,
                     source="NVIDIA Ada Lovelace architecture whitepaper (GeForce RTX 4090)"),
    "V100 SXM2": dict(fp32=15.7 * T, tf32=None, bf16=None, fp16=125.0 * T, fp64=7.8 * T, bytes_per_s=900 * GB,
                      l2_bytes=6 * MB, source="NVIDIA Tesla V100 datasheet (SXM2)"),
    "V100 PCIe": dict(fp32=14.0 * T, tf32=None, bf16=None, fp16=112.0 * T, fp64=7.0 * T, bytes_per_s=900 * GB,
                      l2_bytes=6 * MB, source="NVIDIA Tesla V100 datasheet (PCIe)"),
    "RTX 2080 Ti": dict(fp32=13.4 * T, tf32=None, bf16=None, fp16=53.8 * T, fp64=0.42 * T, bytes_per_s=616 * GB,
                        l2_bytes=5.5 * MB, source="NVIDIA Turing architecture whitepaper (GeForce RTX 2080 Ti reference)"),
    "MI300X": dict(fp32=163.4 * T, tf32=653.7 * T, bf16=1307.4 * T, fp16=1307.4 * T, fp64=163.4 * T,
                   bytes_per_s=5300 * GB, l2_bytes=32 * MB, source="AMD Instinct MI300X datasheet (192GB HBM3)"),
}

HBM_PARTS = frozenset({"H100 SXM", "H100 PCIe", "H200", "A100 SXM 40GB", "A100 SXM 80GB", "A100 PCIe 40GB",
                       "A100 PCIe 80GB", "V100 SXM2", "V100 PCIe", "MI300X"})
"""Entries whose main memory is HBM (the others: GDDR)."""

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
    (r"MI300X", "MI300X"),
)

# Short names a user may type (``hwprof predict --on A100``) for the part most often meant.
_ALIASES = {"A100": "A100 SXM 80GB", "V100": "V100 SXM2", "4090": "RTX 4090", "2080TI": "RTX 2080 Ti"}


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


def resolve(name: str) -> dict[str, Any] | None:
    """A user-typed device name -> its entry (as :func:`lookup` returns it), or None: a table key in
    any case and spacing ("h100 sxm", "L4"), a short alias ("A100" is the SXM 80GB part), or a
    device name as torch reports it ("NVIDIA H100 80GB HBM3")."""
    squash = re.sub(r"[\s_-]+", "", name).upper()
    for key in DATASHEET:
        if re.sub(r"[\s_-]+", "", key).upper() == squash:
            return {"key": key, **DATASHEET[key]}
    if squash in _ALIASES:
        return {"key": _ALIASES[squash], **DATASHEET[_ALIASES[squash]]}
    return lookup(name)
