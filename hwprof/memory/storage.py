"""Storages: the unit the memory predictors count in.

A tensor's memory is its storage (``untyped_storage()``): a view (``flatten``, ``t()``) or the
result of an in-place op (``ReLU(inplace=True)``) shares its base's storage and allocates
nothing, and a view keeps all of its base alive. The predictors therefore identify memory by
storage and count each storage once, in full.
"""

from __future__ import annotations

from typing import Any

import torch
from torch.utils import _pytree as pytree

from hwprof.measuring.alloc_trace import inner_tensors

__all__ = ["storage_key", "storage_nbytes", "storage_leaves"]


def storage_key(t: torch.Tensor) -> int:
    """Identity of ``t``'s storage (the StorageImpl address): equal for views and in-place results."""
    return int(t.untyped_storage()._cdata)


def storage_nbytes(t: torch.Tensor) -> int:
    """Bytes of ``t``'s whole storage (a view keeps all of its base alive)."""
    return int(t.untyped_storage().nbytes())


def storage_leaves(obj: Any) -> list[torch.Tensor]:
    """All tensors in a (nested) output or argument structure, a wrapper subclass (a DTensor) by
    the inner tensors that hold its memory (:func:`hwprof.measuring.alloc_trace.inner_tensors`)."""
    return [t for x in pytree.tree_leaves(obj) if isinstance(x, torch.Tensor) for t in inner_tensors(x)]
