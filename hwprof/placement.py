"""Where a model lives: its device, floating dtype and memory format (read-only queries)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

__all__ = ["model_device", "model_float_dtype", "model_placement"]


def model_device(model: nn.Module) -> torch.device:
    """Device of the first parameter (else buffer); CPU for a model without tensors."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")


def model_float_dtype(model: nn.Module) -> torch.dtype:
    """dtype of the first floating parameter or buffer; float32 if there is none."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def model_placement(model: nn.Module) -> dict[str, Any]:
    """Where the model lives: device of its first parameter/buffer, floating dtypes, channels_last-ness.

    ``channels_last`` is True when every 4-D floating parameter is channels_last-contiguous
    (None when the model has none).
    """
    tensors = [*model.parameters(), *model.buffers()]
    device = tensors[0].device if tensors else None
    dtypes = sorted({str(t.dtype) for t in tensors if t.is_floating_point()})
    four_d = [p for p in model.parameters() if p.dim() == 4 and p.is_floating_point()]
    cl = all(p.is_contiguous(memory_format=torch.channels_last) for p in four_d) if four_d else None
    devices = {str(t.device) for t in tensors}
    return {"device": device, "dtypes": dtypes, "channels_last": cl, "multi_device": len(devices) > 1}
