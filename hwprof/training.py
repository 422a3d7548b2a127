"""The training step hwprof runs everywhere (measured runs and the memory replay alike):
the loss it backpropagates and the optimizers it builds, so that prediction and measurement
do the same work."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

__all__ = ["OPTIMIZERS", "make_optimizer", "training_loss", "loss_tensors"]

OPTIMIZERS = ("sgd", "momentum", "adam", "adamw")


def loss_tensors(output: Any) -> list[torch.Tensor]:
    """The output tensors a training step backpropagates from: the output's own ``loss`` when it
    carries one (a mapping key or attribute holding a floating tensor that requires grad: Hugging
    Face's ``ModelOutput`` when ``labels`` are given), else every floating tensor of the output that
    requires grad."""
    loss = output.get("loss") if isinstance(output, Mapping) else getattr(output, "loss", None)
    if isinstance(loss, torch.Tensor) and loss.is_floating_point() and loss.requires_grad:
        return [loss]
    return [t for t in tree_flatten(output)[0]
            if isinstance(t, torch.Tensor) and t.is_floating_point() and t.requires_grad]


def training_loss(output: Any) -> torch.Tensor | None:
    """``t.float().sum()`` over :func:`loss_tensors` (summed if several); None when there is none."""
    parts = [t.float().sum() for t in loss_tensors(output)]
    if not parts:
        return None
    return parts[0] if len(parts) == 1 else torch.stack(parts).sum()


def make_optimizer(spec: Any, params: list[nn.Parameter], foreach: bool | None = None) -> torch.optim.Optimizer | None:
    """None | "sgd" | "momentum" (SGD, 0.9) | "adam" | "adamw" (lr 1e-3; lr does not change time or
    memory) | an Optimizer class or factory(params). ``foreach`` None = torch's default for the device."""
    if spec is None:
        return None
    if isinstance(spec, str):
        name = spec.strip().lower()
        if name == "sgd":
            return torch.optim.SGD(params, lr=1e-3, foreach=foreach)
        if name == "momentum":
            return torch.optim.SGD(params, lr=1e-3, momentum=0.9, foreach=foreach)
        if name == "adam":
            return torch.optim.Adam(params, lr=1e-3, foreach=foreach)
        if name == "adamw":
            return torch.optim.AdamW(params, lr=1e-3, foreach=foreach)
        raise ValueError(f"unknown optimizer {spec!r}; expected one of {OPTIMIZERS} or a torch.optim.Optimizer class")
    if callable(spec):
        try:
            return spec(params)
        except TypeError:
            return spec(params, lr=1e-3)
    raise ValueError(f"optimizer must be None, a name in {OPTIMIZERS} or an Optimizer class, got {spec!r}")
