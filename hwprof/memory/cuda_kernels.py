"""CUDA-kernel emulation: when a CUDA target is replayed on fake CPU tensors, the ops whose CPU
kernels save other tensors for backward run through the kernels CUDA would use.

For convolutions, batch/layer norms, pooling, activations and linear layers the autograd
formulas save the same tensors on either device (``cudnn_batch_norm`` adds a reserve buffer
that is empty outside its persistent mode); :class:`CudaKernelEmulation` routes the two ops whose
CPU kernels save different tensors (dropout, scaled-dot-product attention) to the kernels CUDA
runs. This is checked against GPU measurements by ``bench/memory_validation.py``, not by the CPU
tests, which check the replay against real CPU tensors. ``nn.LSTM`` is not emulated (cuDNN packs
its weights into one buffer and keeps a reserve buffer; the CPU replay runs the native LSTM).
"""

from __future__ import annotations

import contextlib
import types
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from hwprof.memory.fake_model import FakeSetup

__all__ = ["CudaKernelEmulation", "target_kernels"]


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

