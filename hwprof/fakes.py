"""Fake copies of models and inputs: what ``hwprof.count`` and the memory replay run on.

A fake copy is a ``copy.deepcopy`` of the user's model under ``FakeCopyMode``: its parameters
and buffers are ``FakeTensor``s (no memory, no compute; models on ``torch.device("meta")``
work) and the user's module is never modified, moved or run. Its tensors can then be converted
to a dtype and a device, and fake inputs built from a spec string, TensorSpecs or real tensors.

The two callers want different conversions, chosen by keyword:

* ``hwprof.count`` (:mod:`hwprof.counting.counter`) counts the ops the model runs on the tensors
  it was given: tensors are *converted* (``.to`` / ``FakeTensorMode.from_tensor``), so shapes,
  strides and dtypes stay as they are unless a dtype or device was asked for, the batch size
  applies to spec strings only, and the copied hooks stay (their ops are counted).
* the memory predictors (:mod:`hwprof.memory.fake_model`) follow storages and predict a step at a
  requested batch size and dtype: parameters and buffers are *re-made* as fresh storages of
  exactly their own size (a tensor that viewed a larger storage of the user's model would
  otherwise carry or share it), input tensors are re-made contiguous with dimension 0 replaced
  by ``batch`` and their floats in the run dtype, and hooks are dropped (a user hook must not
  run on fake tensors and write into the user's objects).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeCopyMode, FakeTensor, FakeTensorMode

from hwprof.spec import Inputs, TensorSpec, as_inputs

__all__ = ["fake_copy", "convert_tensors", "fake_inputs"]

_HOOK_DICTS = ("_forward_hooks", "_forward_pre_hooks", "_backward_hooks", "_backward_pre_hooks",
               "_forward_hooks_with_kwargs", "_forward_pre_hooks_with_kwargs", "_forward_hooks_always_called",
               "_state_dict_hooks", "_load_state_dict_pre_hooks")


def fake_copy(model: nn.Module, fake_mode: FakeTensorMode, *, clear_hooks: bool = False) -> nn.Module:
    """Deep copy of ``model`` whose tensors are fakes of ``fake_mode``. ``clear_hooks`` drops the
    hooks deep-copied from the user's modules (on the copy only): the memory replay does, ``count``
    keeps them."""
    with FakeCopyMode(fake_mode):
        fmodel = copy.deepcopy(model)
    if clear_hooks:
        for mod in fmodel.modules():
            for attr in _HOOK_DICTS:
                d = getattr(mod, attr, None)
                if isinstance(d, dict) and d:
                    setattr(mod, attr, type(d)())
    return fmodel


def convert_tensors(fmodel: nn.Module, dtype: torch.dtype | None, device: torch.device | None, *,
                    remake: bool = False) -> None:
    """Give the fake copy's floating parameters and buffers ``dtype`` (None: keep) and all of them
    ``device`` (None: keep); call under the fake mode. Tied tensors stay tied.

    ``remake=False`` (``count``): each tensor is converted with ``.to`` (unchanged when it already
    has that dtype and device). ``remake=True`` (memory replay): each is replaced by a fresh
    ``empty_strided`` tensor with its shape and strides, so every parameter and buffer has a storage
    of its own. ``Module.to`` swaps tensors in place, which fake tensors (weak-referenced by their
    mode) refuse, so the entries of ``_parameters`` / ``_buffers`` are replaced instead; only the
    fake copy is touched.
    """
    memo: dict[int, torch.Tensor] = {}
    for mod in fmodel.modules():
        stores: tuple[tuple[dict[str, Any], bool], ...] = ((mod._parameters, True), (mod._buffers, False))
        for store, is_param in stores:
            for name, old in list(store.items()):
                if old is None:
                    continue
                if id(old) not in memo:
                    dt = dtype if dtype is not None and old.is_floating_point() else old.dtype
                    dev = device if device is not None else old.device
                    new = (torch.empty_strided(tuple(old.shape), tuple(old.stride()), dtype=dt, device=dev)
                           if remake else old.detach().to(device=dev, dtype=dt))
                    memo[id(old)] = nn.Parameter(new, requires_grad=old.requires_grad) if is_param else new
                store[name] = memo[id(old)]


def fake_inputs(inputs: Any, *, batch: int | None, spec_dtype: torch.dtype, device: torch.device,
                fake_mode: FakeTensorMode, cast_tensors: bool = False, rebatch: bool = False) -> Inputs:
    """Fake tensors for ``inputs`` (a spec string, a TensorSpec sequence, a tensor, a tuple or a dict:
    see :func:`hwprof.spec.as_inputs`); call under ``fake_mode``. Non-tensors pass through; keyword
    inputs stay keyword inputs (the result is an :class:`~hwprof.spec.Inputs`).

    * Specs are built fake on ``device``, empty floats in ``spec_dtype`` (an input's own dtype in
      the spec wins) and integer zeros, with ``batch`` (default 1) in front.
    * Tensors, ``rebatch=False`` (``count``): converted with ``fake_mode.from_tensor`` (shape,
      strides and dtype kept; ``batch`` not applied), cast to ``spec_dtype`` if ``cast_tensors``
      and floating, and moved to ``device``.
    * Tensors, ``rebatch=True`` (memory replay): re-made contiguous on ``device`` with dimension 0
      replaced by ``batch`` (when given), floats empty (in ``spec_dtype`` if ``cast_tensors``) and
      the rest zeros. Here a TensorSpec sequence is built and then re-made like any tensor, so its
      floats take ``spec_dtype`` too (a spec string keeps its own dtypes).
    """
    if isinstance(inputs, str) or (not rebatch and isinstance(inputs, Sequence) and inputs
                                   and isinstance(inputs[0], TensorSpec)):
        specs = inputs if isinstance(inputs, str) else list(inputs)
        return as_inputs(specs, batch=batch, dtype=spec_dtype, device=device, random=False)

    def convert(x: Any) -> Any:
        if not isinstance(x, torch.Tensor) or (isinstance(x, FakeTensor) and not rebatch):
            return x       # a dict's spec strings were built fake already (we run under fake_mode)
        return _fake_tensor(x, batch, spec_dtype if cast_tensors and x.is_floating_point() else None,
                            device, fake_mode, rebatch)

    return as_inputs(inputs, batch=batch, dtype=spec_dtype, device=device, random=False).map(convert)


def _fake_tensor(x: torch.Tensor, batch: int | None, dtype: torch.dtype | None, device: torch.device,
                 fake_mode: FakeTensorMode, rebatch: bool) -> torch.Tensor:
    """One input tensor as a fake on ``device``, cast to ``dtype`` unless None (see ``fake_inputs``)."""
    if rebatch:
        shape = tuple(x.shape) if batch is None or x.dim() == 0 else (batch, *x.shape[1:])
        make = torch.empty if x.is_floating_point() else torch.zeros
        return make(shape, dtype=x.dtype if dtype is None else dtype, device=device)
    fx = fake_mode.from_tensor(x) if x.device.type != "meta" else torch.empty_strided(
        x.shape, x.stride(), dtype=x.dtype, device="meta")
    if dtype is not None and fx.dtype != dtype:
        fx = fx.to(dtype)
    if fx.device != device:
        fx = fx.to(device)
    return fx
