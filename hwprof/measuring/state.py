"""Leave the user's model exactly as it was: snapshot what a measurement can change, restore it in ``finally``.

:func:`preserved_state` snapshots, for every module of the model:

* parameter and buffer *objects* (which tensor sits in each ``_parameters`` / ``_buffers`` slot)
  and their *values*, copied to CPU (BatchNorm running stats and ``num_batches_tracked`` move
  in a train forward; an optimizer step moves the parameters);
* the ``training`` flag of every module and ``requires_grad`` of every parameter;
* every parameter's ``.grad`` object; grads are set to None while inside (so a backward never
  accumulates into the user's gradient tensors) and the original objects are put back;

On exit slots are re-pointed at the original objects and values copied back in place.
:func:`hook_counts` counts module-level and global hooks, for checking that nothing leaked.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, field

import torch
from torch import nn

__all__ = ["preserved_state", "ModelSnapshot", "hook_counts"]


@dataclass
class ModelSnapshot:
    """What :func:`preserved_state` restores. Values live on CPU."""

    slots: list[tuple[nn.Module, str, str, torch.Tensor | None]] = field(default_factory=list)
    values: dict[int, torch.Tensor] = field(default_factory=dict)
    training: list[tuple[nn.Module, bool]] = field(default_factory=list)
    requires_grad: list[tuple[torch.Tensor, bool]] = field(default_factory=list)
    grads: list[tuple[torch.Tensor, torch.Tensor | None]] = field(default_factory=list)

    @classmethod
    def take(cls, model: nn.Module) -> ModelSnapshot:
        snap = cls()
        seen: set[int] = set()
        for m in model.modules():
            snap.training.append((m, m.training))
            for kind in ("_parameters", "_buffers"):
                for name, t in getattr(m, kind).items():
                    snap.slots.append((m, kind, name, t))
                    if t is None or id(t) in seen:
                        continue
                    seen.add(id(t))
                    snap.values[id(t)] = t.detach().to("cpu", copy=True)
                    if kind == "_parameters":
                        snap.requires_grad.append((t, t.requires_grad))
                        snap.grads.append((t, t.grad))
        return snap

    def restore(self) -> None:
        for m, kind, name, t in self.slots:
            getattr(m, kind)[name] = t
        with torch.no_grad():
            for _m, _kind, _name, t in self.slots:
                saved = None if t is None else self.values.get(id(t))
                if t is not None and saved is not None:
                    t.copy_(saved)
        for m, flag in self.training:
            m.training = flag
        for p, flag in self.requires_grad:
            p.requires_grad_(flag)
        for p, g in self.grads:
            p.grad = g


@contextlib.contextmanager
def preserved_state(model: nn.Module) -> Iterator[ModelSnapshot]:
    """Snapshot ``model`` (see module docstring), set its grads to None, restore everything in ``finally``."""
    snap = ModelSnapshot.take(model)
    try:
        for p, _ in snap.grads:
            p.grad = None
        yield snap
    finally:
        snap.restore()


def hook_counts(model: nn.Module) -> dict[str, int]:
    """Number of hooks on ``model``'s modules (by kind, summed) and of torch's global module hooks."""
    from torch.nn.modules import module as mm
    kinds = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
             "_state_dict_hooks", "_load_state_dict_pre_hooks")
    counts = {k: sum(len(getattr(m, k, {}) or {}) for m in model.modules()) for k in kinds}
    for g in ("_global_forward_hooks", "_global_forward_pre_hooks", "_global_backward_hooks",
              "_global_backward_pre_hooks", "_global_forward_hooks_always_called"):
        counts[g] = len(getattr(mm, g))
    counts["tensor_backward_hooks"] = sum(len(p._backward_hooks or {}) for p in model.parameters())
    return counts


