"""Which module of a model is running, and which module call created each autograd node.

One mechanism, shared by the counter (:mod:`hwprof.counting.tracking`), the memory replay
(:mod:`hwprof.memory.simulate`, :mod:`hwprof.memory.formula`), ``measure``'s first forward
(:mod:`hwprof.measuring.runner`) and the per-layer timer (:class:`hwprof.measuring.timers.LayerTimer`).
Each subclasses :class:`ModuleCalls` and adds its own bookkeeping in :meth:`ModuleCalls.on_enter`
/ :meth:`ModuleCalls.on_exit`.

**Forward: a stack of module calls.** The hooks are global (``register_module_forward_pre_hook``
/ ``register_module_forward_hook``), filtered to one model's modules by identity, not per-module
ones: a module's own hook dicts stay empty, so fused fast paths that check
``module._forward_hooks`` (e.g. ``nn.TransformerEncoderLayer`` in inference) run as they would
without hwprof. Every call gets a :class:`Frame` (kept in ``frames``, call order), with the
autograd sequence numbers ``[seq_lo, seq_hi)`` of the nodes created while it ran: sequence numbers
grow by one per node created on a thread (``at::sequence_number``), so a call's nodes are exactly
the numbers handed out between its pre-hook and its post-hook.

**Backward: attribution by creation** (:meth:`ModuleCalls.owned_nodes`). After the forward, one
walk of the autograd graph from its roots (the outputs or the loss) gives every node to the
innermost call whose interval holds its sequence number (calls nest, so the intervals of the
calls running at one moment nest too); a parameter's ``AccumulateGrad`` node (sequence number
``2**64 - 1``) goes to the first call of the module that owns the parameter (or of its nearest
called ancestor). Nodes created outside the model's calls (the loss, the seed gradient) belong to
no call. The counter and the memory replay write the owner's path into the node's ``metadata``
(:meth:`ModuleCalls.label_backward`) and read it back for each op autograd dispatches
(:func:`backward_module`, through ``torch._C._current_autograd_node()``); the timer hooks the
owned nodes to time them. Why not ``torch.utils.module_tracker.ModuleTracker``: in backward it
keeps a *set* of parents that goes stale (multi-grad hooks fire out of order, a module entered in
forward stays "active"): on a 32-layer transformer most backward ops landed on one ``dropout2``.
Why not start/end hooks on each module's outputs and inputs: such intervals overlap whenever
inputs are shared or branches run one after the other (a ResNet block's ``downsample`` "starts"
when the block's add is done and "ends" after the whole main branch); ownership by creation
partitions the backward exactly. Labels live on the autograd nodes and die with the graph; the
user's modules are never touched.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.utils._pytree import tree_leaves

__all__ = ["Frame", "ModuleCalls", "LABEL_KEY", "backward_module", "graph_nodes", "seq_peek", "tensor_leaves",
           "path_depth"]

_C = TypeVar("_C", bound="ModuleCalls")

#: key of the owning module's path in an autograd node's ``metadata`` (see :meth:`ModuleCalls.label_backward`)
LABEL_KEY = "hwprof_module"

_SEQ_PROBE: list[torch.Tensor] = []


def _seq_probe() -> int:
    """The next sequence number where a torch build lacks ``_get_sequence_nr``: a throw-away view
    node on a 0-d leaf reveals the counter (and advances it by one)."""
    if not _SEQ_PROBE:
        _SEQ_PROBE.append(torch.zeros((), requires_grad=True))
    with torch.enable_grad():
        node: Any = _SEQ_PROBE[0].view_as(_SEQ_PROBE[0]).grad_fn
        return int(node._sequence_nr()) + 1


#: Sequence number the next autograd node created on this thread will get:
#: ``torch.autograd._get_sequence_nr`` (``at::sequence_number::peek``), else :func:`_seq_probe`.
seq_peek: Callable[[], int] = getattr(torch.autograd, "_get_sequence_nr", _seq_probe)


def tensor_leaves(obj: Any) -> list[torch.Tensor]:
    """All tensors in a (nested) output or argument structure (``torch.utils._pytree`` leaves)."""
    return [x for x in tree_leaves(obj) if isinstance(x, torch.Tensor)]


def path_depth(path: str) -> int:
    """Dot-separated parts of a module path: 0 for the root "", 1 for "features", 2 for "features.0"."""
    return 0 if path == "" else path.count(".") + 1


def _parent_path(path: str) -> str:
    return path.rsplit(".", 1)[0] if "." in path else ""


def graph_nodes(roots: Iterable[Any], prune: Callable[[Any], bool] | None = None) -> Iterator[Any]:
    """Every autograd node reachable from ``roots`` (tensors, via their ``grad_fn``, or nodes), each
    once, depth first along ``next_functions``; a node for which ``prune(node)`` is true is neither
    yielded nor walked below."""
    todo: list[Any] = [r.grad_fn if isinstance(r, torch.Tensor) else r for r in roots]
    seen: set[int] = set()
    while todo:
        node = todo.pop()
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        if prune is not None and prune(node):
            continue
        todo.extend(nxt for nxt, _ in node.next_functions)
        yield node


def backward_module() -> str:
    """Path of the module whose autograd node is running now, from the label
    :meth:`ModuleCalls.label_backward` wrote ('' outside backward or for an unlabelled node)."""
    node: Any = torch._C._current_autograd_node()
    if node is None:
        return ""
    return str(node.metadata.get(LABEL_KEY, ""))


@dataclass(slots=True)
class Frame:
    """One call of a module: its path, the module, the call's index (in call order, from 0), the
    index of the tracked call it ran in (None: outermost), its input tensors' shapes (empty when
    the tracker does not record inputs), the autograd sequence numbers ``[seq_lo, seq_hi)`` of the
    nodes created while it ran (``seq_hi`` set when it ends); ``data`` is the subclass's own."""

    path: str
    module: nn.Module
    call: int
    parent: int | None
    input_shapes: list[tuple[int, ...]]
    seq_lo: int = 0
    seq_hi: int = 0
    data: Any = None


class ModuleCalls:
    """Global forward pre/post hooks over ``model``'s modules keeping a stack of running calls
    (:class:`Frame`; context manager, the hooks are removed on exit).

    A module's path is its first name in ``model.named_modules()`` ("" = the root); other modules'
    calls are ignored, and so are those deeper than ``depth`` dot-separated parts (their work
    belongs to their nearest tracked ancestor). ``current`` is the innermost running module's path
    ("" outside the model). A forward that raises skips the post-hooks, so after an exception
    :meth:`innermost_active` is the innermost module that was running; ``always_call`` runs them
    anyway (the exception in flight), which keeps the stack exact and leaves it empty after the
    exception. At a post-hook whose frame is not on top (frames left above it by an exception
    caught inside a forward), those frames are dropped and the call ends.

    ``record_inputs`` (class attribute): pass the call's input tensors to :meth:`on_enter` and keep
    their shapes on the frame; a subclass that needs neither (the timer) sets it False.
    """

    record_inputs: bool = True

    def __init__(self, model: nn.Module, *, always_call: bool = False, depth: int | None = None,
                 claim_on_exit: bool = False) -> None:
        self.model = model
        self.paths: dict[int, str] = {}
        for path, mod in model.named_modules():
            if depth is None or path_depth(path) <= depth:
                self.paths.setdefault(id(mod), path)
        self._tracked = set(self.paths.values())
        self.always_call = always_call
        self.claim_on_exit = claim_on_exit
        self.stack: list[Frame] = []
        self.frames: list[Frame] = []
        self._handles: list[Any] = []
        self._starts: list[int] = []
        self._claimed: dict[int, Any] = {}      # id(node) -> node (kept alive, so the ids stay unique)
        self._owners: dict[int, str] | None = None
        self.adopt: Callable[[nn.Module], str] | None = None
        """Open world (``hwprof.capture``, whose modules are not known in advance): a module whose forward
        starts while none of the tracked ones runs becomes a new root, added under ``model`` (a
        container) by the name ``adopt(module)`` gives it; None (default): such modules are ignored."""

    def __enter__(self: _C) -> _C:
        pre = register_module_forward_pre_hook(self._pre)
        try:
            post = register_module_forward_hook(self._post, always_call=self.always_call)
        except BaseException:
            pre.remove()
            raise
        self._handles = [pre, post]
        return self

    def __exit__(self, *exc: object) -> None:
        handles, self._handles = self._handles, []
        for h in handles:
            h.remove()

    def reset(self) -> None:
        """Forget every call so far (e.g. between repetitions); the hooks stay."""
        self.stack.clear()
        self.frames.clear()
        self._starts.clear()
        self._claimed.clear()

    @property
    def calls(self) -> int:
        """Calls seen so far (since entry or the last :meth:`reset`)."""
        return len(self.frames)

    @property
    def current(self) -> str:
        return self.stack[-1].path if self.stack else ""

    @property
    def current_call(self) -> int:
        """Index (in call order, from 0) of the innermost running call; -1 outside the model."""
        return self.stack[-1].call if self.stack else -1

    def innermost_active(self) -> Frame | None:
        """After an exception: the innermost module that was running (its post-hook never ran)."""
        return self.stack[-1] if self.stack else None

    def tracked(self, path: str) -> str:
        """``path`` if its module is tracked, else its nearest tracked ancestor's path."""
        while path and path not in self._tracked:
            path = _parent_path(path)
        return path

    # ------------------------------------------------------------------ for subclasses
    def on_enter(self, frame: Frame, inputs: list[torch.Tensor]) -> None:
        """A call of one of the model's modules starts (``inputs``: its input tensors, empty without
        ``record_inputs``); ``frame`` is already on top of the stack, and nothing of the hook runs
        after this returns (a timer's start marker goes last here)."""

    def on_exit(self, frame: Frame, args: tuple[Any, ...], output: Any) -> None:
        """A call ends (``frame`` already popped, ``seq_hi`` set); with ``always_call`` also when it
        raised (``sys.exc_info()`` then holds the exception, and ``output`` is None if the forward raised)."""

    def on_claim(self, node: Any, frame: Frame) -> None:
        """With ``claim_on_exit``: ``node`` was created by ``frame``'s call (attribution by creation, as
        :meth:`owned_nodes`); the default writes the call's path into the node's ``metadata`` for
        :func:`backward_module`, as :meth:`label_backward` does."""
        meta: dict[str, str] = node.metadata
        meta[LABEL_KEY] = frame.path

    # ------------------------------------------------------------------ hooks
    def _pre(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        path = self.paths.get(id(module))
        if path is None:
            if self.stack or self.adopt is None:
                return
            path = self._adopt(module)

        ins = tensor_leaves(args) if self.record_inputs else []
        stack = self.stack
        frame = Frame(path, module, len(self.frames), stack[-1].call if stack else None,
                      [tuple(t.shape) for t in ins] if ins else [], seq_peek())
        self.frames.append(frame)
        self._starts.append(frame.seq_lo)
        stack.append(frame)
        self.on_enter(frame, ins)

    def _adopt(self, module: nn.Module) -> str:
        """Add ``module`` (and its submodules) as a new root of the container ``model`` (see ``adopt``)."""
        assert self.adopt is not None
        name = self.adopt(module)
        self.model.add_module(name, module)
        for sub, mod in module.named_modules(prefix=name):
            self.paths.setdefault(id(mod), sub)
            self._tracked.add(sub)
            self.on_adopt(sub, mod)
        self._owners = None
        return self.paths[id(module)]

    def on_adopt(self, path: str, module: nn.Module) -> None:
        """A module adopted under ``path`` (see ``adopt``); for subclasses that keep a record per path."""

    def _post(self, module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
        stack = self.stack
        frame: Frame | None
        if stack and stack[-1].module is module:      # the usual case: the call on top ends
            frame = stack.pop()
        else:
            frame = self._unwind_to(module) if id(module) in self.paths else None
            if frame is None:
                return
        frame.seq_hi = seq_peek()
        if self.claim_on_exit:
            self._claim(frame, output)
        self.on_exit(frame, args, output)

    def _unwind_to(self, module: nn.Module) -> Frame | None:
        """Pop ``module``'s innermost running frame and the frames above it; None if it has none."""
        stack = self.stack
        for i in range(len(stack) - 1, -1, -1):
            if stack[i].module is module:
                frame = stack[i]
                del stack[i:]
                return frame
        return None

    # ------------------------------------------------------------------ backward attribution
    def owned_nodes(self, roots: Iterable[Any]) -> list[tuple[Any, Frame]]:
        """Every autograd node reachable from ``roots`` (tensors or nodes) that a call created,
        with that call (see the module docstring); call after the forward, before the backward.
        Nodes created outside the calls are left out."""
        frames = self.frames
        if not frames:
            return []
        starts = [f.seq_lo for f in frames]          # pre-order, so ascending
        first: dict[str, Frame] = {}
        for f in frames:
            first.setdefault(f.path, f)
        owners = self._param_owners()
        out: list[tuple[Any, Frame]] = []
        for node in graph_nodes(roots):
            var = getattr(node, "variable", None)
            frame = (self._creator(node._sequence_nr(), starts) if var is None
                     else self._first_called(owners.get(id(var)), first))
            if frame is not None:
                out.append((node, frame))
        return out

    def _claim(self, frame: Frame, output: Any) -> None:
        """Attribute the autograd nodes ``frame``'s call created, reachable from its output, as they are
        made: for a step whose loss hwprof never sees, there is no moment between forward and backward
        to walk the graph from the loss (:meth:`owned_nodes`), so each call walks its own output's graph
        when it ends. The walk stops at nodes created before the call; each node is claimed once, by the
        innermost call whose interval holds it (children end first), and a parameter's
        ``AccumulateGrad`` node by the first call of the module that owns the parameter."""
        first: dict[str, Frame] = {}

        def before_call(node: Any) -> bool:      # made before this call: not ours, nor anything below it
            return getattr(node, "variable", None) is None and node._sequence_nr() < frame.seq_lo

        for node in graph_nodes(tensor_leaves(output), prune=before_call):
            var = getattr(node, "variable", None)
            if var is None:
                seq = node._sequence_nr()
                owner = self._creator(seq, self._starts) if seq < frame.seq_hi else None
            else:
                if not first:
                    for f in self.frames:
                        first.setdefault(f.path, f)
                owner = self._first_called(self._param_owner(id(var)), first)
            if owner is not None and id(node) not in self._claimed:
                self._claimed[id(node)] = node
                self.on_claim(node, owner)

    def _param_owner(self, param_id: int) -> str | None:
        if self._owners is None:
            self._owners = self._param_owners()
        return self._owners.get(param_id)

    def label_backward(self, roots: Iterable[Any]) -> int:
        """Write each owned node's call path into its ``metadata`` (:data:`LABEL_KEY`), for
        :func:`backward_module` to read during the backward; returns the number of nodes labelled."""
        owned = self.owned_nodes(roots)
        for node, frame in owned:
            meta: dict[str, str] = node.metadata   # a dict at run time (the stub types it as a method)
            meta[LABEL_KEY] = frame.path
        return len(owned)

    def _creator(self, seq: int, starts: list[int]) -> Frame | None:
        """The innermost call whose ``[seq_lo, seq_hi)`` holds ``seq``: the last call started before
        the node was made, or the nearest of its callers still running then."""
        i: int | None = bisect.bisect_right(starts, seq) - 1
        while i is not None and i >= 0:
            f = self.frames[i]
            if f.seq_lo <= seq < f.seq_hi:
                return f
            i = f.parent
        return None

    def _param_owners(self) -> dict[int, str]:
        """id(parameter) -> tracked path of the first module holding it."""
        owners: dict[int, str] = {}
        for path, mod in self.model.named_modules():
            for p in mod._parameters.values():
                if p is not None:
                    owners.setdefault(id(p), self.tracked(path))
        return owners

    def _first_called(self, path: str | None, first: dict[str, Frame]) -> Frame | None:
        """First call of ``path`` or, if it was not called, of its nearest called tracked ancestor."""
        while path is not None and path not in first:
            path = None if path == "" else self.tracked(_parent_path(path))
        return None if path is None else first[path]
