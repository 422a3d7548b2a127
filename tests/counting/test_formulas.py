"""Single formulas on shapes alone (no tensors), each expected value derived beside it."""

from __future__ import annotations

import pytest
import torch

from hwprof.counting import formulas as F
from hwprof.counting.formulas import OpCall, T

aten = torch.ops.aten


def test_registering_an_op_twice_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="duplicate"):
        F.register(aten.mm, op_class="matmul")(lambda c: F.Cost(0))


def test_conv_macs_grouped_strided() -> None:
    # seed 002: Conv2d(3, 6, 3, stride=3) on 1x3x6x6 -> out 1x6x2x2; MACs = 1*2*2 * 6*3*3*3 = 648
    assert F.conv_macs((1, 3, 6, 6), (6, 3, 3, 3), (1, 6, 2, 2), transposed=False) == 648
    # groups=3: weight 6x1x3x3 -> 1*2*2 * 6*1*9 = 216 (= 648 / 3)
    assert F.conv_macs((1, 3, 6, 6), (6, 1, 3, 3), (1, 6, 2, 2), transposed=False) == 216


def test_conv_transposed_counts_from_input_spatial() -> None:
    # ConvTranspose2d(16, 8, 3, stride=2): weight 16x8x3x3; in 1x16x10x10 -> out 1x8x21x21
    # MACs = N * H_in*W_in * C_in * C_out * k*k = 1 * 100 * 16 * 8 * 9 = 115,200
    assert F.conv_macs((1, 16, 10, 10), (16, 8, 3, 3), (1, 8, 21, 21), transposed=True) == 115_200


def test_conv_backward_respects_groups() -> None:
    # depthwise 3x3, 256 ch, 56x56, no bias, input without grad: only grad_weight
    # = fwd MACs = 56*56*256*9 = 7,225,344
    call = OpCall("aten.convolution_backward", {
        "grad_output": T((1, 256, 56, 56)), "input": T((1, 256, 56, 56)), "weight": T((256, 1, 3, 3)),
        "transposed": False, "output_mask": [False, True, False]})
    cost = F.REGISTRY[aten.convolution_backward](call)
    assert cost.macs == 7_225_344
    assert cost.flops == 2 * 7_225_344


def test_conv_backward_bias_gradient_is_a_reduction() -> None:
    # grad_bias sums grad_output over N, H, W: 2*8*5*5 = 400 adds; grad_input + grad_weight 2 x fwd MACs
    call = OpCall("aten.convolution_backward", {
        "grad_output": T((2, 8, 5, 5)), "input": T((2, 4, 7, 7)), "weight": T((8, 4, 3, 3)),
        "transposed": False, "output_mask": [True, True, True]})
    fwd_macs = 2 * 5 * 5 * 8 * 4 * 9  # = 14,400
    cost = F.REGISTRY[aten.convolution_backward](call)
    assert cost.macs == 2 * fwd_macs
    assert cost.flops == 4 * fwd_macs + 400


def test_causal_pairs() -> None:
    # square: S(S+1)/2 -> 64*65/2 = 2080
    assert F.causal_pairs(64, 64) == 2080
    # L=3 queries, S=5 keys, top-left aligned: rows keep 1, 2, 3 keys = 6
    assert F.causal_pairs(3, 5) == 6
    # L=5, S=3: rows keep 1, 2, 3, 3, 3 = 12
    assert F.causal_pairs(5, 3) == 12


def test_sdpa_causal_counts_useful_pairs() -> None:
    q = T((2, 4, 64, 16))
    full = OpCall("aten._scaled_dot_product_flash_attention_for_cpu",
                  {"query": q, "key": q, "value": q, "is_causal": False})
    causal = OpCall(full.op, {**full.args, "is_causal": True})
    f = F.REGISTRY[aten._scaled_dot_product_flash_attention_for_cpu]
    # full: B*H*S*S*(D+Dv) = 2*4*64*64*32 = 1,048,576 MACs
    assert f(full).macs == 1_048_576
    # causal: 2*4*2080*32 = 532,480 MACs (2080 of 4096 pairs)
    assert f(causal).macs == 532_480
    # FLOPs = 2*MACs + softmax 5 per useful score: 2*532,480 + 5*2*4*2080 = 1,148,160
    assert f(causal).flops == 1_148_160


def test_elementwise_sub_counts_like_add() -> None:
    a = T((3, 5))
    add = F.REGISTRY[aten.add](OpCall("aten.add", {"self": a, "other": a}, (a,)))
    sub = F.REGISTRY[aten.sub](OpCall("aten.sub", {"self": a, "other": a}, (a,)))
    assert add == sub == F.Cost(15)


def test_batch_norm_train_and_eval() -> None:
    x = T((2, 3, 4, 4))  # 96 elements
    train = OpCall("aten.native_batch_norm", {"input": x, "weight": T((3,)), "training": True}, (x,))
    # mean 1 + var 3 + normalise 2 + affine 2 = 8 per element -> 768
    assert F.REGISTRY[aten.native_batch_norm](train).flops == 768
    ev = OpCall("aten._native_batch_norm_legit_no_training", {"input": x, "weight": T((3,))}, (x,))
    # normalise 2 + affine 2 = 4 per element -> 384
    assert F.REGISTRY[aten._native_batch_norm_legit_no_training](ev).flops == 384


def test_embedding_reads_only_gathered_rows() -> None:
    idx, out = T((1, 8), torch.long), T((1, 8, 4096))
    call = OpCall("aten.embedding", {"weight": T((32000, 4096)), "indices": idx}, (out,))
    cost = F.REGISTRY[aten.embedding](call)
    # indices 8*8 B + rows 8*4096*4 B = 64 + 131,072 (not the 524 MB table)
    assert cost == F.Cost(0, 0, bytes_read=64 + 131_072)


def test_lstm_layer_macs_vs_seed_004() -> None:
    # one layer, T*B = 15 rows, C_in 16, H 32: MACs = 15 * (4H*C_in + 4H*H) = 15 * (2048 + 4096) = 92,160
    call = OpCall("aten.mkldnn_rnn_layer", {"input": T((5, 3, 16)), "weight0": T((128, 16)),
                                            "weight1": T((128, 32)), "mode": 2, "hidden_size": 32,
                                            "batch_first": False})
    cost = F.REGISTRY[aten.mkldnn_rnn_layer](call)
    assert cost.macs == 92_160
    # seed 004 per step: C_in*H*4 + H*H*4 + H*H = 2048 + 4096 + 1024 = 7168; hwprof = seed - H*H per step
    assert cost.macs == 15 * (7168 - 32 * 32)
    # FLOPs = 2*MACs + 26*H elementwise per row = 184,320 + 15*832 = 196,800
    assert cost.flops == 196_800


@pytest.mark.parametrize("mode,gates,elementwise", [
    (0, 1, 3), (1, 1, 3),   # RNN (ReLU or tanh): 1 gate; 2 bias adds + the activation = 3H per row
    (3, 3, 20),             # GRU (r, z, n): bias adds 6H, 2 sigmoids 8H, tanh H, r.(W h + b) H, add H, mix 3H
])
def test_rnn_and_gru_layer_costs(mode: int, gates: int, elementwise: int) -> None:
    # T*B = 15 rows, C_in 16, H 32: MACs = 15 * (G*H*C_in + G*H*H); FLOPs = 2 MACs + 15 * elementwise * H
    h = 32
    call = OpCall("aten.mkldnn_rnn_layer", {"input": T((5, 3, 16)), "weight0": T((gates * h, 16)),
                                            "weight1": T((gates * h, h)), "mode": mode, "hidden_size": h,
                                            "batch_first": False})
    cost = F.REGISTRY[aten.mkldnn_rnn_layer](call)
    macs = 15 * (gates * h * 16 + gates * h * h)     # RNN 23,040; GRU 69,120
    assert cost.macs == macs and cost.flops == 2 * macs + 15 * elementwise * h
    assert F.rnn_gates(mode) == gates


def test_rms_norm_and_avg_pool_backward() -> None:
    x = T((2, 8, 64))                                  # 1,024 elements
    rms = F.REGISTRY[aten._fused_rms_norm]
    # square + add 2, normalise 1 per element; the weight's multiply 1 more
    assert rms(OpCall("aten._fused_rms_norm", {"input": x, "normalized_shape": [64], "weight": T((64,)),
                                               "eps": 1e-6})).flops == 4 * 1024
    assert rms(OpCall("aten._fused_rms_norm", {"input": x, "normalized_shape": [64], "weight": None,
                                               "eps": 1e-6})).flops == 3 * 1024
    # each of the 1x4x4x4 = 64 output gradients spread over its 2x2 window: 256 FLOPs
    bwd = OpCall("aten.avg_pool2d_backward", {"grad_output": T((1, 4, 4, 4)), "self": T((1, 4, 8, 8)),
                                              "kernel_size": [2, 2], "stride": [2, 2]})
    assert F.REGISTRY[aten.avg_pool2d_backward](bwd).flops == 256


def test_views_are_free_and_not_formulas() -> None:
    assert F.is_view(aten.view) and F.is_view(aten.t) and F.is_view(aten.expand)
    assert F.lookup(aten.view) is None


def test_foreach_ops_count_every_tensor_of_their_list() -> None:
    """A multi-tensor optimizer (foreach=True, the CUDA default) and clip_grad_norm_, counted on real tensors:
    params of 10 and 6 elements (16 in all)."""
    from hwprof.counting.counter import count_step
    from hwprof.stepping.unit import prepare_step

    w = torch.nn.Parameter(torch.ones(10))
    b = torch.nn.Parameter(torch.ones(6))
    opt = torch.optim.SGD([w, b], lr=0.1, momentum=0.9, foreach=True)

    def step() -> None:
        opt.zero_grad()
        (w.sum() + b.sum()).backward()
        torch.nn.utils.clip_grad_norm_([w, b], 1.0)
        opt.step()

    s = prepare_step(step)          # the first run creates the momentum buffers
    c = count_step(s)
    s.restore()
    ops = c.ops.set_index("op")
    norm = ops.loc["aten._foreach_norm"]
    assert norm["flops"] == 2 * 16                                   # square + add per element of both grads
    # SGD with momentum: buf = 0.9 buf + g (_foreach_mul_ + _foreach_add_), p -= lr buf (_foreach_add_)
    adds = c.ops[(c.ops["op"] == "aten._foreach_add_") & (c.ops["phase"] == "opt")]
    assert list(adds["flops"]) == [16, 16]
    assert list(adds["bytes_written"]) == [16 * 4, 16 * 4]           # in place: the first list is written
    assert "aten._foreach_add_" not in c.uncounted and "aten._foreach_norm" not in c.uncounted


def test_fused_encoder_layer_flops_equal_the_unfused_ops() -> None:
    """nn.TransformerEncoderLayer(64, 4, 128) on 2x10x64 in eval: without grad it runs one fused
    ``_transformer_encoder_layer_fwd``, with grad the ops one by one (dropout off). The fused formula:
    2 x MACs (680,960: test_peers) + softmax 5 x 2*4*10*10 = 4,000 + two layer norms 8 x 2 x 1,280 =
    20,480 + ReLU 2*10*128 = 2,560 + two residual adds 2 x 1,280 = 2,560: 1,391,520. The unfused path
    counts the same but for the in-projection's bias, added apart from its mm: 3 x 64 x 20 = 3,840."""
    import hwprof

    layer = torch.nn.TransformerEncoderLayer(64, 4, 128, batch_first=True).eval()
    x = torch.randn(2, 10, 64)
    fused = hwprof.count(layer, x, backward=False)
    assert set(fused.ops["op"]) == {"aten._transformer_encoder_layer_fwd"}
    assert fused.totals["flops_fwd"] == 2 * 680_960 + 4_000 + 20_480 + 2_560 + 2_560 == 1_391_520
    unfused = hwprof.count(layer, x, backward=True)
    assert "aten._transformer_encoder_layer_fwd" not in set(unfused.ops["op"])
    assert unfused.totals["flops_fwd"] == 1_391_520 + 3_840
