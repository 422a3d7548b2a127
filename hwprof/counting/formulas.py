"""One registry of cost formulas: aten op -> (FLOPs, MACs), as pure arithmetic on shapes.

Conventions (docs/CONVENTIONS.md):

* **FLOP** = one floating-point add or multiply; **MAC** = one multiply-accumulate.
  For matmul and convolution FLOPs = 2 x MACs exactly (``torch.utils.flop_counter``'s
  convention). The bias add of ``addmm``/``convolution`` is not counted separately: a conv
  output point does K²C multiplies and K²C-1 adds, plus 1 for the bias, which is the seeds'
  "(2K²C - 1) + 1" = 2 x MACs. Without bias the exact count is 2 x MACs - outputs.
  Bias *gradients* are reductions and are counted (1 FLOP per summed element).
* Elementwise ops cost a documented number of FLOPs per output element (``ELEMENTWISE``):
  1 for arithmetic, comparisons and single math functions (exp, log, sqrt, tanh, erf...),
  the sum of their steps for composite activations (sigmoid 1/(1+exp(-x)) = 4).
* Reductions cost 1 FLOP per input element (sum, mean, max...), 3 for variance.
* Softmax: max, subtract, exp, sum, divide = 5 per element; its backward 4.
* Normalisation forward: mean 1 + variance 3 + normalise 2 + affine 2 FLOPs per element
  (batch norm in eval: normalise 2 + affine 2); backward: 5 per element for the two
  reductions (sum g, sum g·x̂ with x̂ recomputed) + 5 for grad_input when requested.
* Attention (``scaled_dot_product_attention`` kernels): MACs of Q·Kᵀ and P·V over the
  (query, key) pairs that are *useful*: with ``is_causal=True`` only the
  ``sum_i min(i+1, S)`` unmasked pairs (about half). Flash kernels skip masked blocks, CPU's
  math path computes the full matrix; hwprof reports the useful work in both cases.
  Softmax adds 5 FLOPs per useful score. Backward: torch's 4-matmul count x the causal ratio.
* RNN layers (LSTM/GRU/RNN, fused kernels ``mkldnn_rnn_layer``, ``_cudnn_rnn``): per time
  step and direction, MACs = G·H·(C_in + H) with G gates (4 LSTM, 3 GRU, 1 RNN); plus the
  elementwise gate work (LSTM: 26·H FLOPs, see :func:`_rnn_elementwise_per_step`). Seed 004
  writes MACs = 4·H·C_in + 4·H·H + H·H; its last H·H term is not a matmul (hwprof counts the
  cell's elementwise work as FLOPs instead). Backward = 2 x forward (grads of inputs/hidden
  and of weights).
* Zero-cost ops: views and metadata (no kernel: 0 FLOPs, 0 bytes); data movement and
  creation (copy, cat, pad, gather, RNG...: 0 FLOPs, their bytes are counted).

**Op classes.** Every op is registered with its formula *and* its class (:data:`OpClass`:
matmul, conv, attention, rnn, norm, pool, elementwise, reduction, embedding, loss,
data_movement, view, collective, other); this registry is the only op list in hwprof, and
every other module asks it (:func:`op_class`, :func:`is_view`, :func:`uses_cublas_workspace`).
View and metadata ops are not listed: they are recognised from the op's schema
(:func:`schema_is_view`), so a view op no formula names (``as_strided_``, ``unsafe_split``)
is still free, never "uncounted". A formula never branches on the op's name: ops that need
different arithmetic get their own registered formula.

Every formula takes an :class:`OpCall` (shapes and arguments, no tensors) and returns a
:class:`Cost`; ops with no formula are reported by the counter as *uncounted*, never zero.
Registering an op twice raises.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

import torch
import torch.utils.flop_counter as tfc

__all__ = [
    "T", "OpCall", "Cost", "Formula", "OpClass", "OP_CLASSES", "REGISTRY", "register", "register_no_kernel",
    "lookup", "op_class", "CONV_CLASSES", "MATMUL_CLASSES", "TENSOR_CLASSES", "is_view", "schema_is_view", "uses_cublas_workspace", "ELEMENTWISE", "conv_macs",
    "causal_pairs", "rnn_gates",
]

aten = torch.ops.aten

OpClass = Literal["matmul", "conv", "attention", "rnn", "norm", "pool", "elementwise", "reduction", "embedding",
                  "loss", "data_movement", "view", "collective", "other"]
"""What kind of work an op does. The roofline maps "conv" to cuDNN's TF32 switch, "matmul",
"attention" and "rnn" to the matmul TF32 switch, and every other class to the fp32 CUDA-core roof.
"view" = no kernel (views, metadata queries, uninitialised allocations); "collective" = ops of the
c10d namespaces; "other" = an op the registry does not know (no formula: uncounted)."""

OP_CLASSES: tuple[str, ...] = get_args(OpClass)

CONV_CLASSES = frozenset({"conv"})
"""Op classes that follow cuDNN's TF32 switch for fp32 (``torch.backends.cudnn.allow_tf32``)."""
MATMUL_CLASSES = frozenset({"matmul", "attention", "rnn"})
"""Op classes that follow cuBLAS's TF32 switch for fp32 (``torch.backends.cuda.matmul.allow_tf32``)."""
TENSOR_CLASSES = CONV_CLASSES | MATMUL_CLASSES
"""Op classes that may run on tensor cores / matrix units; every other class is held to the fp32 roof."""

_COLLECTIVE_NAMESPACES = frozenset({"c10d", "_c10d_functional", "_c10d_functional_autograd", "c10d_functional"})


@dataclass(frozen=True)
class T:
    """A tensor's metadata: all a formula may look at."""

    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    @property
    def itemsize(self) -> int:
        return self.dtype.itemsize


@dataclass(frozen=True)
class OpCall:
    """One aten op call: ``args`` by schema name (tensors as :class:`T`), ``pos`` positionally."""

    op: str
    args: Mapping[str, Any]
    outputs: tuple[Any, ...] = ()
    pos: tuple[Any, ...] = ()

    def out(self, i: int = 0) -> T:
        o = self.outputs[i]
        if not isinstance(o, T):
            raise TypeError(f"{self.op}: output {i} is not a tensor")
        return o

    @property
    def out_numel(self) -> int:
        return self.out(0).numel


@dataclass(frozen=True)
class Cost:
    """FLOPs and MACs of one op call; ``bytes_read`` overrides the generic input-bytes rule
    (e.g. an embedding reads only the rows it gathers, not the whole table)."""

    flops: int
    macs: int = 0
    bytes_read: int | None = None
    notes: tuple[str, ...] = field(default=())
    bytes_written: int | None = None
    """Overrides the generic output-bytes rule: an in-place ``_foreach_*_`` op returns nothing, yet writes its
    first list of tensors."""


Formula = Callable[[OpCall], Cost]
REGISTRY: dict[Any, Formula] = {}
_CLASS: dict[Any, OpClass] = {}          # packet -> class, for every registered packet
_CUBLAS_WORKSPACE: set[Any] = set()      # packets that run on cuBLAS on CUDA


def register(*ops: Any, op_class: OpClass, cublas_workspace: bool = False) -> Callable[[Formula], Formula]:
    """Register ``formula`` and its class for each op packet (``aten.mm``); a second
    registration is an error. ``cublas_workspace``: on CUDA the op runs on cuBLAS, which takes
    its workspace on first use per thread (the memory replay charges it)."""
    if op_class not in OP_CLASSES:
        raise ValueError(f"unknown op class {op_class!r}; expected one of {OP_CLASSES}")
    if op_class == "view":
        raise ValueError("view ops have no formula: they are recognised from their schema (or register_no_kernel)")

    def deco(formula: Formula) -> Formula:
        for op in _claim(ops, op_class):
            REGISTRY[op] = formula
            if cublas_workspace:
                _CUBLAS_WORKSPACE.add(op)
        return formula

    return deco


def register_no_kernel(*ops: Any) -> None:
    """Class "view" for ops that launch no kernel but whose schema cannot say so: metadata
    queries returning numbers (``sym_size``, ``item``...), uninitialised allocations (``empty``...)."""
    _claim(ops, "view")


def _claim(ops: Sequence[Any], op_class: OpClass) -> list[Any]:
    claimed = []
    for op in ops:
        if op is None:  # op absent from this torch build
            continue
        if op in _CLASS:
            raise RuntimeError(f"duplicate formula registration for {op}")
        _CLASS[op] = op_class
        claimed.append(op)
    return claimed


def lookup(packet: Any) -> Formula | None:
    return REGISTRY.get(packet)


def _ops(*names: str) -> list[Any]:
    """The aten packets that exist in this torch build (formulas cover several versions)."""
    return [getattr(aten, n) for n in names if hasattr(aten, n)]


# ----------------------------------------------------------------------------- queries
def _packet(op: Any) -> Any:
    """The op packet of an OpOverload, a packet, or a name ("aten.mm", "aten::mm", "mm",
    "prim.device", "aten.add.Tensor"); None for a name no torch op has."""
    if isinstance(op, torch._ops.OpOverload):
        return op.overloadpacket
    if not isinstance(op, str):
        return op
    ns, sep, rest = op.partition("::")
    if not sep:
        ns, sep, rest = op.partition(".")
    if not sep:
        ns, rest = "aten", op
    return getattr(getattr(torch.ops, ns), rest.split(".")[0], None)


def op_class(op: Any) -> OpClass:
    """The class of ``op`` (an OpOverload, a packet, or a name like "aten.convolution").

    Registered ops: the class given at registration. Otherwise "view" when the schema says the
    op only aliases its input (:func:`schema_is_view`), "collective" in the c10d namespaces,
    else "other" (an op with no formula)."""
    packet = _packet(op)
    if packet is None:
        return "other"
    cls = _CLASS.get(packet)
    if cls is not None:
        return cls
    if schema_is_view(op if isinstance(op, torch._ops.OpOverload) else packet):
        return "view"
    if str(packet).split(".")[0] in _COLLECTIVE_NAMESPACES:
        return "collective"
    return "other"


def is_view(op: Any) -> bool:
    """Views, metadata queries and uninitialised allocations: no kernel touches memory."""
    return op_class(op) == "view"


def uses_cublas_workspace(op: Any) -> bool:
    """True for ops that run on cuBLAS on CUDA (and so take a cuBLAS workspace on first use)."""
    return _packet(op) in _CUBLAS_WORKSPACE


# ----------------------------------------------------------------------------- views from the schema
@functools.cache
def schema_is_view(op: Any) -> bool:
    """Whether an OpOverload (or every tensor overload of a packet) is a view by its schema.

    The rule is torchgen's ``NativeFunction.is_view_op`` (the one functionalization uses): a
    return annotated as a non-mutating alias of an input (``Tensor(a)``, ``Tensor(a -> *)[]``),
    an in-place view (tag ``inplace_view``: ``as_strided_``, ``transpose_``; ``resize_`` and
    ``resize_as_`` excluded, they allocate), or an input aliased by a wildcard. ``out=`` variants
    write into their buffers and are not views. The ``unsafe_*`` ops (``unsafe_split``,
    ``unsafe_chunk``, ``_unsafe_view``) are the same views with autograd's view tracking off, and
    their schemas drop the annotation for that reason: they are judged by their safe
    counterpart's schema (``split``, ``chunk``, ``view``). Ops whose schema only *may* alias
    (``contiguous``, ``reshape``, ``to``) are CompositeImplicitAutograd: they decompose above
    the dispatcher, so the counter sees the view or copy they become (the ones that copy are
    registered as data movement, and the registry wins over this rule in :func:`op_class`)."""
    if isinstance(op, torch._ops.OpOverloadPacket):
        overloads = [o for o in (getattr(op, n) for n in op.overloads()) if _takes_tensors(o) and not _is_out(o)]
        return bool(overloads) and all(schema_is_view(o) for o in overloads)
    if not isinstance(op, torch._ops.OpOverload) or _is_out(op):
        return False
    op = _safe_counterpart(op)
    name = op._schema.name
    if torch.Tag.inplace_view in op.tags:
        return name not in ("aten::resize_", "aten::resize_as_")
    if any(r.alias_info is not None and not r.alias_info.is_write for r in op._schema.returns):
        return True
    return any(a.alias_info is not None and "*" in a.alias_info.after_set for a in op._schema.arguments)


def _takes_tensors(o: Any) -> bool:
    s = o._schema
    return any("Tensor" in str(x.type) for x in (*s.arguments, *s.returns))


def _is_out(o: Any) -> bool:
    return torch.Tag.out in o.tags or any(
        a.kwarg_only and a.alias_info is not None and a.alias_info.is_write for a in o._schema.arguments)


def _safe_counterpart(o: Any) -> Any:
    """``aten.unsafe_split.Tensor`` -> ``aten.split.Tensor``; any other op -> itself."""
    name = o.overloadpacket.__name__
    for prefix in ("_unsafe_", "unsafe_"):
        if name.startswith(prefix):
            safe = getattr(aten, name.removeprefix(prefix), None)
            if safe is not None and o._overloadname in safe.overloads():
                return getattr(safe, o._overloadname)
    return o


register_no_kernel(*_ops(
    "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "size", "stride", "dim", "numel",
    "is_contiguous", "is_same_size", "_local_scalar_dense", "item", "is_nonzero",
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "empty_permuted",
    "_has_compatible_shallow_copy_type", "record_stream", "_nested_tensor_from_mask_left_aligned",
), *([torch.ops.prim.device, torch.ops.prim.layout] if hasattr(torch.ops, "prim") else []))


# ----------------------------------------------------------------------------- data movement: 0 FLOPs
_DATA_MOVEMENT = _ops(
    "clone", "copy_", "_to_copy", "contiguous", "cat", "stack", "constant_pad_nd", "reflection_pad1d",
    "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d", "replication_pad3d",
    "index", "_unsafe_index", "index_select", "gather", "scatter", "masked_select", "take", "index_put",
    "index_put_", "_index_put_impl_", "masked_fill", "masked_fill_", "fill", "fill_", "zero_", "zeros",
    "zeros_like", "ones", "ones_like", "full", "full_like", "new_zeros", "new_ones", "new_full", "arange",
    "repeat", "roll", "flip", "tril", "triu", "tril_", "triu_", "slice_scatter", "select_scatter",
    "select_backward", "slice_backward", "as_strided_scatter", "diagonal_scatter", "expand_copy",
    "permute_copy", "view_copy", "transpose_copy", "lift", "bernoulli", "bernoulli_", "rand", "rand_like",
    "randn", "randn_like", "randint", "randint_like", "normal", "normal_", "uniform_", "randperm",
    "scalar_tensor", "tensor", "_to_dense", "pixel_shuffle", "pixel_unshuffle", "channel_shuffle",
    "native_channel_shuffle", "im2col", "col2im", "one_hot", "nonzero", "sort", "topk", "argsort", "_unique",
    "_unique2", "unique_dim", "unique_consecutive",
    "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d", "_upsample_nearest_exact3d", "lift_fresh_copy", "alias_copy",
    "split_with_sizes_copy", "unbind_copy", "_pin_memory", "to_padded_tensor", "_nested_tensor_from_tensor_list",
    # composites whose schema says "may alias" but which copy when they must; they decompose above
    # the dispatcher (into _to_copy, _pin_memory), and are registered here so no query calls them views
    "to", "pin_memory",
)


@register(*_DATA_MOVEMENT, op_class="data_movement")
def _data_movement(c: OpCall) -> Cost:
    """Copies, creation, gathers and RNG: 0 FLOPs (their bytes are counted by the caller)."""
    return Cost(0)


# ----------------------------------------------------------------------------- elementwise
ELEMENTWISE: dict[str, int] = {
    # arithmetic, comparisons, selections: 1 per element
    **dict.fromkeys([
        "add", "add_", "sub", "sub_", "rsub", "mul", "mul_", "div", "div_", "neg", "neg_", "abs", "abs_",
        "maximum", "minimum", "fmax", "fmin", "clamp", "clamp_", "clamp_min", "clamp_min_", "clamp_max",
        "clamp_max_", "where", "eq", "ne", "lt", "gt", "le", "ge", "logical_and", "logical_or", "logical_not",
        "logical_xor", "bitwise_and", "bitwise_or", "bitwise_not", "bitwise_xor", "sign", "floor", "ceil",
        "round", "trunc", "frac", "reciprocal", "reciprocal_", "square", "remainder", "fmod", "floor_divide",
        "relu", "relu_", "threshold", "threshold_", "threshold_backward", "exp", "exp_", "exp2", "expm1",
        "log", "log_", "log2", "log10", "log1p", "sqrt", "sqrt_", "rsqrt", "rsqrt_", "pow", "pow_",
        "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "tanh", "tanh_", "erf", "erf_",
        "erfc", "erfinv", "isnan", "isinf", "isfinite", "nan_to_num", "relu6", "heaviside", "hypot",
        "_masked_scale", "masked_scatter", "sgn", "signbit", "copysign", "xlogy", "logit",
        "_conj_physical", "conj_physical", "positive", "true_divide",
    ], 1),
    "hardtanh": 2, "hardtanh_": 2, "hardtanh_backward": 2,          # 2 compares
    "leaky_relu": 2, "leaky_relu_": 2, "leaky_relu_backward": 2,    # compare, multiply
    "prelu": 2, "_prelu_kernel": 2, "_prelu_kernel_backward": 4,
    "sigmoid": 4, "sigmoid_": 4,                                     # 1/(1+exp(-x)): neg, exp, add, div
    "sigmoid_backward": 3,                                           # g * y * (1 - y)
    "tanh_backward": 3,                                              # g * (1 - y*y)
    "silu": 5, "silu_": 5,                                           # x * sigmoid(x)
    "silu_backward": 8,                                              # g * s * (1 + x (1 - s)), s recomputed
    "gelu": 5, "gelu_": 5,                                           # 0.5 x (1 + erf(x/√2)); tanh approx: see _gelu
    "gelu_backward": 9,
    "hardswish": 5, "hardswish_": 5, "hardswish_backward": 5,        # x * clamp(x+3, 0, 6) / 6
    "hardsigmoid": 4, "hardsigmoid_": 4, "hardsigmoid_backward": 3,
    "elu": 4, "elu_": 4, "elu_backward": 4, "celu": 5, "selu": 5,
    "softplus": 4, "softplus_backward": 5,                           # log(1+exp(βx))/β with threshold
    "mish": 8, "mish_": 8, "mish_backward": 12,
    "log_sigmoid_forward": 5, "log_sigmoid_backward": 5,
    "addcmul": 3, "addcmul_": 3, "addcdiv": 3, "addcdiv_": 3,       # a + v * b * c
    "lerp": 3, "lerp_": 3,                                           # a + w (b - a)
    "native_dropout": 2, "native_dropout_backward": 2,               # x * mask * 1/(1-p)
    "_softmax": 5, "_log_softmax": 5, "_safe_softmax": 5,
    "_softmax_backward_data": 4, "_log_softmax_backward_data": 4,
    "mse_loss": 3, "mse_loss_backward": 3, "l1_loss": 2, "smooth_l1_loss": 4, "smooth_l1_loss_backward": 4,
    "huber_loss": 4, "huber_loss_backward": 4, "binary_cross_entropy": 6,
    "binary_cross_entropy_backward": 6, "binary_cross_entropy_with_logits": 8,
    "upsample_linear1d": 3, "upsample_bilinear2d": 9, "upsample_trilinear3d": 21,  # 1, 3, 7 lerps of 3 FLOPs
    "upsample_bicubic2d": 32, "_upsample_bilinear2d_aa": 9, "_upsample_bicubic2d_aa": 32,  # 16 taps x MAC
    "upsample_linear1d_backward": 3, "upsample_bilinear2d_backward": 9, "upsample_trilinear3d_backward": 21,
    "upsample_bicubic2d_backward": 32,
    "upsample_nearest1d_backward": 1, "upsample_nearest2d_backward": 1, "upsample_nearest3d_backward": 1,
    "_upsample_nearest_exact1d_backward": 1, "_upsample_nearest_exact2d_backward": 1,
    "_upsample_nearest_exact3d_backward": 1,
    "scatter_add": 1, "scatter_add_": 1, "index_add": 1, "index_add_": 1, "scatter_reduce": 1,
    "index_reduce": 1,
}

# Ops whose per-element count is over the *input* (scatter-adds sum their source / grad).
_PER_INPUT_ELEMENT = {
    "scatter_add", "scatter_add_", "index_add", "index_add_", "scatter_reduce", "index_reduce",
    "upsample_nearest1d_backward", "upsample_nearest2d_backward", "upsample_nearest3d_backward",
    "_upsample_nearest_exact1d_backward", "_upsample_nearest_exact2d_backward",
    "_upsample_nearest_exact3d_backward", "upsample_linear1d_backward", "upsample_bilinear2d_backward",
    "upsample_trilinear3d_backward", "upsample_bicubic2d_backward",
}


# Losses computed elementwise (class "loss"); every other ELEMENTWISE op is "elementwise" or,
# when it sums its input into a smaller output (the per-input ops above: scatter-adds and the
# upsampling backwards), "reduction". Softmax (row max and sum fused with its elementwise steps)
# is classed elementwise.
_LOSSES = {
    "mse_loss", "mse_loss_backward", "l1_loss", "smooth_l1_loss", "smooth_l1_loss_backward", "huber_loss",
    "huber_loss_backward", "binary_cross_entropy", "binary_cross_entropy_backward", "binary_cross_entropy_with_logits",
}


def _elementwise_class(name: str) -> OpClass:
    return "loss" if name in _LOSSES else ("reduction" if name in _PER_INPUT_ELEMENT else "elementwise")


def _elementwise(cost_per_element: int, per_input: bool) -> Formula:
    def formula(c: OpCall) -> Cost:
        if per_input:
            first = next(v for v in c.args.values() if isinstance(v, T))
            return Cost(cost_per_element * first.numel)
        return Cost(cost_per_element * c.out_numel)
    formula.__doc__ = f"{cost_per_element} FLOP(s) per {'input' if per_input else 'output'} element."
    return formula


for _name, _cost in ELEMENTWISE.items():
    if _name in ("gelu", "gelu_"):
        continue
    register(*_ops(_name), op_class=_elementwise_class(_name))(_elementwise(_cost, _name in _PER_INPUT_ELEMENT))


@register(*_ops("gelu", "gelu_"), op_class="elementwise")
def _gelu(c: OpCall) -> Cost:
    """Exact GELU 0.5·x·(1+erf(x/√2)) = 5 FLOPs/element; tanh approximation
    0.5·x·(1+tanh(√(2/π)(x+0.044715x³))) = 9 FLOPs/element."""
    per = 9 if c.args.get("approximate", "none") == "tanh" else 5
    return Cost(per * c.out_numel)


# ----------------------------------------------------------------------------- foreach (optimizers, clipping)
FOREACH: dict[str, int] = {
    **dict.fromkeys(["add", "sub", "mul", "div", "neg", "abs", "maximum", "minimum", "clamp_min", "clamp_max",
                     "sqrt", "rsqrt", "reciprocal", "sign", "exp", "log", "pow", "sin", "cos", "tanh", "erf",
                     "floor", "ceil", "round", "trunc", "frac", "expm1", "log1p", "log2", "log10"], 1),
    "sigmoid": 4, "addcmul": 3, "addcdiv": 3, "lerp": 3,
}
"""FLOPs per element of every tensor in the first list, for ``_foreach_<name>`` and ``_foreach_<name>_``:
the same costs as the single-tensor ops in :data:`ELEMENTWISE` (Adam's and SGD's multi-tensor
kernels, which CUDA optimizers use by default)."""


def _foreach_list(c: OpCall) -> list[T]:
    """The first tensor-list argument of a ``_foreach_*`` call (the tensors it updates or reads)."""
    return next((list(v) for v in c.args.values() if isinstance(v, (list, tuple)) and v
                 and all(isinstance(t, T) for t in v)), [])


def _foreach(cost_per_element: int, in_place: bool) -> Formula:
    def formula(c: OpCall) -> Cost:
        first = _foreach_list(c)
        written = sum(t.numel * t.itemsize for t in first) if in_place else None
        return Cost(cost_per_element * sum(t.numel for t in first), bytes_written=written)
    formula.__doc__ = (f"{cost_per_element} FLOP(s) per element of each tensor of the first list"
                       + ("; in place: that list is what it writes" if in_place else ""))
    return formula


for _name, _cost in FOREACH.items():
    register(*_ops(f"_foreach_{_name}"), op_class="elementwise")(_foreach(_cost, False))
    register(*_ops(f"_foreach_{_name}_"), op_class="elementwise")(_foreach(_cost, True))


@register(*_ops("_foreach_norm"), op_class="reduction")
def _foreach_norm(c: OpCall) -> Cost:
    """One vector norm per tensor of the list (``clip_grad_norm_``): 2 FLOPs per element (square + add)."""
    return Cost(2 * sum(t.numel for t in _foreach_list(c)))


@register(*_ops("_foreach_copy_", "_foreach_zero_"), op_class="data_movement")
def _foreach_move(c: OpCall) -> Cost:
    """Copies and zero-fills: no arithmetic; the first list is written."""
    return Cost(0, bytes_written=sum(t.numel * t.itemsize for t in _foreach_list(c)))


# ----------------------------------------------------------------------------- reductions
def _first_tensor(c: OpCall) -> T:
    return next(v for v in c.args.values() if isinstance(v, T))


@register(*_ops("sum", "mean", "amax", "amin", "max", "min", "argmax", "argmin", "prod", "cumsum", "cumprod",
                "logsumexp", "any", "all", "nansum", "aminmax", "count_nonzero"), op_class="reduction")
def _reduction(c: OpCall) -> Cost:
    """1 FLOP per input element (an add, compare or multiply each)."""
    return Cost(_first_tensor(c).numel)


@register(*_ops("norm", "linalg_vector_norm"), op_class="reduction")
def _vector_norm(c: OpCall) -> Cost:
    """Vector norms: 2 FLOPs per input element (square + add)."""
    return Cost(2 * _first_tensor(c).numel)


@register(*_ops("var", "std", "var_mean", "std_mean"), op_class="reduction")
def _variance(c: OpCall) -> Cost:
    """Mean (1 add/element) then sum of squared deviations (sub, mul, add): 4 per input element."""
    return Cost(4 * _first_tensor(c).numel)


# ----------------------------------------------------------------------------- matmul (torch's formulas)
def _torch_formula(packet: Any) -> Formula:
    """Reuse ``torch.utils.flop_counter``'s shape formula; MACs = FLOPs / 2."""
    fn = tfc.flop_registry[packet]
    raw = getattr(fn, "__wrapped__", fn)

    def formula(c: OpCall) -> Cost:
        shapes = [a.shape if isinstance(a, T) else a for a in c.pos]
        out = c.outputs[0].shape if c.outputs and isinstance(c.outputs[0], T) else None
        flops = int(raw(*shapes, out_shape=out))
        return Cost(flops, flops // 2)

    formula.__doc__ = f"torch.utils.flop_counter's {raw.__name__}: 2·m·n·k FLOPs, m·n·k MACs."
    return formula


for _p in (aten.mm, aten.addmm, aten.bmm, aten.baddbmm):
    register(_p, op_class="matmul", cublas_workspace=True)(_torch_formula(_p))


@register(*_ops("addbmm"), op_class="matmul", cublas_workspace=True)
def _addbmm(c: OpCall) -> Cost:
    """Sum over the batch of b (n x m)·(m x p) products: b·n·m·p MACs, 2 x MACs FLOPs (the add of
    ``self`` folded in, as for ``addmm``)."""
    (b, n, m), p = c.args["batch1"].shape, c.args["batch2"].shape[-1]
    macs = b * n * m * p
    return Cost(2 * macs, macs)


@register(*_ops("_addmm_activation"), op_class="matmul", cublas_workspace=True)
def _addmm_activation(c: OpCall) -> Cost:
    """``addmm`` fused with ReLU (1 FLOP per output element) or GELU (5: the exact GELU, which
    the CPU kernel computes): 2·m·n·k + activation FLOPs, m·n·k MACs."""
    (m, k), n = c.args["mat1"].shape, c.args["mat2"].shape[-1]
    macs = m * n * k
    return Cost(2 * macs + (5 if c.args.get("use_gelu") else 1) * m * n, macs)


@register(*_ops("dot", "vdot"), op_class="matmul", cublas_workspace=True)
def _dot(c: OpCall) -> Cost:
    n = _first_tensor(c).numel
    return Cost(2 * n, n)


@register(*_ops("mv", "addmv"), op_class="matmul", cublas_workspace=True)
def _mv(c: OpCall) -> Cost:
    m, n = c.args["mat"].shape
    return Cost(2 * m * n, m * n)


def _mm_2d(c: OpCall) -> Cost:
    (m, k), (_, n) = c.pos[0].shape, c.pos[1].shape
    return Cost(2 * m * n * k, m * n * k)


register(*_ops("_int_mm"), op_class="matmul")(_mm_2d)
register(*_ops("_scaled_mm"), op_class="matmul", cublas_workspace=True)(_mm_2d)


# ----------------------------------------------------------------------------- convolution
def conv_macs(x: Sequence[int], w: Sequence[int], out: Sequence[int], transposed: bool) -> int:
    """MACs of a (possibly grouped, strided, dilated, transposed) convolution.

    The weight's shape already holds C_in/g (or C_out/g for transposed) so, per output point,
    a direct conv does ``w.numel / C_out`` MACs:
        conv:       N · prod(out spatial) · C_out · (C_in/g) · prod(k) = N · prod(out_sp) · w.numel
        transposed: N · prod(in spatial)  · C_in · (C_out/g) · prod(k) = N · prod(in_sp)  · w.numel
    (seed 002: Conv2d(3,6,3,stride=3) on 1x3x6x6 -> 1·2·2·6·3·9 = 648 MACs = 1296 FLOPs; groups=3 -> 216).
    """
    spatial = x[2:] if transposed else out[2:]
    return x[0] * math.prod(spatial) * math.prod(w)


def _conv_cost(c: OpCall, transposed: bool) -> Cost:
    macs = conv_macs(c.pos[0].shape, c.pos[1].shape, c.out().shape, transposed)
    return Cost(2 * macs, macs)


@register(*_ops("convolution", "_convolution", "convolution_overrideable", "cudnn_convolution",
                "mkldnn_convolution", "_slow_conv2d_forward", "slow_conv3d_forward", "slow_conv_dilated2d",
                "slow_conv_dilated3d", "_conv_depthwise2d", "conv_depthwise3d", "miopen_convolution",
                "_nnpack_spatial_convolution", "thnn_conv2d"), op_class="conv")
def _conv(c: OpCall) -> Cost:
    """2 x MACs (see :func:`conv_macs`); bias add included in the seed's '+1' sense. Transposed
    when the op's ``transposed`` argument says so (the generic convolution ops)."""
    return _conv_cost(c, bool(c.args.get("transposed", False)))


@register(*_ops("cudnn_convolution_transpose", "slow_conv_transpose2d", "slow_conv_transpose3d"), op_class="conv")
def _conv_transpose(c: OpCall) -> Cost:
    """Transposed convolution kernels: 2 x MACs of :func:`conv_macs` with ``transposed=True``."""
    return _conv_cost(c, True)


@register(*_ops("convolution_backward", "convolution_backward_overrideable"), op_class="conv")
def _conv_backward(c: OpCall) -> Cost:
    """grad_input and grad_weight each cost the forward's MACs; grad_bias sums N·C_out·prod(out_sp).

    ``torch.utils.flop_counter`` computes grad_weight as if groups were 1, i.e. C_in·C_out
    instead of C_in·C_out/g MACs: g times too high for grouped convs (256x for a 256-channel
    depthwise conv). hwprof's count follows from the weight's own shape, so groups are exact.
    """
    g_out, x, w = c.args["grad_output"], c.args["input"], c.args["weight"]
    transposed = bool(c.args["transposed"])
    mask = c.args["output_mask"]
    fwd_macs = conv_macs(x.shape, w.shape, g_out.shape, transposed)
    macs = fwd_macs * (int(bool(mask[0])) + int(bool(mask[1])))
    bias_flops = g_out.numel if mask[2] else 0
    return Cost(2 * macs + bias_flops, macs)


# ----------------------------------------------------------------------------- normalisation
def _norm_forward(c: OpCall, training: bool, affine: bool) -> Cost:
    n = _first_tensor(c).numel
    per = (1 + 3 + 2 if training else 2) + (2 if affine else 0)
    return Cost(per * n)


@register(*_ops("native_batch_norm", "_native_batch_norm_legit", "cudnn_batch_norm", "miopen_batch_norm",
                "_batch_norm_with_update"), op_class="norm")
def _batch_norm(c: OpCall) -> Cost:
    """Training: mean 1 + var 3 + normalise 2 + affine 2 FLOPs/element; eval: normalise 2 + affine 2."""
    training = bool(c.args.get("training", True))
    return _norm_forward(c, training, c.args.get("weight") is not None)


@register(*_ops("_native_batch_norm_legit_no_training", "_batch_norm_no_update"), op_class="norm")
def _batch_norm_eval(c: OpCall) -> Cost:
    """Eval-mode batch norm: (x - mean)·invstd·w + b = 4 FLOPs/element (2 without affine)."""
    return _norm_forward(c, False, c.args.get("weight") is not None)


@register(*_ops("native_layer_norm", "native_group_norm"), op_class="norm")
def _layer_norm(c: OpCall) -> Cost:
    """mean 1 + var 3 + normalise 2 + affine 2 FLOPs/element."""
    return _norm_forward(c, True, c.args.get("weight") is not None)


@register(*_ops("_fused_rms_norm"), op_class="norm")
def _rms_norm(c: OpCall) -> Cost:
    """x·rsqrt(mean(x²)+eps)·w: square+add 2, normalise 1, weight 1 FLOPs/element."""
    return Cost((3 + (1 if c.args.get("weight") is not None else 0)) * _first_tensor(c).numel)


def _norm_backward(numel: int, grad_input: bool) -> Cost:
    return Cost((5 + (5 if grad_input else 0)) * numel)


@register(*_ops("native_batch_norm_backward", "native_layer_norm_backward", "native_group_norm_backward",
                "batch_norm_backward"), op_class="norm")
def _norm_bwd(c: OpCall) -> Cost:
    """sum(g) and sum(g·x̂) with x̂ = (x-mean)·invstd recomputed: 5 FLOPs/element;
    grad_input = k·(N·g - sum(g) - x̂·sum(g·x̂)): 5 more when requested (output_mask[0])."""
    mask = c.args.get("output_mask", (True, True, True))
    return _norm_backward(c.args["input"].numel, bool(mask[0]))


@register(*_ops("cudnn_batch_norm_backward", "miopen_batch_norm_backward"), op_class="norm")
def _cudnn_bn_bwd(c: OpCall) -> Cost:
    """cuDNN always returns all three gradients: 10 FLOPs/element."""
    return _norm_backward(c.args["input"].numel, True)


@register(*_ops("_fused_rms_norm_backward"), op_class="norm")
def _rms_norm_bwd(c: OpCall) -> Cost:
    mask = c.args.get("output_mask", (True, True))
    return Cost((3 + (4 if mask[0] else 0)) * c.args["input"].numel)


# ----------------------------------------------------------------------------- pooling
def _window(c: OpCall, key: str = "kernel_size") -> int:
    k = c.args[key]
    return math.prod(k) if isinstance(k, (list, tuple)) else int(k)


@register(*_ops("max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices",
                "avg_pool1d", "avg_pool2d", "avg_pool3d", "mkldnn_max_pool2d", "quantized_max_pool2d"), op_class="pool")
def _pool(c: OpCall) -> Cost:
    """One compare (max) or add (avg) per window element per output: out_numel · prod(kernel)."""
    return Cost(c.out_numel * _window(c))


@register(*_ops("max_pool2d_with_indices_backward", "max_pool3d_with_indices_backward",
                "adaptive_max_pool2d_backward", "adaptive_max_pool3d_backward"), op_class="pool")
def _max_pool_bwd(c: OpCall) -> Cost:
    """Scatter-add of each output gradient to its argmax: 1 FLOP per grad_output element."""
    return Cost(c.args["grad_output"].numel)


@register(*_ops("avg_pool2d_backward", "avg_pool3d_backward"), op_class="pool")
def _avg_pool_bwd(c: OpCall) -> Cost:
    """Each output gradient spread over its window: grad_output numel · prod(kernel)."""
    return Cost(c.args["grad_output"].numel * _window(c))


@register(*_ops("_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_avg_pool1d", "adaptive_max_pool2d",
                "adaptive_max_pool3d"), op_class="pool")
def _adaptive_pool(c: OpCall) -> Cost:
    """Every input element is added (avg) or compared (max) once: 1 FLOP per input element."""
    return Cost(_first_tensor(c).numel)


@register(*_ops("_adaptive_avg_pool2d_backward", "_adaptive_avg_pool3d_backward"), op_class="pool")
def _adaptive_pool_bwd(c: OpCall) -> Cost:
    """Each grad_input element receives its share of one output gradient: 1 FLOP per grad_input element."""
    return Cost(c.out_numel)


# ----------------------------------------------------------------------------- embedding, losses
@register(*_ops("embedding"), op_class="embedding")
def _embedding(c: OpCall) -> Cost:
    """A gather: 0 FLOPs; reads the indices and only the rows it gathers (output-sized), not the table."""
    idx = c.args["indices"]
    return Cost(0, 0, bytes_read=idx.numel * idx.itemsize + c.out().numel * c.out().itemsize)


@register(*_ops("embedding_dense_backward"), op_class="embedding")
def _embedding_bwd(c: OpCall) -> Cost:
    """Scatter-add of grad_output rows into the weight gradient: 1 FLOP per grad_output element."""
    return Cost(c.args["grad_output"].numel)


@register(*_ops("nll_loss_forward", "nll_loss2d_forward", "nll_loss_backward", "nll_loss2d_backward"), op_class="loss")
def _nll(c: OpCall) -> Cost:
    """Gather the target's log-probability and sum: 1 FLOP per target element."""
    return Cost(c.args["target"].numel)


# ----------------------------------------------------------------------------- attention
def causal_pairs(s_q: int, s_k: int) -> int:
    """(query, key) pairs left by a causal mask aligned top-left (PyTorch's ``is_causal``:
    ``tril(ones(L, S))``): sum_{i<L} min(i+1, S); = S(S+1)/2 when L = S."""
    full_rows = min(s_q, s_k)  # rows 0..min-1 keep i+1 keys
    return full_rows * (full_rows + 1) // 2 + max(0, s_q - s_k) * s_k


def _sdpa_shapes(c: OpCall) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    return c.args["query"].shape, c.args["key"].shape, c.args["value"].shape


def _causal_ratio(c: OpCall, q: Sequence[int], k: Sequence[int]) -> float:
    if not c.args.get("is_causal", False):
        return 1.0
    s_q, s_k = q[-2], k[-2]
    return causal_pairs(s_q, s_k) / (s_q * s_k)


def _attention_cost(q: Sequence[int], k: Sequence[int], v: Sequence[int], ratio: float, backward: bool) -> Cost:
    """Useful work of one attention call, x ``ratio`` (the causal share of score pairs).

    With BH = prod(q.shape[:-2]) query heads (GQA: K/V heads are broadcast):
        forward  MACs = BH·S_q·S_k·(D + D_v)        (Q·Kᵀ and P·V), softmax 5 FLOPs per score;
        backward MACs = BH·S_q·S_k·(2·D + 2·D_v)    (grad_V = Pᵀ·dO, dP = dO·Vᵀ, dQ = dS·K, dK = dSᵀ·Q:
                                                     torch.utils.flop_counter's 4-matmul count),
                  softmax backward 4 FLOPs per score.
    """
    bh, s_q, d = math.prod(q[:-2]), q[-2], q[-1]
    s_k, d_v = k[-2], v[-1]
    scores = bh * s_q * s_k
    if backward:
        macs, softmax = scores * (2 * d + 2 * d_v), 4 * scores
    else:
        macs, softmax = scores * (d + d_v), 5 * scores
    macs = int(round(macs * ratio))
    return Cost(2 * macs + int(round(softmax * ratio)), macs)


_SDPA_KERNELS = ("_scaled_dot_product_flash_attention", "_scaled_dot_product_flash_attention_for_cpu",
                 "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                 "_scaled_dot_product_fused_attention_overrideable")


def _sdpa_formula(backward: bool) -> Formula:
    def formula(c: OpCall) -> Cost:
        q, k, v = _sdpa_shapes(c)
        return _attention_cost(q, k, v, _causal_ratio(c, q, k), backward=backward)
    formula.__doc__ = f"SDPA {'backward' if backward else 'forward'}: see :func:`_attention_cost`."
    return formula


register(*_ops(*_SDPA_KERNELS), op_class="attention")(_sdpa_formula(backward=False))
register(*_ops(*(k + "_backward" for k in _SDPA_KERNELS)), op_class="attention")(_sdpa_formula(backward=True))


def _mha_macs(lq: int, lk: int, b: int, e: int) -> int:
    """In/out projections (3 on q/k/v + 1 out: B·(L_q + 2·L_k + L_q)·E²) + attention (2·B·L_q·L_k·E)."""
    return b * (2 * lq + 2 * lk) * e * e + 2 * b * lq * lk * e


@register(*_ops("_native_multi_head_attention"), op_class="attention")
def _native_mha(c: OpCall) -> Cost:
    """Fused MHA fast path (eval + no_grad): see :func:`_mha_macs`; softmax 5 FLOPs per score."""
    q, k = c.args["query"].shape, c.args["key"].shape
    b, lq, e = q if len(q) == 3 else (1, *q)
    lk = k[-2]
    macs = _mha_macs(lq, lk, b, e)
    return Cost(2 * macs + 5 * b * int(c.args["num_head"]) * lq * lk, macs)


@register(*_ops("_transformer_encoder_layer_fwd"), op_class="attention")
def _encoder_layer(c: OpCall) -> Cost:
    """Fused TransformerEncoderLayer (eval + no_grad): MHA + FFN (2·B·L·E·F MACs) + 2 layer norms
    (8 FLOPs/element) + activation (ReLU 1 / GELU 5 per B·L·F) + 2 residual adds."""
    src = c.args["src"].shape
    b, seq, e = src if len(src) == 3 else (1, *src)
    f = c.args["ffn_weight_1"].shape[0]
    macs = _mha_macs(seq, seq, b, e) + 2 * b * seq * e * f
    act = 5 if c.args["use_gelu"] else 1
    extra = 5 * b * int(c.args["num_heads"]) * seq * seq + 2 * 8 * b * seq * e + act * b * seq * f + 2 * b * seq * e
    return Cost(2 * macs + extra, macs)


# ----------------------------------------------------------------------------- recurrent
def rnn_gates(mode: int) -> int:
    """cuDNN/oneDNN RNN modes: 0 RNN_RELU, 1 RNN_TANH, 2 LSTM, 3 GRU -> number of gates."""
    return {0: 1, 1: 1, 2: 4, 3: 3}[int(mode)]


def _rnn_elementwise_per_step(mode: int, h: int) -> int:
    """Elementwise FLOPs per time step, batch row and direction.

    LSTM: 2 bias adds on 4H gates (8H) + 3 sigmoids (4 each) and 1 tanh on the gates (13H)
    + c = f·c + i·g (3H) + h = o·tanh(c) (2H) = 26H.  GRU: bias adds 6H + 2 sigmoids (8H) +
    tanh (H) + r·(W_hn h + b) (H) + add (H) + h = (1-z)·n + z·h (3H) = 20H.  RNN: 2H + 1H."""
    return {0: 3 * h, 1: 3 * h, 2: 26 * h, 3: 20 * h}[int(mode)]


def _rnn_layer_cost(t_b: int, w_ih: Sequence[int], w_hh: Sequence[int], mode: int, hidden: int) -> Cost:
    macs = t_b * (math.prod(w_ih) + math.prod(w_hh))
    return Cost(2 * macs + t_b * _rnn_elementwise_per_step(mode, hidden), macs)


def _seq_batch(x: Sequence[int]) -> int:
    """T·B of an RNN input (seq, batch, feat) / (batch, seq, feat) / unbatched (seq, feat)."""
    return math.prod(x[:-1])


@register(*_ops("mkldnn_rnn_layer"), op_class="rnn")
def _mkldnn_rnn_layer(c: OpCall) -> Cost:
    """One layer, one direction of a oneDNN RNN (CPU LSTM/GRU): see :func:`_rnn_layer_cost`."""
    x = c.args["input"].shape
    return _rnn_layer_cost(_seq_batch(x), c.args["weight0"].shape,
                           c.args["weight1"].shape, c.args["mode"], int(c.args["hidden_size"]))


@register(*_ops("mkldnn_rnn_layer_backward"), op_class="rnn")
def _mkldnn_rnn_layer_bwd(c: OpCall) -> Cost:
    """Backward = 2 x forward: grads w.r.t. input/hidden and w.r.t. weights, each a forward's MACs."""
    x = c.args["input"].shape
    f = _rnn_layer_cost(_seq_batch(x), c.args["weight1"].shape,
                        c.args["weight2"].shape, c.args["mode"], int(c.args["hidden_size"]))
    return Cost(2 * f.flops, 2 * f.macs)


def _cudnn_weights(c: OpCall) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    """(w_ih, w_hh) shape pairs of every layer x direction from cuDNN's flat weight list."""
    ws = [w for w in c.args["weight"] if isinstance(w, T)]
    stride = int(c.args["weight_stride0"])
    return [(ws[i].shape, ws[i + 1].shape) for i in range(0, len(ws), stride)]


@register(*_ops("_cudnn_rnn"), op_class="rnn")
def _cudnn_rnn(c: OpCall) -> Cost:
    """cuDNN RNN over all layers and directions: sum of :func:`_rnn_layer_cost` per (layer, dir)."""
    t_b = _seq_batch(c.args["input"].shape)
    total = Cost(0)
    for w_ih, w_hh in _cudnn_weights(c):
        lc = _rnn_layer_cost(t_b, w_ih, w_hh, c.args["mode"], int(c.args["hidden_size"]))
        total = Cost(total.flops + lc.flops, total.macs + lc.macs)
    return total


@register(*_ops("_cudnn_rnn_backward"), op_class="rnn")
def _cudnn_rnn_bwd(c: OpCall) -> Cost:
    """2 x forward when weight gradients are requested (output_mask[3]), else 1 x."""
    f = _cudnn_rnn(c)
    k = 2 if c.args["output_mask"][3] else 1
    return Cost(k * f.flops, k * f.macs)


# The fused cells run only the gates' elementwise work (their matmuls are separate ``mm`` ops),
# so they are classed "elementwise" and take the CUDA-core roof.
@register(*_ops("_thnn_fused_lstm_cell"), op_class="elementwise")
def _fused_lstm_cell(c: OpCall) -> Cost:
    """Gate nonlinearity and cell update of one LSTM step (the matmuls are separate mm ops): 26H/row."""
    b, four_h = c.args["input_gates"].shape
    return Cost(b * _rnn_elementwise_per_step(2, four_h // 4))


@register(*_ops("_thnn_fused_gru_cell"), op_class="elementwise")
def _fused_gru_cell(c: OpCall) -> Cost:
    b, three_h = c.args["input_gates"].shape
    return Cost(b * _rnn_elementwise_per_step(3, three_h // 3))


@register(*_ops("_thnn_fused_lstm_cell_backward_impl", "_thnn_fused_lstm_cell_backward"), op_class="elementwise")
def _fused_lstm_cell_bwd(c: OpCall) -> Cost:
    """Backward of the fused LSTM cell: ~1x its forward elementwise work (26H per row)."""
    first = _first_tensor(c)
    return Cost(first.shape[0] * _rnn_elementwise_per_step(2, first.shape[-1]))


#: FLOPs per hidden unit and batch row of the fused GRU cell's backward kernel (CUDA
#: ``gru_cell_backward``), with r, z (``ig``), n the saved gates, h the previous hidden state,
#: hn = W_hn·h + b_hn, g the incoming gradient, every operation as written in the kernel:
#:     dz  = g·(h - n)·(1 - z)·z      2 subtractions + 3 multiplies = 5
#:     dh  = g·z                                          1 multiply  = 1
#:     dn  = g·(1 - z)·(1 - n·n)      2 subtractions + 3 multiplies = 5
#:     dhn = dn·r                                         1 multiply  = 1
#:     dr  = dn·hn·(1 - r)·r          1 subtraction  + 3 multiplies = 4
#: = 16. With biases the op also sums both gate gradients (B x 3H each) over the batch:
#: 2·3H = 6 FLOPs per hidden unit and row, so 22 with bias (LSTM's 26 was used before).
GRU_CELL_BACKWARD_FLOPS_PER_H = 16


@register(*_ops("_thnn_fused_gru_cell_backward"), op_class="elementwise")
def _fused_gru_cell_bwd(c: OpCall) -> Cost:
    """Backward of the fused GRU cell: B·H·16 gate FLOPs (:data:`GRU_CELL_BACKWARD_FLOPS_PER_H`),
    plus 2·B·3H for the two bias-gradient sums when ``has_bias``."""
    b, h = c.args["grad_hy"].shape
    bias = 2 * 3 * h if c.args.get("has_bias", False) else 0
    return Cost(b * (GRU_CELL_BACKWARD_FLOPS_PER_H * h + bias))
