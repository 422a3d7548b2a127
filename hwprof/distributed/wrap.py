"""The model wrapped for data-parallel training: ``DistributedDataParallel`` or FSDP2 ``fully_shard``.

Both wrap a *copy*: DDP broadcasts rank 0's parameters into the module and hooks its
gradients, and ``fully_shard`` replaces every parameter by a sharded ``DTensor`` and changes the
module's class, so the user's model must never be the one wrapped (:func:`prepared_copy`).

FSDP2 shards per block and at the root (torch's recommended use: ``fully_shard`` on each
transformer block, then on the whole model, so that one block's parameters are gathered at a
time). :func:`fsdp_blocks` picks the blocks: the parameter-holding children of each outermost
``nn.ModuleList`` / ``nn.Sequential`` (a transformer's layers, a ResNet stage's blocks); a
model without such a container is sharded at the root only.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

__all__ = ["Parallel", "PARALLEL", "check_parallel", "fsdp_blocks", "prepared_copy", "wrap", "resident_bytes",
           "local_param_bytes"]

Parallel = Literal["ddp", "fsdp"]
PARALLEL: tuple[str, ...] = ("ddp", "fsdp")


def check_parallel(parallel: str) -> Parallel:
    """``parallel`` lower-cased if it is "ddp" or "fsdp"; ValueError naming the choices otherwise."""
    p = str(parallel).strip().lower()
    if p not in PARALLEL:
        raise ValueError(f"parallel must be one of {PARALLEL}, got {parallel!r}")
    return p  # type: ignore[return-value]


def _has_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters())


def fsdp_blocks(model: nn.Module) -> list[str]:
    """Paths of the modules FSDP2 shards on their own (see the module docstring), outermost first."""
    blocks: list[str] = []

    def visit(prefix: str, m: nn.Module) -> None:
        for name, child in m.named_children():
            path = f"{prefix}{name}"
            if isinstance(m, (nn.ModuleList, nn.Sequential)) and _has_params(child):
                blocks.append(path)
            else:
                visit(path + ".", child)

    visit("", model)
    return blocks


def prepared_copy(model: nn.Module, device: torch.device, dtype: torch.dtype | None = None,
                  channels_last: bool = False) -> nn.Module:
    """A deep copy of ``model`` on ``device`` (and in ``dtype`` / channels_last when asked): the module
    the wrapper may change."""
    work = copy.deepcopy(model)
    if dtype is not None:
        work.to(device=device, dtype=dtype)
    else:
        work.to(device=device)
    if channels_last:
        work.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return work


def wrap(module: nn.Module, parallel: str, device: torch.device, *, mesh: Any = None,
         blocks: Sequence[str] | None = None, init_sync: bool = True) -> nn.Module:
    """``module`` (a copy: it is changed) wrapped in DDP or sharded by FSDP2 over the default process group.

    DDP: ``DistributedDataParallel(module, device_ids=[cuda index] or None, init_sync=...)``.
    FSDP2: ``fully_shard`` on each of ``blocks`` (default :func:`fsdp_blocks`), deepest first, then on
    ``module``, over ``mesh`` (default: a 1-D mesh of the default group on ``device``'s type)."""
    if check_parallel(parallel) == "ddp":
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" \
            else None
        return DistributedDataParallel(module, device_ids=ids, init_sync=init_sync)
    from torch.distributed.fsdp import fully_shard

    if mesh is None:
        import torch.distributed as dist
        from torch.distributed.device_mesh import init_device_mesh

        mesh = init_device_mesh(device.type, (dist.get_world_size(),))
    paths = list(fsdp_blocks(module) if blocks is None else blocks)
    for path in sorted(paths, key=lambda p: p.count("."), reverse=True):
        fully_shard(module.get_submodule(path), mesh=mesh)
    fully_shard(module, mesh=mesh)
    return module


def resident_bytes(module: nn.Module) -> int:
    """Bytes the wrapper holds for the whole run outside the parameters, buffers and inputs: a DDP reducer's
    gradient buckets as DDP itself records them (``bucket_sizes`` of its logging data, bytes; the reducer
    allocates them when it is built and all-reduces them in place), 0 for FSDP2 (whose state is its
    sharded parameters). The CPU allocator trace of a measurement cannot see them being allocated
    (:func:`hwprof.measure`'s ``resident_bytes``).

    Why not the allocator's own events while the wrapper is built: a block that a backend's worker
    thread frees (gloo drops DDP's broadcast buffers there) leaves no free event in the caller's
    profile, so the events overstate what stays live."""
    logging_data = getattr(module, "_get_ddp_logging_data", None)
    if logging_data is None:
        return 0
    sizes = str(logging_data().get("bucket_sizes", "") or "")
    return sum(int(s) for s in sizes.replace(" ", "").split(",") if s)


def local_param_bytes(module: nn.Module) -> int:
    """Bytes of the parameters this rank holds (a sharded parameter by its local shard, padding included)."""
    from hwprof.measuring.alloc_trace import storage_bytes

    return storage_bytes(list(module.parameters()))
