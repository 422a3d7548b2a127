"""Cases where peer tools (thop, ptflops, fvcore, torch's FlopCounterMode) are known to fail."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import hwprof
import hwprof.errors
from hwprof import zoo


class Fn(nn.Module):
    """Wrap a function; ``sub`` (if given) is registered and passed as the first argument,
    so that it belongs to the model (hwprof counts a fake copy of registered modules)."""

    def __init__(self, fn, sub: nn.Module | None = None) -> None:  # type: ignore[no-untyped-def]
        super().__init__()
        self.fn = fn
        self.sub = sub

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.fn(self.sub, *xs) if self.sub is not None else self.fn(*xs)


def _macs(fn, *xs: torch.Tensor, backward: bool = False) -> float:  # type: ignore[no-untyped-def]
    c = hwprof.count(Fn(fn), xs, backward=backward)
    return c.totals["macs_fwd"]


@pytest.mark.parametrize("fn", [
    torch.matmul, lambda a, b: a @ b, torch.bmm, lambda a, b: torch.einsum("bij,bjk->bik", a, b),
], ids=["matmul", "at", "bmm", "einsum"])
def test_functional_matmuls_are_counted(fn) -> None:  # type: ignore[no-untyped-def]
    a, b = torch.randn(2, 8, 16), torch.randn(2, 16, 4)
    assert _macs(fn, a, b) == 2 * 8 * 16 * 4  # B*M*K*N = 1024


def test_sdpa_on_cpu_grows_with_sequence_squared_and_takes_kwargs() -> None:
    def attn(q: torch.Tensor) -> torch.Tensor:
        return F.scaled_dot_product_attention(query=q, key=q, value=q)

    m64 = _macs(attn, torch.randn(1, 2, 64, 16))
    m128 = _macs(attn, torch.randn(1, 2, 128, 16))
    assert m64 == 1 * 2 * 64 * 64 * (16 + 16)  # B*H*S*S*(D+Dv) = 262,144
    assert m128 == 4 * m64
    # FlopCounterMode does not know the CPU kernel (_scaled_dot_product_flash_attention_for_cpu):
    fcm = FlopCounterMode(display=False)
    with fcm:
        attn(torch.randn(1, 2, 64, 16))
    assert fcm.get_total_flops() == 0


def test_transformer_encoder_layer_fast_path_in_eval_no_grad() -> None:
    layer = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True).eval()
    x = torch.randn(2, 10, 64)
    fused = hwprof.count(layer, x, backward=False)
    assert set(fused.ops["op"]) == {"aten._transformer_encoder_layer_fwd"}  # the path that runs
    # MHA: B*(2L + 2L)*E² + 2*B*L*L*E = 2*40*4096 + 2*2*100*64 = 353,280; FFN 2*B*L*E*F = 327,680
    assert fused.totals["macs_fwd"] == 353_280 + 327_680
    # the unfused training path does the same matmul work
    unfused = hwprof.count(layer, x, backward=False, mode="train")
    assert "aten._transformer_encoder_layer_fwd" not in set(unfused.ops["op"])
    assert unfused.totals["macs_fwd"] == fused.totals["macs_fwd"]
    fcm = FlopCounterMode(display=False)
    with fcm, torch.no_grad():
        layer(x)
    assert fcm.get_total_flops() == 0  # the peer misses the fused kernel entirely


def test_multihead_attention_fast_path_counts() -> None:
    mha = nn.MultiheadAttention(32, 4, batch_first=True).eval()
    x = torch.randn(2, 6, 32)
    c = hwprof.count(Fn(lambda m, t: m(t, t, t, need_weights=False)[0], mha), x, backward=False)
    assert "aten._native_multi_head_attention" in set(c.ops["op"])
    # B*(2L+2L)*E² + 2*B*L*L*E = 2*24*1024 + 2*2*36*32 = 49,152 + 4,608
    assert c.totals["macs_fwd"] == 53_760


def test_functional_calls_inside_custom_modules() -> None:
    class Custom(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = nn.Parameter(torch.randn(8, 4, 3, 3))
            self.fc = nn.Parameter(torch.randn(10, 8 * 6 * 6))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return F.linear(F.conv2d(x, self.w).flatten(1), self.fc)

    c = hwprof.count(Custom(), "4x8x8", backward=False)
    # conv: 6*6*8*4*9 = 10,368; linear: 288*10 = 2,880
    assert c.totals["macs_fwd"] == 10_368 + 2_880


def test_sub_counts_like_add() -> None:
    a, b = torch.randn(4, 5), torch.randn(4, 5)
    assert hwprof.count(Fn(torch.sub), (a, b)).totals["flops_fwd"] == hwprof.count(Fn(torch.add), (a, b)).totals["flops_fwd"] == 20


def test_strided_conv_transpose_forward_and_backward() -> None:
    m = nn.ConvTranspose2d(16, 8, 3, stride=2, bias=False)
    x = torch.randn(1, 16, 10, 10, requires_grad=True)
    c = hwprof.count(m, x, backward=True)
    # from the INPUT spatial size: 10*10 * 16 * 8 * 9 = 115,200 (not from the 21x21 output)
    assert c.totals["macs_fwd"] == 115_200
    assert c.totals["macs_bwd"] == 2 * 115_200  # grad_input + grad_weight


def test_grouped_dilated_conv_output_size_formula() -> None:
    m = nn.Conv2d(32, 64, 3, stride=2, padding=2, dilation=2, groups=4, bias=False)
    # H_out = floor((17 + 2*2 - 2*(3-1) - 1) / 2) + 1 = 9; MACs = N*C_out*H*W*(C_in/g)*k² = 2*64*81*8*9
    c = hwprof.count(m, "32x17x17", batch=2, backward=False)
    assert c.layers.loc["", "output_shapes"] == "2x64x9x9"
    assert c.totals["macs_fwd"] == 746_496


def test_linear_1024_batch_1() -> None:
    assert hwprof.count(nn.Linear(1024, 1024), "1024", backward=False).totals["macs_fwd"] == 1_048_576


def test_module_called_twice_counts_flops_twice_params_once() -> None:
    twice = Fn(lambda lin, x: lin(lin(x)), nn.Linear(16, 16))
    c = hwprof.count(twice, "16", backward=False)
    assert c.totals["macs_fwd"] == 2 * 16 * 16
    assert c.totals["params"] == 16 * 16 + 16
    assert c.layers.loc["sub", "calls"] == 2


def test_unregistered_closure_gets_a_clear_error() -> None:
    lin = nn.Linear(4, 4)  # not a submodule: the fake copy cannot see it
    with pytest.raises(hwprof.errors.HwprofError, match="not registered on the model"):
        hwprof.count(Fn(lambda x: lin(x)), "4", backward=False)


def test_tied_parameters_counted_once() -> None:
    m = zoo.GPT(vocab=50, d_model=16, n_heads=2, n_layers=1, max_seq=8)
    m.head.weight = m.tok.weight
    c = hwprof.count(m, "long:8", backward=False)
    assert c.totals["params"] == sum(p.numel() for p in m.parameters())  # parameters() deduplicates


def test_lstm_cpu_counted_where_peers_report_zero() -> None:
    lstm = nn.LSTM(16, 32, num_layers=2)
    x = torch.randn(5, 3, 16)  # sequence-first
    c = hwprof.count(Fn(lambda m, t: m(t)[0], lstm), x, backward=True)
    assert "aten.mkldnn_rnn_layer" in set(c.ops["op"])
    # layer 0: T*B*(4H*C_in + 4H*H) = 15*(2048 + 4096) = 92,160; layer 1: 15*(4096 + 4096) = 122,880
    assert c.totals["macs_fwd"] == 92_160 + 122_880
    assert c.totals["macs_bwd"] == 2 * (92_160 + 122_880)
    # batch-first gives the same count (ptflops' module backend is 10x low on sequence-first input)
    lstm_bf = nn.LSTM(16, 32, num_layers=2, batch_first=True)
    c_bf = hwprof.count(Fn(lambda m, t: m(t)[0], lstm_bf), x.transpose(0, 1).contiguous(), backward=False)
    assert c_bf.totals["macs_fwd"] == c.totals["macs_fwd"]
    fcm = FlopCounterMode(display=False)
    with fcm:
        lstm(x)
    assert fcm.get_total_flops() == 0


def test_flop_counter_mode_groups_bug_in_conv_backward() -> None:
    # depthwise 3x3, 256 ch, 56x56, batch 1, no bias, input without grad
    conv = nn.Conv2d(256, 256, 3, padding=1, groups=256, bias=False)
    x = torch.randn(1, 256, 56, 56)
    c = hwprof.count(conv, x, backward=True)
    fwd_macs = 56 * 56 * 256 * 9  # = 7,225,344 (each output: 9 MACs over its own channel)
    assert c.totals["macs_fwd"] == fwd_macs
    # backward: grad_weight only = fwd MACs; fwd + bwd FLOPs = 2*(7,225,344 + 7,225,344) = 28,901,376
    assert c.totals["flops_fwd"] + c.totals["flops_bwd"] == 28_901_376
    fcm = FlopCounterMode(display=False)
    with fcm:
        conv(x).sum().backward()
    # FlopCounterMode's grad_weight treats the conv as dense: 2*56*56*256*256*9 = 3,699,376,128 (+ fwd)
    assert fcm.get_total_flops() == 2 * fwd_macs + 2 * fwd_macs * 256
    assert round(fcm.get_total_flops() / 1e9, 2) == 3.71


@pytest.mark.parametrize("name", [n for n in zoo.names() if n not in ("gpt_7b", "vgg16_1024_notop", "vgg16", "alexnet")])
def test_macs_equal_flop_counter_mode_per_op(name: str) -> None:
    """On every (affordable) zoo model, for every op FlopCounterMode covers: MACs == its FLOPs / 2,
    forward and backward, except its known grouped-conv backward bug (checked separately)."""
    model, spec = zoo.build(name)
    xs = hwprof.spec.as_input_tuple(spec, batch=1)
    c = hwprof.count(model, xs, backward=True, mode="train")  # the peer runs the model in its own (train) mode
    fcm = FlopCounterMode(display=False)
    with fcm:
        out = model(*xs)
        out.float().sum().backward()
    model.zero_grad(set_to_none=True)
    ours = c.ops.groupby("op")["macs"].sum()
    grouped = any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in model.modules())
    for op, flops in fcm.get_flop_counts()["Global"].items():
        key = f"aten.{str(op).split('.')[-1]}"
        if grouped and key == "aten.convolution_backward":
            assert ours[key] < flops / 2  # the peer is too high there
            continue
        assert ours[key] == flops / 2, key


def _conv_bn_relu6(c_in: int, c_out: int, k: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    """torchvision's ``Conv2dNormActivation``: bias-free conv (padding (k - 1) / 2), BatchNorm2d, ReLU6."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, stride, (k - 1) // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(c_out), nn.ReLU6(inplace=True))


class _InvertedResidual(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int, t: int) -> None:
        super().__init__()
        hidden = c_in * t
        self.use_res_connect = stride == 1 and c_in == c_out
        layers: list[nn.Module] = [_conv_bn_relu6(c_in, hidden, 1)] if t != 1 else []
        layers += [_conv_bn_relu6(hidden, hidden, 3, stride, groups=hidden), nn.Conv2d(hidden, c_out, 1, bias=False),
                   nn.BatchNorm2d(c_out)]
        self.conv = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(nn.Module):
    """torchvision's ``mobilenet_v2()`` (width 1.0, 1000 classes), module for module, so that the
    cross-check below runs without torchvision (whose PyPI wheels for torch 2.13 need its CUDA build)."""

    SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2),
                (6, 320, 1, 1))   # t (expansion), c (channels), n (blocks), s (first block's stride)

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [_conv_bn_relu6(3, 32, stride=2)]
        c_in = 32
        for t, c, n, stride in self.SETTINGS:
            for i in range(n):
                layers.append(_InvertedResidual(c_in, c, stride if i == 0 else 1, t))
                c_in = c
        layers.append(_conv_bn_relu6(c_in, 1280, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(p=0.2), nn.Linear(1280, 1000))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
        return self.classifier(torch.flatten(x, 1))


def _mobilenet_v2_ratio(model: nn.Module) -> float:
    x = torch.randn(1, 3, 224, 224)
    c = hwprof.count(model, x, backward=True)
    assert not c.uncounted
    ours = c.ops[c.ops["op"].isin(["aten.convolution", "aten.convolution_backward", "aten.addmm", "aten.mm"])]
    fcm = FlopCounterMode(display=False)
    with fcm:
        model(x).sum().backward()
    model.zero_grad(set_to_none=True)
    return fcm.get_total_flops() / ours["flops"].sum()


def test_flop_counter_mode_on_mobilenet_v2() -> None:
    """The issue's figure: FlopCounterMode is ~6.9x too high on torchvision's mobilenet_v2 forward +
    backward (its grouped-conv backward bug); measured 6.89x with torch 2.14.1 / torchvision 0.29.1.
    Run on the same architecture defined here (3,504,872 parameters, torchvision's figure)."""
    torch.manual_seed(0)
    model = MobileNetV2()
    assert sum(p.numel() for p in model.parameters()) == 3_504_872
    assert 6.5 < _mobilenet_v2_ratio(model) < 7.3


def test_local_mobilenet_v2_is_torchvisions() -> None:
    """Where torchvision imports, its mobilenet_v2 counts op for op as the local definition."""
    pytest.importorskip("torchvision")
    theirs, _ = zoo.build("torchvision:mobilenet_v2")
    x = "3x224x224"
    a, b = hwprof.count(theirs, x, backward=True), hwprof.count(MobileNetV2(), x, backward=True)
    assert a.ops[["op", "flops", "bytes"]].equals(b.ops[["op", "flops", "bytes"]])
    assert 6.5 < _mobilenet_v2_ratio(theirs) < 7.3
