"""Autocast (automatic mixed precision) as hwprof runs it, and as the user's own code may already run it.

``amp="bf16" | "fp16"`` (API) / ``--amp bf16`` (CLI) means what ``torch.autocast`` means: the
parameters stay in their own dtype (fp32, usually), and inside the forward each op that autocast
lists runs in the autocast dtype (matmuls, convolutions) while the others stay in fp32
(reductions, softmax, losses). The counter sees the ops after autocast has cast their inputs, so
every op row carries the dtype it actually ran in, and the join holds each op to the roof of that
dtype. With fp16 on CUDA the training step scales the loss with a ``torch.amp.GradScaler``, as an
fp16 training loop must.

A call made inside the user's own ``torch.autocast`` region (``with torch.autocast("cpu",
dtype=torch.bfloat16): hwprof.count(m, x)``) runs under it too: :func:`ambient_amp` reads it, and
the records say so, as if ``amp=`` had been given.
"""

from __future__ import annotations

import contextlib
from typing import Any

import torch

__all__ = ["AMP_DTYPES", "parse_amp", "amp_name", "autocast", "ambient_amp", "resolve_amp", "needs_grad_scaler"]

AMP_DTYPES: dict[str, torch.dtype] = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16,
                                      "fp16": torch.float16, "float16": torch.float16, "half": torch.float16}


def parse_amp(amp: Any) -> torch.dtype | None:
    """None / False -> None (no autocast); "bf16" / "fp16" (or their torch dtypes) -> that dtype.
    Anything else is a ``ValueError`` naming the choices."""
    if amp is None or amp is False:
        return None
    if isinstance(amp, torch.dtype) and amp in (torch.bfloat16, torch.float16):
        return amp
    if isinstance(amp, str) and amp.strip().lower() in AMP_DTYPES:
        return AMP_DTYPES[amp.strip().lower()]
    raise ValueError(f"amp must be 'bf16' or 'fp16' (or None), got {amp!r}")


def amp_name(dtype: torch.dtype | None) -> str | None:
    """torch.bfloat16 -> "bf16", torch.float16 -> "fp16", None -> None."""
    if dtype is None:
        return None
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, str(dtype).removeprefix("torch."))


def ambient_amp(device_type: str) -> torch.dtype | None:
    """The autocast dtype in force for ``device_type`` ("cpu", "cuda") where hwprof was called, or None."""
    try:
        if not torch.is_autocast_enabled(device_type):
            return None
        return torch.get_autocast_dtype(device_type)
    except RuntimeError:   # a device type autocast does not know (meta): no autocast there
        return None


def resolve_amp(amp: Any, device_type: str) -> torch.dtype | None:
    """``amp`` parsed (:func:`parse_amp`), else the user's own autocast region (:func:`ambient_amp`)."""
    return parse_amp(amp) or ambient_amp(device_type)


def autocast(device_type: str, dtype: torch.dtype | None) -> contextlib.AbstractContextManager[Any]:
    """``torch.autocast(device_type, dtype)``, or a null context for ``dtype`` None."""
    if dtype is None or device_type == "meta":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def needs_grad_scaler(device_type: str, dtype: torch.dtype | None) -> bool:
    """fp16 autocast on CUDA trains with a ``GradScaler`` (fp16 gradients underflow without one);
    bf16 and the CPU do not."""
    return device_type == "cuda" and dtype == torch.float16
