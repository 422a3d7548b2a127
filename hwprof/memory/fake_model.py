"""Fake-model preparation for the memory predictors: a fake copy of the model and fake inputs at
the requested batch, dtype and device, with the storages they hold accounted.

``prepare_fake`` builds a *fake copy* of the user's model (``copy.deepcopy`` under
``FakeCopyMode``, :func:`hwprof.fakes.fake_copy`; models built on ``torch.device("meta")`` work
too) whose parameters and buffers are ``FakeTensor``s on the fake device, in the requested dtype.
The user's model is never modified, moved or run; hooks are not copied onto the fake model (a
user hook must not run on fake tensors and write into the user's objects).

Fake device: by default the fake tensors live on the CPU, whatever the target
(:mod:`hwprof.memory.cuda_kernels` routes the ops whose CPU kernels save other tensors than
CUDA's). ``fake_device="cuda"`` on a machine with CUDA puts them on CUDA, so the real CUDA kernels'
fake implementations run; fake CUDA tensors abort a CPU-only build of torch, so elsewhere the CPU
is used with a warning.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode

from hwprof.fakes import convert_tensors, fake_copy, fake_inputs
from hwprof.memory.storage import storage_key, storage_leaves, storage_nbytes
from hwprof.spec import Inputs, parse_dtype

__all__ = ["FakeSetup", "fake_device_for", "prepare_fake"]

logger = logging.getLogger(__name__)


@dataclass
class FakeSetup:
    """A fake copy of a model and fake inputs, ready to run under ``fake_mode``.

    Byte counts are of distinct storages: tied parameters are counted once.
    """

    fake_mode: FakeTensorMode
    model: nn.Module
    inputs: Inputs
    target_device: str                      # the device whose memory is predicted: "cuda" or "cpu"
    fake_device: torch.device               # where the fake tensors live
    dtype: torch.dtype                      # parameter / activation dtype (fp32 under amp)
    amp_dtype: torch.dtype | None           # autocast dtype, None without amp
    train: bool
    param_keys: dict[int, str] = field(default_factory=dict)     # storage -> "params" / "buffers"
    input_keys: set[int] = field(default_factory=set)
    params_bytes: int = 0
    trainable_params_bytes: int = 0
    buffers_bytes: int = 0
    inputs_bytes: int = 0
    n_params: int = 0
    n_trainable_params: int = 0
    trainable_param_sizes: list[int] = field(default_factory=list)   # bytes of each trainable storage

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.fake_device.type, dtype=self.amp_dtype)


def fake_device_for(target_device: str, requested: torch.device | str | None = None) -> torch.device:
    """Where the fake tensors live: the CPU unless ``requested`` is ``"cuda"``, the target is CUDA
    and CUDA is usable here (fake CUDA tensors abort a CPU-only build of torch)."""
    if requested is None or torch.device(requested).type == "cpu":
        return torch.device("cpu")
    if torch.device(requested).type == "cuda" and target_device == "cuda" and torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    logger.warning("fake tensors on %s are not available here; using the CPU", requested)
    return torch.device("cpu")


def prepare_fake(model: nn.Module, inputs: Any, *, batch: int | None = None,
                 dtype: torch.dtype | str = torch.float32, amp: bool = False, device: str = "cuda",
                 mode: str = "train", fake_device: torch.device | str | None = None) -> FakeSetup:
    """Fake copy of ``model`` and fake ``inputs`` (a spec string, tensor or tuple).

    * ``dtype``: floating parameters, buffers and inputs are converted to it, unless ``amp``:
      then parameters stay in their dtype and the forward runs under ``torch.autocast`` with
      ``dtype`` (fp16 if ``dtype`` is fp32).
    * ``batch``: the batch size of a spec string; for tensors, dimension 0 is replaced by it.
    * The fake model is in ``train()`` mode for ``mode="train"``, ``eval()`` otherwise.
    """
    dtype = parse_dtype(dtype)
    if mode not in ("train", "inference"):
        raise ValueError(f"mode must be 'train' or 'inference', got {mode!r}")
    if device not in ("cuda", "cpu"):
        raise ValueError(f"device must be 'cuda' or 'cpu', got {device!r}")
    amp_dtype = None
    if amp:
        amp_dtype = dtype if dtype in (torch.float16, torch.bfloat16) else torch.float16
    param_dtype = None if amp else dtype
    fdev = fake_device_for(device, fake_device)
    fm = FakeTensorMode(allow_non_fake_inputs=False)
    fmodel = fake_copy(model, fm, clear_hooks=True)
    setup = FakeSetup(fm, fmodel, Inputs(), device, fdev, param_dtype or torch.float32, amp_dtype, mode == "train")
    with fm:
        convert_tensors(fmodel, param_dtype, fdev, remake=True)
        setup.inputs = fake_inputs(inputs, batch=batch, spec_dtype=dtype if not amp else torch.float32, device=fdev,
                                   fake_mode=fm, cast_tensors=True, rebatch=True)
    fmodel.train(mode == "train")
    _account_storages(setup)
    return setup


def _account_storages(setup: FakeSetup) -> None:
    """Fill ``setup``'s storage keys and byte counts: parameters, then buffers, then inputs, each
    distinct storage once (in the first of those roles it has)."""
    seen: set[int] = set()
    for p in setup.model.parameters():
        k = storage_key(p)
        if k in seen:
            continue
        seen.add(k)
        setup.param_keys[k] = "params"
        setup.params_bytes += storage_nbytes(p)
        setup.n_params += p.numel()
        if p.requires_grad:
            setup.trainable_params_bytes += storage_nbytes(p)
            setup.trainable_param_sizes.append(storage_nbytes(p))
            setup.n_trainable_params += p.numel()
    for b in setup.model.buffers():
        k = storage_key(b)
        if k not in seen:
            seen.add(k)
            setup.param_keys[k] = "buffers"
            setup.buffers_bytes += storage_nbytes(b)
    for t in storage_leaves(setup.inputs):
        k = storage_key(t)
        if k not in seen:
            seen.add(k)
            setup.input_keys.add(k)
            setup.inputs_bytes += storage_nbytes(t)
