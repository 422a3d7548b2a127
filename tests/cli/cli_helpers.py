"""Helpers of the CLI tests (imported by name: tests/cli is on sys.path under pytest)."""

from __future__ import annotations

from typing import Any

import torch

from hwprof.hardware.ceilings import Ceilings


def fixed_ceilings(*args: Any, **kwargs: Any) -> Ceilings:
    """What ``measure_ceilings`` returns, without measuring: fp32 300 GFLOP/s, bf16 2.4 TFLOP/s, 25 GB/s."""
    return Ceilings(device_type="cpu", device_name="test cpu", torch_version=torch.__version__, date="2026-01-01",
                    source="measured", flop_per_s={"fp32": 3.0e11, "bf16": 2.4e12}, bytes_per_s=2.5e10, threads=1)
