"""The op taxonomy: one registry declares every op's class; views come from the op schema."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hwprof
from hwprof.counting import formulas as F
from hwprof.counting.counter import layer_op_classes, layer_variant
from hwprof.counting.formulas import OpCall, T

aten = torch.ops.aten

# The hand-written lists the join and the memory replay used beside the registry (hwprof/profiler.py
# CONV_OPS / MATMUL_OPS, hwprof/memory/simulate.py CUBLAS_OPS), as they stood when the registry took
# over: every op in them must get a class that maps to the same roof.
PROFILER_CONV_OPS = {"aten.convolution", "aten._convolution", "aten.cudnn_convolution", "aten.convolution_backward",
                     "aten.mkldnn_convolution", "aten._conv_depthwise2d", "aten.cudnn_convolution_transpose"}
PROFILER_MATMUL_OPS = {"aten.mm", "aten.addmm", "aten.bmm", "aten.baddbmm", "aten._scaled_mm", "aten.mv",
                       "aten.mkldnn_rnn_layer", "aten.mkldnn_rnn_layer_backward", "aten._cudnn_rnn",
                       "aten._cudnn_rnn_backward", "aten._native_multi_head_attention",
                       "aten._transformer_encoder_layer_fwd",
                       *(f"aten._scaled_dot_product_{k}{b}" for k in ("flash_attention", "flash_attention_for_cpu",
                                                                      "efficient_attention", "cudnn_attention")
                         for b in ("", "_backward"))}
SIMULATE_CUBLAS_OPS = {"mm", "addmm", "bmm", "baddbmm", "addbmm", "addmv", "mv", "dot", "vdot",
                       "_addmm_activation", "_scaled_mm"}

# the roofline's rule per class: conv -> cuDNN's TF32 switch, matmul/attention/rnn -> matmul's, rest -> fp32
ROOF_RULE = {**{k: "conv" for k in F.CONV_CLASSES}, **{k: "matmul" for k in F.MATMUL_CLASSES}}


def test_classes_include_the_required_ones() -> None:
    assert set(F.OP_CLASSES) >= {"matmul", "conv", "attention", "rnn", "norm", "pool", "elementwise", "reduction",
                                 "embedding", "loss", "data_movement", "view", "collective", "other"}
    with pytest.raises(ValueError, match="unknown op class"):
        F.register(aten.lerp, op_class="gemm")  # type: ignore[arg-type]


@pytest.mark.parametrize("listed, rule", [(PROFILER_CONV_OPS, "conv"), (PROFILER_MATMUL_OPS, "matmul")])
def test_every_op_of_the_old_lists_maps_to_the_same_roof(listed: set[str], rule: str) -> None:
    for op in listed:
        if F._packet(op) is None:
            continue  # absent from this torch build
        assert ROOF_RULE.get(F.op_class(op), "other") == rule, op


def test_the_registry_knows_more_conv_ops_than_the_old_list() -> None:
    registered_conv = {str(p) for p, cls in F._CLASS.items() if cls == "conv"}
    assert registered_conv > {op for op in PROFILER_CONV_OPS if F._packet(op) is not None}
    assert F.op_class("aten.slow_conv_transpose2d") == "conv" and F.op_class(aten.conv_depthwise3d) == "conv"


def test_cublas_workspace_ops_are_a_registry_query() -> None:
    cublas = SIMULATE_CUBLAS_OPS
    assert all(F.uses_cublas_workspace(op) for op in cublas)
    # the query takes every spelling: bare name, "aten.x", "aten::x", packet, overload
    assert F.uses_cublas_workspace("aten::mm") and F.uses_cublas_workspace(aten.mm.default)
    assert not F.uses_cublas_workspace("convolution") and not F.uses_cublas_workspace("_int_mm")
    assert {str(p).removeprefix("aten.") for p in F._CUBLAS_WORKSPACE} == cublas


def test_queries_take_names_packets_and_overloads() -> None:
    assert F.op_class("aten.convolution") == F.op_class(aten.convolution) == F.op_class(aten.convolution.default)
    assert F.op_class("aten::native_batch_norm") == "norm" and F.op_class("mm") == "matmul"
    assert F.op_class("aten._scaled_dot_product_flash_attention_for_cpu") == "attention"
    assert F.op_class("aten.mkldnn_rnn_layer") == "rnn" and F.op_class("aten.embedding") == "embedding"
    assert F.op_class("aten.nll_loss_forward") == "loss" and F.op_class("aten.mse_loss") == "loss"
    assert F.op_class("aten.sum") == "reduction" and F.op_class("aten.max_pool2d") == "pool"
    assert F.op_class("aten.cat") == "data_movement" and F.op_class("aten.relu") == "elementwise"
    assert F.op_class("_c10d_functional.all_reduce") == "collective"
    assert F.op_class("aten._fft_r2c") == "other" and F.op_class("aten.no_such_op") == "other"
    assert F.op_class("no_such_namespace.op") == "other"


# ----------------------------------------------------------------------------- views from the schema
# the views and metadata ops hwprof listed by hand before the schema rule (none may be lost)
OLD_VIEW_OPS = [
    "view", "_unsafe_view", "reshape", "_reshape_alias", "t", "transpose", "permute", "expand", "expand_as",
    "squeeze", "unsqueeze", "detach", "alias", "slice", "select", "as_strided", "split", "split_with_sizes",
    "chunk", "unbind", "narrow", "diagonal", "unfold", "view_as", "view_as_real", "view_as_complex",
    "lift_fresh", "_conj", "conj", "resolve_conj", "resolve_neg", "_neg_view", "numpy_T", "mT", "mH",
    "movedim", "swapaxes", "transpose_", "t_", "squeeze_", "unsqueeze_", "detach_", "set_",
    "sym_size", "sym_stride", "sym_numel", "sym_storage_offset", "size", "stride", "dim", "numel",
    "is_contiguous", "is_same_size", "_local_scalar_dense", "item", "is_nonzero",
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "empty_permuted",
    "_has_compatible_shallow_copy_type", "record_stream", "_nested_tensor_from_mask_left_aligned",
]


def test_no_view_of_the_old_list_is_lost() -> None:
    present = [n for n in OLD_VIEW_OPS if hasattr(aten, n)]
    assert [n for n in present if not F.is_view(getattr(aten, n))] == []
    assert F.is_view(torch.ops.prim.device) and F.lookup(aten.view) is None


def test_views_come_from_the_schema() -> None:
    # in-place view (tag inplace_view, alias annotation `Tensor(a!)`): convnext's and swin's avgpool
    assert F.schema_is_view(aten.as_strided_.default) and F.is_view("aten.as_strided_")
    # unsafe_* drop the annotation; their safe counterparts carry it (split: `Tensor(a -> *)[]`)
    assert aten.unsafe_split.Tensor._schema.returns[0].alias_info is None
    assert F.is_view(aten.unsafe_split.Tensor) and F.is_view("aten::unsafe_split")
    assert F.is_view("aten.unsafe_chunk") and F.is_view(aten._unsafe_view.default)
    # not views: in-place arithmetic writes data, out= variants copy, resize_ allocates
    assert not F.is_view(aten.add_.Tensor) and not F.is_view(aten.copy_)
    assert not F.is_view(aten.unsafe_split.Tensor_out) and not F.is_view("aten.resize_")
    # "may alias" composites that copy are data movement (the registry wins over the schema)
    assert F.op_class("aten.contiguous") == F.op_class("aten.to") == "data_movement"


def test_as_strided_inplace_is_not_uncounted() -> None:
    """AdaptiveAvgPool2d(1) on a channels-last tensor (swin permutes before its avgpool) ends in
    ``out.as_strided_(...)``: listed as UNCOUNTED before the schema rule."""

    class PermutedPool(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pool = nn.AdaptiveAvgPool2d(1)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.pool(x.permute(0, 3, 1, 2))

    c = hwprof.count(PermutedPool(), "7x7x16", backward=True)
    assert c.uncounted == {} and "aten.as_strided_" not in set(c.ops["op"])
    # the mean over 7*7*16 = 784 input elements is still counted (1 FLOP each)
    assert c.totals["flops_fwd"] == 784


def test_unsafe_split_of_an_lstm_cell_is_not_uncounted() -> None:
    """The LSTM cell's math path (CPU LSTMCell; LSTM in fp16 without oneDNN) splits its gates
    with ``unsafe_chunk`` -> ``aten.unsafe_split``: listed as UNCOUNTED before."""
    c = hwprof.count(nn.LSTMCell(8, 16), "8", batch=2, backward=True)
    assert c.uncounted == {} and "aten.unsafe_split" not in set(c.ops["op"])
    # the two gate matmuls are counted: B*(C_in + H)*4H = 2*(8 + 16)*64 = 3,072 MACs
    assert c.totals["macs_fwd"] == 3_072


# ----------------------------------------------------------------------------- formulas, one per op kind
def test_transposed_conv_kernels_have_their_own_formula() -> None:
    # ConvTranspose2d(16, 8, 3, stride=2): 1x16x10x10 -> 1x8x21x21; MACs from the input spatial:
    # 1*100*16*8*9 = 115,200 (a direct conv over the output would be 1*441*16*8*9 = 508,032).
    # The op name is not looked at: the formula registered for the kernel decides.
    x, w, out = T((1, 16, 10, 10)), T((16, 8, 3, 3)), T((1, 8, 21, 21))
    call = OpCall("any name", {"self": x, "weight": w}, (out,), (x, w))
    assert F.REGISTRY[aten.slow_conv_transpose2d](call).macs == 115_200


def test_vector_norm_and_adaptive_pool_backward_have_their_own_formula() -> None:
    x = T((4, 8))
    # vector norm: square + add = 2 FLOPs per input element: 2*32 = 64 (a plain reduction: 32)
    assert F.REGISTRY[aten.linalg_vector_norm](OpCall("any name", {"self": x}, (T(()),))).flops == 64
    # adaptive avg-pool backward: 1 FLOP per grad_input element (1x3x8x8 = 192), not per grad_output (1x3x1x1)
    g, inp = T((1, 3, 1, 1)), T((1, 3, 8, 8))
    call = OpCall("any name", {"grad_output": g, "self": inp}, (inp,))
    assert F.REGISTRY[aten._adaptive_avg_pool2d_backward](call).flops == 192


def test_gru_cell_backward_has_its_own_cost() -> None:
    # B = 4 rows, H = 32: gates 16 FLOPs per (row, unit) + bias gradients 2 sums of 3H per row
    # = 4*32*(16 + 6) = 2,816 (LSTM's 26*H gave 4*26*32 = 3,328); without bias 4*32*16 = 2,048
    g, ws = T((4, 32)), T((4, 5 * 32))
    f = F.REGISTRY[aten._thnn_fused_gru_cell_backward]
    assert f(OpCall("aten._thnn_fused_gru_cell_backward", {"grad_hy": g, "workspace": ws, "has_bias": True})).flops \
        == 2_816
    assert f(OpCall("aten._thnn_fused_gru_cell_backward", {"grad_hy": g, "workspace": ws, "has_bias": False})).flops \
        == 2_048
    # the LSTM cell's backward keeps its 26*H per row: 4*26*32 = 3,328
    lstm = F.REGISTRY[aten._thnn_fused_lstm_cell_backward_impl]
    assert lstm(OpCall("x", {"grad_hy": g, "grad_cy": g, "cx": g, "cy": g, "workspace": T((4, 128)),
                             "has_bias": True})).flops == 3_328


def test_every_elementwise_entry_is_an_aten_op() -> None:
    """No dead entries (a placeholder name matched no op and was silently skipped)."""
    assert [name for name in F.ELEMENTWISE if not hasattr(aten, name)] == []


def test_new_cublas_matmuls_have_formulas() -> None:
    # addbmm: 3 batches of (4x5)·(5x6) summed: 3*4*5*6 = 360 MACs, 720 FLOPs
    call = OpCall("aten.addbmm", {"self": T((4, 6)), "batch1": T((3, 4, 5)), "batch2": T((3, 5, 6))}, (T((4, 6)),))
    assert F.REGISTRY[aten.addbmm](call) == F.Cost(720, 360)
    # addmm + GELU: 2*4*6*5 = 240 FLOPs of matmul + 5 per output element (24) = 360; ReLU: 240 + 24 = 264
    args = {"self": T((6,)), "mat1": T((4, 5)), "mat2": T((5, 6))}
    f = F.REGISTRY[aten._addmm_activation]
    assert f(OpCall("x", {**args, "use_gelu": True}, (T((4, 6)),))) == F.Cost(360, 120)
    assert f(OpCall("x", {**args, "use_gelu": False}, (T((4, 6)),))) == F.Cost(264, 120)


# ----------------------------------------------------------------------------- the count records the classes
def test_count_records_op_and_layer_classes_and_variants() -> None:
    model = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1, groups=4), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Conv2d(4, 8, 1), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))
    c = hwprof.count(model, "4x8x8", backward=True)
    assert list(c.ops.loc[c.ops["phase"] == "fwd", "op_class"]) == [
        "conv", "norm", "elementwise", "conv", "matmul"]
    lay = c.layers
    assert list(lay.loc[["0", "1", "2", "3", "4", "5"], "op_class"]) == [
        "conv", "norm", "elementwise", "conv", "other", "matmul"]  # Flatten runs only a view
    assert list(lay.loc[["0", "1", "3", "5"], "variant"]) == ["depthwise", "", "pointwise", ""]
    assert lay.loc["", "op_class"] == "other"  # the root runs nothing of its own


def test_layer_variant() -> None:
    assert layer_variant(nn.Conv2d(8, 8, 3, groups=8)) == "depthwise"
    assert layer_variant(nn.Conv2d(8, 16, 3, groups=2)) == "grouped"
    assert layer_variant(nn.Conv2d(8, 16, 1)) == "pointwise"
    assert layer_variant(nn.Conv1d(8, 16, 3)) == "dense"
    assert layer_variant(nn.Linear(3, 3)) == "" and layer_variant(None) == ""


def test_layer_class_prefers_conv_then_matmul_then_flops() -> None:
    import pandas as pd

    ops = pd.DataFrame({"module": ["a", "a", "b", "b", "c"],
                        "op_class": ["elementwise", "conv", "norm", "attention", "norm"],
                        "flops": [1e9, 1.0, 1e9, 10.0, 5.0]})
    # a: conv wins over a heavier elementwise op; b: attention (matmul rank) over a heavier norm
    assert layer_op_classes(ops).to_dict() == {"a": "conv", "b": "attention", "c": "norm"}
