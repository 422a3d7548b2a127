"""Simulated predictor: replay one training step on fake tensors and follow every allocation.

Method
------
1. ``prepare_fake`` builds a *fake copy* of the user's model (``copy.deepcopy`` under
   ``FakeCopyMode``; models built on ``torch.device("meta")`` work too) whose parameters and
   buffers are ``FakeTensor``s on the simulated device, in the requested dtype. The user's
   model is never modified, moved or run; hooks are not copied onto the fake model (a user
   hook must not run on fake tensors and write into the user's objects).
2. ``MemoryTracker`` is a ``TorchDispatchMode`` stacked above the ``FakeTensorMode``. Every
   aten op's output storage that it has not seen is an *allocation*; a
   ``weakref.finalize`` on the storage object is the matching *free*, so a storage dies
   exactly when the last tensor or view on it dies (views and in-place results share their
   base's storage and allocate nothing). ``resize_`` / ``out=`` resizes are seen as a size
   change of a tracked storage after an op. Parameters, buffers and inputs are registered
   as live before the step.
3. ``simulate`` runs, under the tracker, what ``hwprof.measure`` runs: forward (``autocast`` if
   ``amp``) straight into ``loss = sum of the floating outputs`` (the output itself is not
   kept), ``loss.backward()``, then the real ``torch.optim`` optimizer's
   ``step()`` on the fake parameters and ``zero_grad(set_to_none=True)``. With an optimizer
   the iteration is run twice: the second one has the optimizer state live during forward
   and backward, as in ``hwprof.measure``'s step phase (forward and backward before each
   timed ``step()``, the state kept from the warm-up steps).
   On a CUDA target the optimizer uses ``foreach=True`` (torch's default for CUDA tensors),
   so its temporaries are real: Adam's ``_foreach_sqrt`` of the second moments holds one
   extra copy of the trainable parameters during the step.
4. Each allocation and free goes to an allocator model (``hwprof.memory.allocator``): the
   CUDA caching allocator's 512-byte blocks, 2 MiB / 20 MiB / 2 MiB-rounded segments, best
   fit, splitting and merging for a CUDA target; exact bytes for a CPU target. The peak of
   its ``allocated`` is the predicted ``torch.cuda.max_memory_allocated`` and the peak of
   ``reserved`` the predicted ``max_memory_reserved`` (with no ``empty_cache`` or OOM retry
   modelled, an upper bound for it).

Workspace: for a CUDA target, each thread that calls cuBLAS (the forward thread and the
autograd device thread) gets one cuBLAS workspace from the caching allocator the first time
it runs a matmul (``mm``/``addmm``/``bmm``/...), which stays allocated. Its size is
``CUBLAS_WORKSPACE_CONFIG`` if set, else torch's default: 32 MiB on compute capability
9.x/10.x/12.x, 8 MiB + 128 KiB otherwise; with no GPU present sm_90 (H100) is assumed.
cuDNN convolution workspaces (transient, algorithm-dependent) are not modelled.

Fake device: by default the fake tensors live on the CPU, whatever the target. For
convolutions, batch/layer norms, pooling, activations and linear layers the autograd
formulas save the same tensors on either device (``cudnn_batch_norm`` adds a reserve buffer
that is empty outside its persistent mode); ``CudaKernelEmulation`` routes the two ops whose
CPU kernels save different tensors (dropout, scaled-dot-product attention) to the kernels
CUDA runs. This is checked against GPU measurements by ``bench/memory_validation.py``, not
by the CPU tests, which check the replay against real CPU tensors. ``nn.LSTM`` is not
emulated (cuDNN packs its weights into one buffer and keeps a reserve buffer; the CPU replay
runs the native LSTM), and in training its kernels keep a workspace from forward to backward
that their fake kernels return empty (oneDNN on CPU: 31.3 MiB per layer for the zoo's
``lstm`` at batch 32, measured with ``hwprof.measuring.alloc_trace``; cuDNN's reserve space on
CUDA): the prediction is low by that much, and a note says so. ``fake_device="cuda"`` on a machine with CUDA dispatches the real CUDA
kernels on fake CUDA tensors instead; if that run fails it is retried on the CPU with a note.
On a CUDA target the 0-dim tensors created during the optimizer step (Adam's ``step``
counters, CPU scalars in the real run) are not counted.

Why not ``torch.distributed._tools.mem_tracker.MemTracker``: DESIGN.md reports that it fails
under ``FakeTensorMode`` on the transformer ("Mixing fake modes NYI") and on cuDNN LSTMs; it
replaces ``torch.UntypedStorage.resize_`` globally while active (hwprof never writes into
torch's namespace); it rounds to 512 B but models no segments, so it predicts no reserved
memory; and it needs the distributed package. The storage-finalizer bookkeeping here is the
same idea in ~150 lines; ``tests/memory`` compares both on a small CNN where MemTracker works.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import types
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.overrides import TorchFunctionMode
from torch.utils import _pytree as pytree
from torch.utils._python_dispatch import TorchDispatchMode

from hwprof.fakes import convert_tensors, fake_copy, fake_inputs
from hwprof.measuring.alloc_trace import inner_tensors
from hwprof.memory.allocator import AllocatorModel, make_allocator
from hwprof.modules import Frame, ModuleCalls
from hwprof.spec import parse_dtype
from hwprof.training import OPTIMIZERS, make_optimizer, training_loss

__all__ = [
    "OPTIMIZERS", "OPTIMIZER_STATES_PER_PARAM", "FakeSetup", "prepare_fake", "ModuleStack",
    "MemoryTracker", "SimulationResult", "simulate", "make_optimizer", "training_loss",
    "storage_key", "cublas_workspace_bytes", "CUBLAS_OPS", "CudaKernelEmulation", "target_kernels",
]

logger = logging.getLogger(__name__)

Wrap = Callable[[nn.Module], contextlib.AbstractContextManager[nn.Module]]
"""``wrap(fake_model)`` -> a context manager yielding the module a simulated step runs (see :func:`simulate`)."""

#: optimizer name -> state tensors kept per trainable parameter (same shape and dtype):
#: plain SGD none, SGD with momentum one ``momentum_buffer``, Adam/AdamW ``exp_avg`` and
#: ``exp_avg_sq`` (torch.optim; the per-parameter ``step`` counter is a CPU scalar).
OPTIMIZER_STATES_PER_PARAM: dict[str | None, int] = {None: 0, "sgd": 0, "momentum": 1, "adam": 2, "adamw": 2}

#: aten ops that run on cuBLAS on CUDA (and so take a cuBLAS workspace on first use per thread)
CUBLAS_OPS = frozenset({"mm", "addmm", "bmm", "baddbmm", "addbmm", "addmv", "mv", "dot", "vdot",
                        "_addmm_activation", "_scaled_mm"})

_DEFAULT_CUBLAS_WORKSPACE_BYTES = 4096 * 1024 * 2 + 16 * 1024 * 8   # ":4096:2:16:8", before sm_90
_SM90_CUBLAS_WORKSPACE_BYTES = 4096 * 8 * 1024                      # 32 MiB on 9.x / 10.x / 12.x


def storage_key(t: torch.Tensor) -> int:
    """Identity of ``t``'s storage (the StorageImpl address): equal for views and in-place results."""
    return int(t.untyped_storage()._cdata)


def storage_nbytes(t: torch.Tensor) -> int:
    """Bytes of ``t``'s whole storage (a view keeps all of its base alive)."""
    return int(t.untyped_storage().nbytes())


def tensor_leaves(obj: Any) -> list[torch.Tensor]:
    """All tensors in a (nested) output or argument structure; a wrapper subclass (a DTensor) by the inner
    tensors that hold its memory (:func:`hwprof.measuring.alloc_trace.inner_tensors`)."""
    return [t for x in pytree.tree_leaves(obj) if isinstance(x, torch.Tensor) for t in inner_tensors(x)]


def cublas_workspace_bytes(capability_major: int | None = None) -> int:
    """torch's cuBLAS workspace per (handle, stream): ``CUBLAS_WORKSPACE_CONFIG=":SIZE_KIB:COUNT..."``
    if set, else 32 MiB for compute capability 9/10/12 and 4096 KiB x 2 + 16 KiB x 8 otherwise
    (``parseChosenWorkspaceSize`` in ``aten/src/ATen/cuda/CublasHandlePool.cpp``)."""
    config = os.environ.get("CUBLAS_WORKSPACE_CONFIG")
    if config:
        pairs = re.findall(r":([0-9]+):([0-9]+)", config)
        if pairs:
            return sum(int(size) * 1024 * int(count) for size, count in pairs)
    if capability_major is None:
        capability_major = 9
        if torch.cuda.is_available():
            capability_major = torch.cuda.get_device_capability()[0]
    return _SM90_CUBLAS_WORKSPACE_BYTES if capability_major in (9, 10, 12) else _DEFAULT_CUBLAS_WORKSPACE_BYTES


# --------------------------------------------------------------------------- fake copies
@dataclass
class FakeSetup:
    """A fake copy of a model and fake inputs, ready to run under ``fake_mode``.

    Byte counts are of distinct storages: tied parameters are counted once.
    """

    fake_mode: FakeTensorMode
    model: nn.Module
    inputs: tuple[Any, ...]
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
    setup = FakeSetup(fm, fmodel, (), device, fdev, param_dtype or torch.float32, amp_dtype, mode == "train")
    with fm:
        convert_tensors(fmodel, param_dtype, fdev, remake=True)
        setup.inputs = fake_inputs(inputs, batch=batch, spec_dtype=dtype if not amp else torch.float32, device=fdev,
                                   fake_mode=fm, cast_tensors=True, rebatch=True)
    fmodel.train(mode == "train")
    seen: set[int] = set()
    for p in fmodel.parameters():
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
    for b in fmodel.buffers():
        k = storage_key(b)
        if k not in seen:
            seen.add(k)
            setup.param_keys[k] = "buffers"
            setup.buffers_bytes += storage_nbytes(b)
    for t in tensor_leaves(setup.inputs):
        k = storage_key(t)
        if k not in seen:
            seen.add(k)
            setup.input_keys.add(k)
            setup.inputs_bytes += storage_nbytes(t)
    return setup


# --------------------------------------------------------------------------- module attribution
class ModuleStack(ModuleCalls):
    """Forward pre/post hooks on every module of a (fake) model: ``current`` is the innermost
    module path being run ("" = root). ``on_leaf(path, module, args, output, call)`` is called after
    each leaf module call. If a forward raises, ``innermost()`` still names the module that
    raised and its input shapes. The hooks are removed on exit.

    Global module hooks filtered to this model's modules (:class:`hwprof.modules.ModuleCalls`):
    per-module hooks would switch off fused fast paths that check ``module._forward_hooks``
    (nn.TransformerEncoderLayer)."""

    def __init__(self, model: nn.Module,
                 on_leaf: Callable[[str, nn.Module, tuple[Any, ...], Any, int], None] | None = None) -> None:
        super().__init__(model)
        self.on_leaf = on_leaf

    @property
    def current_call(self) -> int:
        """Index (in call order, from 0) of the innermost module call; -1 outside the model."""
        return self.stack[-1].call if self.stack else -1

    def innermost(self) -> tuple[str, str, list[tuple[int, ...]]]:
        """(path, type name, input shapes) of the innermost module being run."""
        frame = self.innermost_active()
        if frame is None:
            return ("", type(self.model).__name__, [])
        return frame.path, type(frame.module).__name__, frame.input_shapes

    def on_exit(self, frame: Frame, args: tuple[Any, ...], output: Any) -> None:
        if self.on_leaf is not None and next(iter(frame.module.children()), None) is None:
            self.on_leaf(frame.path, frame.module, args, output, frame.call)


# --------------------------------------------------------------------------- CUDA kernels on fake CPU
class CudaKernelEmulation(TorchFunctionMode):
    """When a CUDA target is replayed on fake CPU tensors, run the ops whose CPU kernels save
    different tensors through the kernels CUDA would use:

    * ``F.dropout`` (training, 0 < p < 1, not in place): CUDA runs ``native_dropout``, which
      saves a boolean mask (1 B per element); the CPU multiplies by a float noise tensor and
      saves that (4 B per element in fp32).
    * ``F.scaled_dot_product_attention``: the CPU picks the math path when there is dropout,
      which keeps the ``L x L`` attention matrix, its softmax and dropout mask for backward;
      CUDA's fused kernels keep only the output and a ``logsumexp`` row per query.

    Attention selection (torch's default priority on sm_80+): flash attention for fp16/bf16 without an
    explicit mask and head dim <= 256; else memory-efficient attention when the head dim is a
    multiple of 4 (fp32) or 8 (fp16/bf16), with a boolean mask converted to an additive one;
    else the math path. ``enable_gqa`` and non-4-D inputs keep the default path.

    ``nn.MultiheadAttention`` calls SDPA from inside ``F.multi_head_attention_forward``, a
    Python-level torch function during which modes are suspended: that function is run as a
    private copy whose global ``scaled_dot_product_attention`` is the emulation (nothing in
    ``torch.nn.functional`` is modified).
    """

    _mha: Callable[..., Any] | None = None

    def __torch_function__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            return _sdpa_as_on_cuda(*args, **kwargs)
        if func is F.dropout:
            out = _dropout_as_on_cuda(*args, **kwargs)
            if out is not None:
                return out
        if func is F.multi_head_attention_forward:
            return self._mha_copy()(*args, **kwargs)
        return func(*args, **kwargs)

    @classmethod
    def _mha_copy(cls) -> Callable[..., Any]:
        if cls._mha is None:
            f = F.multi_head_attention_forward
            glb = dict(f.__globals__)
            glb["scaled_dot_product_attention"] = _sdpa_as_on_cuda
            clone = types.FunctionType(f.__code__, glb, f.__name__, f.__defaults__, f.__closure__)
            clone.__kwdefaults__ = f.__kwdefaults__
            cls._mha = clone
        return cls._mha


def _dropout_as_on_cuda(input: torch.Tensor, p: float = 0.5, training: bool = True,
                        inplace: bool = False) -> torch.Tensor | None:
    if not training or inplace or not 0.0 < p < 1.0 or input.numel() == 0:
        return None
    return torch.native_dropout(input, p, True)[0]


def _sdpa_as_on_cuda(*args: Any, **kwargs: Any) -> torch.Tensor:
    out = _cuda_sdpa(*args, **kwargs)
    return out if out is not None else F.scaled_dot_product_attention(*args, **kwargs)


def _cuda_sdpa(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, attn_mask: torch.Tensor | None = None,
               dropout_p: float = 0.0, is_causal: bool = False, scale: float | None = None,
               enable_gqa: bool = False) -> torch.Tensor | None:
    if enable_gqa or query.dim() != 4 or key.dim() != 4 or value.dim() != 4:
        return None
    head_dim = query.shape[-1]
    half = query.dtype in (torch.float16, torch.bfloat16)
    if half and attn_mask is None and head_dim <= 256 and head_dim % 8 == 0:
        return torch.ops.aten._scaled_dot_product_flash_attention(
            query, key, value, dropout_p, is_causal, False, scale=scale)[0]
    if head_dim % (8 if half else 4) == 0 and query.dtype in (torch.float32, torch.float16, torch.bfloat16):
        if attn_mask is not None and attn_mask.dtype == torch.bool:
            attn_mask = torch.zeros_like(attn_mask, dtype=query.dtype).masked_fill_(~attn_mask, float("-inf"))
        if attn_mask is not None:
            attn_mask = attn_mask.expand(query.shape[0], query.shape[1], query.shape[2], key.shape[2])
        need_lse = torch.is_grad_enabled() and any(t.requires_grad for t in (query, key, value))
        return torch.ops.aten._scaled_dot_product_efficient_attention(
            query, key, value, attn_mask, need_lse, dropout_p, is_causal, scale=scale)[0]
    return None


def target_kernels(setup: FakeSetup) -> contextlib.AbstractContextManager[Any]:
    """Kernel emulation needed to replay ``setup``'s target device on its fake device."""
    if setup.target_device == "cuda" and setup.fake_device.type == "cpu":
        return CudaKernelEmulation()
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- the step pieces
# --------------------------------------------------------------------------- the tracker
@dataclass(eq=False)
class _Record:
    key: int
    nbytes: int
    op: str
    iteration: int
    phase: str
    module: str
    alloc_event: int
    free_event: int | None = None
    category: str = "temporary"


class MemoryTracker(TorchDispatchMode):
    """Follows live storages through aten ops and feeds an allocator model (see module docstring).

    ``records`` holds every storage ever seen (with allocation/free event numbers and a
    category: params, buffers, inputs, activations, grads, optimizer_state, workspace,
    temporary); ``timeline`` one row per allocation or free.
    """

    def __init__(self, allocator: AllocatorModel, modules: ModuleStack | None = None,
                 workspace_bytes: int = 0, skip_step_scalars: bool = False, record_timeline: bool = True) -> None:
        super().__init__()
        self.allocator = allocator
        self.modules = modules
        self.workspace_bytes = workspace_bytes
        self.skip_step_scalars = skip_step_scalars
        self.record_timeline = record_timeline
        self.records: list[_Record] = []
        self.live: dict[int, _Record] = {}
        self._finalizers: dict[int, weakref.finalize] = {}
        self.event = 0
        self.iteration = 0
        self.phase = "setup"
        self.peak_allocated_event = 0
        self.peak_requested_bytes = 0
        self.phase_peaks: dict[tuple[int, str], int] = {}
        self.timeline: list[tuple[int, int, str, str, str, int, int, int]] = []
        self._workspace_phases: set[str] = set()
        self._watched: set[int] = set()

    # -- phases
    def set_phase(self, iteration: int, phase: str) -> None:
        self.iteration, self.phase = iteration, phase
        self.phase_peaks.setdefault((iteration, phase), self.allocator.allocated_bytes)

    # -- registration
    def register(self, t: torch.Tensor, category: str, op: str = "<existing>") -> None:
        """Count an already-existing tensor (parameter, buffer, input) as live."""
        rec = self._track(t, op)
        if rec is not None:
            rec.category = category

    def mark(self, tensors: list[torch.Tensor], category: str) -> None:
        """Label the live storages of ``tensors`` (e.g. the gradients after backward)."""
        for t in tensor_leaves(tensors):
            rec = self.live.get(storage_key(t))
            if rec is not None and rec.category in ("temporary", "activations"):
                rec.category = category

    def mark_forward_end(self) -> int:
        """Label the storages allocated in this forward and still live as activations; return their bytes."""
        total = 0
        for rec in self.live.values():
            if rec.phase == "forward" and rec.iteration == self.iteration and rec.category == "temporary":
                rec.category = "activations"
                total += rec.nbytes
        return total

    # -- dispatch
    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kwargs = kwargs or {}
        self._check_watched()
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__ if hasattr(func, "overloadpacket") else str(func)
        if self.workspace_bytes and name in CUBLAS_OPS:
            self._maybe_workspace(name)
        for t in tensor_leaves(out):
            self._track(t, name)
        for t in tensor_leaves((args, kwargs)):
            self._check_resize(t)
            if isinstance(t, nn.Parameter):
                self._watched.add(storage_key(t))
        return out

    def _check_watched(self) -> None:
        """Parameters' storages resized between ops: a wrapper that gathers parameters (FSDP2) frees and
        re-allocates them with ``untyped_storage().resize_()``, which dispatches no op, so they are checked
        before every op once an op has taken them."""
        for key in list(self._watched):
            rec, fin = self.live.get(key), self._finalizers.get(key)
            alive = fin.peek() if fin is not None else None
            if rec is None or alive is None:
                self._watched.discard(key)
            elif int(alive[0].nbytes()) != rec.nbytes:
                self._resized(rec, int(alive[0].nbytes()))

    def _maybe_workspace(self, op: str) -> None:
        thread = "backward" if self.phase == "backward" else "forward"
        if thread in self._workspace_phases:
            return
        self._workspace_phases.add(thread)
        key = -len(self._workspace_phases)            # never a real storage address
        rec = _Record(key, self.workspace_bytes, f"cublas_workspace({op})", self.iteration, self.phase,
                      self._module(), self.event + 1, category="workspace")
        self.records.append(rec)
        self.live[key] = rec
        self._malloc(rec)

    def _module(self) -> str:
        if self.phase != "forward" or self.modules is None:
            return ""
        return self.modules.current

    def _track(self, t: torch.Tensor, op: str) -> _Record | None:
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):    # sparse / nested / opaque tensors
            return None
        key = int(st._cdata)
        rec = self.live.get(key)
        if rec is not None:
            return rec
        if t.device.type == "meta":                    # e.g. SDPA's philox seed/offset placeholders
            return None
        if self.skip_step_scalars and self.phase == "step" and t.dim() == 0:
            return None
        rec = _Record(key, int(st.nbytes()), op, self.iteration, self.phase, self._module(), self.event + 1)
        self.records.append(rec)
        self.live[key] = rec
        self._finalizers[key] = weakref.finalize(st, self._on_free, key)
        self._malloc(rec)
        return rec

    def _check_resize(self, t: torch.Tensor) -> None:
        try:
            st = t.untyped_storage()
        except (RuntimeError, NotImplementedError):
            return
        rec = self.live.get(int(st._cdata))
        if rec is not None and int(st.nbytes()) != rec.nbytes:
            self._resized(rec, int(st.nbytes()))

    def _resized(self, rec: _Record, nbytes: int) -> None:
        self.allocator.free(rec.key)
        rec.nbytes = nbytes
        self._malloc(rec)

    def _malloc(self, rec: _Record) -> None:
        self.event += 1
        self.allocator.malloc(rec.key, rec.nbytes)
        self._after_event(rec, "alloc")

    def _on_free(self, key: int) -> None:
        rec = self.live.pop(key, None)
        self._finalizers.pop(key, None)
        if rec is None:
            return
        self.event += 1
        rec.free_event = self.event
        self.allocator.free(key)
        self._after_event(rec, "free")

    def _after_event(self, rec: _Record, kind: str) -> None:
        a = self.allocator
        if a.allocated_bytes >= a.peak_allocated_bytes and kind == "alloc":
            self.peak_allocated_event = self.event
        self.peak_requested_bytes = max(self.peak_requested_bytes, a.requested_bytes)
        k = (self.iteration, self.phase)
        self.phase_peaks[k] = max(self.phase_peaks.get(k, 0), a.allocated_bytes)
        if self.record_timeline:
            self.timeline.append((self.event, self.iteration, self.phase, kind, rec.op, rec.nbytes,
                                  a.allocated_bytes, a.reserved_bytes))

    def close(self) -> None:
        """Detach the finalizers of storages still alive (the fake model outlives the tracker)."""
        for f in self._finalizers.values():
            f.detach()
        self._finalizers.clear()

    # -- results
    def live_at(self, event: int) -> list[_Record]:
        return [r for r in self.records
                if r.alloc_event <= event and (r.free_event is None or r.free_event > event)]

    def bytes_by_category(self, records: list[_Record]) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in records:
            out[r.category] = out.get(r.category, 0) + r.nbytes
        return out


# --------------------------------------------------------------------------- simulate
@dataclass
class SimulationResult:
    """What the replay predicts. All values in bytes.

    * ``peak_allocated_bytes``: predicted ``max_memory_allocated`` (allocator-rounded, with workspace);
    * ``peak_requested_bytes``: the same peak without rounding (sum of live tensor storages);
    * ``reserved_bytes``: predicted ``max_memory_reserved`` (None on CPU);
    * ``components``: params, buffers, grads, optimizer_state (as held after the step),
      activations_saved (forward-allocated storages live when the forward ends, steady state),
      inputs, workspace, allocator_rounding (allocated minus requested at the peak),
      peak_predicted, reserved_predicted;
    * ``at_peak``: bytes by category live at the moment of the peak;
    * ``phase_peaks``: DataFrame of the peak per (iteration, phase); ``timeline``: every event.
    """

    components: dict[str, int | None]
    peak_allocated_bytes: int
    peak_requested_bytes: int
    reserved_bytes: int | None
    at_peak: dict[str, int]
    peak_phase: str
    phase_peaks: pd.DataFrame
    timeline: pd.DataFrame
    fake_device: str
    notes: list[str]


def simulate(model: nn.Module, inputs: Any, *, mode: str = "train", optimizer: str | None = None,
             dtype: torch.dtype | str = torch.float32, amp: bool = False, batch: int | None = None,
             device: str = "cuda", iterations: int | None = None, fake_device: torch.device | str | None = None,
             foreach: bool | None = None, workspace_bytes: int | None = None,
             record_timeline: bool = True, wrap: Wrap | None = None) -> SimulationResult:
    """Replay ``iterations`` training steps (default: 2 with an optimizer, else 1) or one
    inference forward on fake tensors and return the predicted peaks (see module docstring).

    ``foreach`` defaults to torch's own choice on the target device (True on CUDA, False on
    CPU); ``workspace_bytes`` to :func:`cublas_workspace_bytes` on CUDA and 0 on CPU.
    ``wrap(fake_model)``: a context manager entered under the tracker before the first
    iteration, yielding the module the iterations run (e.g. the fake model wrapped for
    data-parallel training); what it allocates is tracked like everything else.
    """
    if optimizer is not None and optimizer not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {optimizer!r}; expected one of {OPTIMIZERS} or None")
    notes: list[str] = []
    fdev = fake_device_for(device, fake_device)
    try:
        return _simulate_on(model, inputs, mode, optimizer, dtype, amp, batch, device, iterations, fdev,
                            foreach, workspace_bytes, record_timeline, notes, wrap)
    except Exception as e:      # noqa: BLE001 - a kernel without a fake impl on this device: retry on CPU
        if fdev.type == "cpu":
            raise
        logger.warning("fake run on %s failed (%s); retrying on fake CPU tensors", fdev, e)
        notes.append(f"fake run on {fdev} failed ({type(e).__name__}); replayed on fake CPU tensors")
        return _simulate_on(model, inputs, mode, optimizer, dtype, amp, batch, device, iterations,
                            torch.device("cpu"), foreach, workspace_bytes, record_timeline, notes, wrap)


def _simulate_on(model: nn.Module, inputs: Any, mode: str, optimizer: str | None, dtype: torch.dtype | str,
                 amp: bool, batch: int | None, device: str, iterations: int | None, fdev: torch.device,
                 foreach: bool | None, workspace_bytes: int | None, record_timeline: bool,
                 notes: list[str], wrap: Wrap | None = None) -> SimulationResult:
    setup = prepare_fake(model, inputs, batch=batch, dtype=dtype, amp=amp, device=device, mode=mode,
                         fake_device=fdev)
    train = mode == "train"
    opt_name = optimizer if train else None
    if iterations is None:
        iterations = 2 if opt_name is not None else 1
    if foreach is None:
        foreach = device == "cuda"
    if workspace_bytes is None:
        workspace_bytes = cublas_workspace_bytes() if device == "cuda" else 0
    allocator = make_allocator(device)
    fm = setup.fake_mode
    fmodel = setup.model
    params: list[nn.Parameter] = []
    with ModuleStack(fmodel) as stack, fm:
        tracker = MemoryTracker(allocator, stack, workspace_bytes=workspace_bytes,
                                skip_step_scalars=(device == "cuda"), record_timeline=record_timeline)
        _register_live(tracker, setup)
        opt = None
        activations = 0
        try:
            with tracker, (wrap(fmodel) if wrap is not None else contextlib.nullcontext(fmodel)) as run_model:
                run = setup if run_model is fmodel else dataclasses.replace(setup, model=run_model)
                params = [p for p in run_model.parameters() if p.requires_grad]
                tracker.mark(list(run_model.parameters()), "params")   # a wrapper's new (sharded) parameters
                opt = make_optimizer(opt_name, params, foreach)
                for it in range(iterations):
                    activations = max(activations, _one_iteration(run, tracker, opt, params, it, train))
        finally:
            tracker.close()
    if train and params and not any(r.phase == "backward" for r in tracker.records):
        notes.append("the output has no floating tensor requiring grad: no backward was run")
    a = allocator
    at_peak = tracker.bytes_by_category(tracker.live_at(tracker.peak_allocated_event))
    final = tracker.bytes_by_category(list(tracker.live.values()))
    grads = sum(r.nbytes for r in tracker.records
                if r.category == "grads" and r.iteration == iterations - 1) if train else 0
    requested_at_peak = sum(at_peak.values())
    peak_phase = _phase_of_event(tracker)
    components: dict[str, int | None] = {
        "params": setup.params_bytes,
        "buffers": setup.buffers_bytes,
        "grads": grads,
        "optimizer_state": final.get("optimizer_state", 0),
        "activations_saved": activations,
        "inputs": setup.inputs_bytes,
        "workspace": final.get("workspace", 0),
        "allocator_rounding": a.peak_allocated_bytes - requested_at_peak,
        "peak_predicted": a.peak_allocated_bytes,
        "reserved_predicted": a.peak_reserved_bytes if device == "cuda" else None,
    }
    phase_peaks = pd.DataFrame(
        [{"iteration": i, "phase": ph, "peak_allocated_bytes": v} for (i, ph), v in tracker.phase_peaks.items()
         if ph != "setup"])
    timeline = pd.DataFrame(tracker.timeline, columns=["event", "iteration", "phase", "kind", "op", "nbytes",
                                                       "allocated_bytes", "reserved_bytes"])
    notes.append(f"fake tensors on {setup.fake_device}; peak in {peak_phase}")
    rnns = sorted({type(m).__name__ for m in fmodel.modules() if isinstance(m, nn.RNNBase)})
    if rnns and train:
        kept = "cuDNN's reserve space" if device == "cuda" else "oneDNN's RNN workspace"
        notes.append(f"not modelled: {kept}, which {'/'.join(rnns)} keeps from forward to backward in training "
                     "(the fake kernel returns it empty); the prediction is low by that much")
    if device == "cuda":
        notes.append(f"optimizer foreach={foreach}; cuBLAS workspace {workspace_bytes} B per thread")
    return SimulationResult(components, a.peak_allocated_bytes, tracker.peak_requested_bytes,
                            a.peak_reserved_bytes if device == "cuda" else None, at_peak, peak_phase,
                            phase_peaks, timeline, str(setup.fake_device), notes)


def _register_live(tracker: MemoryTracker, setup: FakeSetup) -> None:
    """The parameters, buffers and inputs as live before the step (in a function of its own: a loop variable
    left in the caller would keep the last parameter alive after a wrapper such as FSDP2 replaced it)."""
    for p in setup.model.parameters():
        tracker.register(p, "params")
    for b in setup.model.buffers():
        tracker.register(b, "buffers")
    for t in tensor_leaves(setup.inputs):
        tracker.register(t, "inputs")


def _one_iteration(setup: FakeSetup, tracker: MemoryTracker, opt: torch.optim.Optimizer | None,
                   params: list[nn.Parameter], it: int, train: bool) -> int:
    """One forward (+ backward + step); returns the activation bytes live at the end of the forward."""
    tracker.set_phase(it, "forward")
    loss = None
    with setup.autocast(), target_kernels(setup):
        if train:                       # as hwprof.measure: the output is not kept, only the loss
            loss = training_loss(setup.model(*setup.inputs))
        else:
            with torch.no_grad():
                setup.model(*setup.inputs)
    activations = tracker.mark_forward_end()
    if loss is not None:
        tracker.set_phase(it, "backward")
        loss.backward()
        del loss
        tracker.mark([p.grad for p in params if p.grad is not None], "grads")
        if opt is not None:
            tracker.set_phase(it, "step")
            opt.step()
            tracker.mark([v for st in opt.state.values() for v in st.values() if isinstance(v, torch.Tensor)],
                         "optimizer_state")
            tracker.set_phase(it, "zero_grad")
            opt.zero_grad(set_to_none=True)
    return activations


def _phase_of_event(tracker: MemoryTracker) -> str:
    ev = tracker.peak_allocated_event
    for r in tracker.records:
        if r.alloc_event == ev:
            return f"{r.phase} (iteration {r.iteration + 1})"
    return "setup"
