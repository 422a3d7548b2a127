"""The training step hwprof runs everywhere (measured runs and the memory replay alike):
the loss it backpropagates and the optimizers it builds, so that prediction and measurement
do the same work."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

__all__ = ["OPTIMIZERS", "make_optimizer", "make_optimizers", "optimizer_label", "check_optimizer", "training_loss",
           "loss_tensors"]

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


def _specs(spec: Any) -> list[Any]:
    return list(spec) if isinstance(spec, (list, tuple)) else ([] if spec is None else [spec])


def check_optimizer(spec: Any) -> None:
    """A ``ValueError`` for an optimizer spec :func:`make_optimizers` cannot build: an unknown name, an
    empty list, a value that is none of a name, an Optimizer class or factory, or an Optimizer."""
    if isinstance(spec, (list, tuple)) and not spec:
        raise ValueError("optimizer=[]: give one optimizer or more, or None")
    for one in _specs(spec):
        if isinstance(one, str) and one.strip().lower() not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {one!r}; expected one of {OPTIMIZERS}, an Optimizer class, "
                             "an optimizer, or a list of them")
        if not isinstance(one, (str, torch.optim.Optimizer)) and not callable(one):
            raise ValueError(f"optimizer must be a name in {OPTIMIZERS}, an Optimizer class or factory, an "
                             f"optimizer, or a list of them; got {one!r}")


def make_optimizers(spec: Any, params: list[nn.Parameter], foreach: bool | None = None) -> list[torch.optim.Optimizer]:
    """The optimizers a training step steps: ``spec`` None -> none; a name, class or factory -> one fresh
    optimizer over ``params`` (:func:`make_optimizer`); an ``Optimizer`` instance -> itself (over its own
    parameters: the caller snapshots and restores it); a list -> each of its items, in order."""
    out = []
    for one in _specs(spec):
        out.append(one if isinstance(one, torch.optim.Optimizer) else make_optimizer(one, params, foreach))
    return [o for o in out if o is not None]


def optimizer_label(spec: Any) -> str | None:
    """How records name an optimizer spec: "adam", "AdamW" (a class or an instance), "AdamW+Adam" (a list)."""
    names = []
    for one in _specs(spec):
        if isinstance(one, str):
            names.append(one)
        elif isinstance(one, torch.optim.Optimizer):
            names.append(type(one).__name__)
        else:
            names.append(str(getattr(one, "__name__", type(one).__name__)))
    return "+".join(names) if names else None
