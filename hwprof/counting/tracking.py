"""Which module is running: forward by a module stack, backward by labelled autograd nodes.

``torch.utils.module_tracker.ModuleTracker`` keeps a *set* of parents during backward that
can go stale (multi-grad hooks fire out of order, and a module entered in forward stays
"active"): on a 32-layer transformer most backward ops landed on one ``dropout2``. hwprof
attributes backward ops differently:

* forward: global module pre/post hooks (:class:`hwprof.modules.ModuleCalls`) keep a stack
  of module paths (global hooks, not per-module ones, so fused fast paths that check
  ``module._forward_hooks`` still run);
* at a module's pre-hook it reads the autograd sequence number; at its post-hook it walks
  the autograd graph back from the outputs and labels every node created since (sequence
  number >= start) that no inner module labelled already (``node.metadata``; inner modules'
  post-hooks run first, so the innermost module wins). Parameters' ``AccumulateGrad`` nodes
  are labelled by the first module whose walk reaches them;
* backward: each aten op asks ``torch._C._current_autograd_node()`` which node is running
  and reads its label. Nodes nobody labelled (e.g. the seed gradient) go to the root ("").

Labels live on the autograd nodes of hwprof's own fake copy of the model, never on the
user's modules, and die with the graph.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._pytree import tree_flatten

from hwprof.modules import Frame, ModuleCalls

__all__ = ["ModuleStack", "CallRecord", "LABEL_KEY", "tensor_bytes", "shapes_str", "sizes_str"]

LABEL_KEY = "hwprof_module"
_SEQ_NR_ACCUMULATE_GRAD = 2**64 - 1


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


def _tensors(obj: Any) -> list[torch.Tensor]:
    return [x for x in tree_flatten(obj)[0] if isinstance(x, torch.Tensor)]


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
    """Global forward hooks over one model's modules (context manager; hooks removed on exit):
    a :class:`CallRecord` per path, and autograd nodes labelled at each call's end.

    A frame's ``data`` is ``(autograd sequence number at the call's start, input storages)``.
    A post-hook whose module is not on top of the stack is ignored (``unwind = False``).
    """

    unwind = False

    def __init__(self, model: nn.Module) -> None:
        super().__init__(model)
        self.records: dict[str, CallRecord] = {}
        for path, mod in model.named_modules():
            self.records.setdefault(path, CallRecord(path, type(mod).__name__))

    # ------------------------------------------------------------------ hooks
    def on_enter(self, frame: Frame, inputs: list[torch.Tensor]) -> None:
        seq = torch._C._autograd._get_sequence_nr() if torch.is_grad_enabled() else 0
        frame.data = (seq, {_storage_id(t) for t in inputs})

    def on_exit(self, frame: Frame, args: Any, output: Any) -> None:
        start_seq, input_storages = frame.data
        outs = _tensors(output)
        rec = self.records[frame.path]
        if rec.calls == 0:
            rec.input_shapes, rec.output_shapes = sizes_str(frame.input_shapes), shapes_str(outs)
        rec.calls += 1
        alias = any(_storage_id(t) in input_storages for t in outs)
        rec.output_is_alias = rec.output_is_alias or alias
        rec.output_bytes += sum(tensor_bytes(t) for t in outs)
        if torch.is_grad_enabled():
            self._label(outs, frame.path, start_seq)

    @staticmethod
    def _label(outs: list[torch.Tensor], path: str, start_seq: int) -> None:
        """Label graph nodes created during this call (and unlabelled AccumulateGrad leaves)."""
        todo: list[Any] = [t.grad_fn for t in outs if t.grad_fn is not None]
        seen: set[int] = set()
        while todo:
            node = todo.pop()
            if node is None or id(node) in seen:
                continue
            seen.add(id(node))
            seq = node._sequence_nr()
            if seq < start_seq:
                continue  # created before this call: belongs to a caller or an earlier module
            meta: dict[str, str] = node.metadata  # a dict at run time (the stub types it as a method)
            meta.setdefault(LABEL_KEY, path)  # an inner module's label wins; keep walking past it
            if seq != _SEQ_NR_ACCUMULATE_GRAD:
                todo.extend(fn for fn, _ in node.next_functions)


def backward_module() -> str:
    """Path of the module whose autograd node is running now ('' when unlabelled)."""
    node: Any = torch._C._current_autograd_node()
    if node is None:
        return ""
    return str(node.metadata.get(LABEL_KEY, ""))
