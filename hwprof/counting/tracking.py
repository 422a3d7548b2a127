"""The counter's per-module records, on the shared module-call tracker (:mod:`hwprof.modules`).

* forward: :class:`hwprof.modules.ModuleCalls` (global module pre/post hooks, so fused fast paths
  that check ``module._forward_hooks`` still run) keeps the stack of running calls: an aten op
  belongs to ``current``; :class:`ModuleStack` adds a :class:`CallRecord` per module path (calls,
  shapes, output bytes, whether the output aliases an input);
* backward: after the forward the counter labels every autograd node of the graph with the path
  of the module call that created it (:meth:`hwprof.modules.ModuleCalls.label_backward`), and each
  op autograd dispatches reads the label of the node running it (:func:`backward_module`).
  Nodes nobody created (e.g. the seed gradient) go to the root ("").

Labels live on the autograd nodes of hwprof's own fake copy of the model, never on the
user's modules, and die with the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from hwprof.modules import LABEL_KEY, Frame, ModuleCalls, backward_module, tensor_leaves

__all__ = ["ModuleStack", "CallRecord", "LABEL_KEY", "backward_module", "tensor_bytes", "shapes_str", "sizes_str"]


def tensor_bytes(t: torch.Tensor) -> int:
    """Bytes a kernel touches in ``t``: distinct elements x itemsize (an expanded, stride-0
    dimension is read once), 0 for an empty tensor."""
    if t.numel() == 0:
        return 0
    n = 1
    for size, stride in zip(t.shape, t.stride(), strict=True):
        if stride != 0:
            n *= size
    return n * t.element_size()


def shapes_str(tensors: list[torch.Tensor]) -> str:
    """'1x3x224x224, 1x10' for a list of tensors ('' for none)."""
    return sizes_str([t.shape for t in tensors])


def sizes_str(shapes: Sequence[tuple[int, ...]]) -> str:
    """'1x3x224x224, 1x10' for a list of shapes ('' for none, 'scalar' for ())."""
    return ", ".join("x".join(str(d) for d in s) or "scalar" for s in shapes)


def _storage_id(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


@dataclass
class CallRecord:
    """What one module did across its calls (shapes from the first call)."""

    path: str
    type: str
    calls: int = 0
    input_shapes: str = ""
    output_shapes: str = ""
    output_bytes: int = 0        # summed over calls
    output_is_alias: bool = False  # output shares storage with an input (in-place op or view)


class ModuleStack(ModuleCalls):
    """The shared module-call tracker (context manager; hooks removed on exit) with a
    :class:`CallRecord` per module path. A frame's ``data`` is the set of its input storages."""

    def __init__(self, model: nn.Module, *, claim_on_exit: bool = False) -> None:
        super().__init__(model, claim_on_exit=claim_on_exit)
        self.records: dict[str, CallRecord] = {}
        for path, mod in model.named_modules():
            self.records.setdefault(path, CallRecord(path, type(mod).__name__))

    # ------------------------------------------------------------------ hooks
    def on_adopt(self, path: str, module: nn.Module) -> None:
        self.records.setdefault(path, CallRecord(path, type(module).__name__))

    def on_enter(self, frame: Frame, inputs: list[torch.Tensor]) -> None:
        frame.data = {_storage_id(t) for t in inputs}

    def on_exit(self, frame: Frame, args: Any, output: Any) -> None:
        outs = tensor_leaves(output)
        rec = self.records[frame.path]
        if rec.calls == 0:
            rec.input_shapes, rec.output_shapes = sizes_str(frame.input_shapes), shapes_str(outs)
        rec.calls += 1
        alias = any(_storage_id(t) in frame.data for t in outs)
        rec.output_is_alias = rec.output_is_alias or alias
        rec.output_bytes += sum(tensor_bytes(t) for t in outs)
