"""The model of the measure/profile golden cases (``hwprof ... golden_models:mlp --input 64``): linear
layers only, so that the CPU allocator sees the same tensors on every x86 CPU (no oneDNN scratch)."""

from __future__ import annotations

import torch
from torch import nn


def mlp() -> nn.Module:
    """Linear(64, 128), ReLU, Linear(128, 10): 8,320 + 1,290 = 9,610 parameters."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
