"""Every worked number of the seed documents (../shared/seeds), reproduced by hwprof.

Where a seed's convention differs from hwprof's (FLOP = add or multiply, MAC = multiply-
accumulate, FLOPs = 2 x MACs for conv/matmul), the comment says how the two relate.
"""

from __future__ import annotations

import math

import torch
from torch import nn

import hwprof
from hwprof.zoo import MOBILENET_V1_CONV_DEFS, VGG16, AlexNet, LeNet5, MobileNetV1


def test_lenet5_params_seed_001() -> None:
    # conv1 5*5*20 + 20 = 520; conv2 20*5*5*50 + 50 = 25,050; fc1 50*4*4*500 + 500 = 400,500;
    # fc2 500*10 + 10 = 5,010 -> 431,080 (seed 001: 500 + 25000 + 400000 + 5000 + (20+50+500+10))
    c = hwprof.count(LeNet5(), "1x28x28", backward=False)
    assert c.totals["params"] == 431_080
    # parameter bytes in fp32: 431,080 * 4 = 1,724,320 (seed: "1724320 ≈ 1.64M")
    assert c.totals["params_bytes"] == 1_724_320


def test_alexnet_params_and_macs_seed_004() -> None:
    c = hwprof.count(AlexNet().eval(), "3x224x224", backward=False)
    assert c.totals["params"] == 61_264_904  # torchsummary's total in seed 004
    mm = c.ops[c.ops["op"].isin(["aten.convolution", "aten.addmm"])]
    # conv: 96*3*121*55² + 192*96*25*27² + 384*192*9*13² + 256*384*9*13² + 256*256*9*13²
    #     = 105,415,200 + 335,923,200 + 112,140,288 + 149,520,384 + 99,680,256 = 802,679,328
    # fc:  9216*4096 + 4096*4096 + 4096*1000 = 37,748,736 + 16,777,216 + 4,096,000 = 58,621,952
    # total 861,301,280 = thop's figure in seed 004 (thop reports MACs under the name "flops").
    assert int(mm["macs"].sum()) == 861_301_280
    # torchstat's "1.72 GMAdd" counts (2·K²C - 1) per conv output (no bias) ≈ 2 x MACs;
    # hwprof's FLOPs for these ops are exactly 2 x MACs = 1,722,602,560.
    assert int(mm["flops"].sum()) == 2 * 861_301_280
    # torchstat's "862.36 MFlops" = MACs + ~1.06 M for ReLU/MaxPool; hwprof's ReLU + MaxPool FLOPs:
    other = c.ops[c.ops["op"].isin(["aten.relu_", "aten.max_pool2d_with_indices"])]
    # ReLU: 96*55² + 192*27² + 384*13² + 256*13² * 2 + 4096 * 2 = 290,400+139,968+64,896+86,528+8,192 = 589,984
    # MaxPool: out * 9: (96*27² + 192*13² + 256*6²) * 9 = (69,984 + 32,448 + 9,216) * 9 = 1,004,832
    assert int(other["flops"].sum()) == 589_984 + 1_004_832


def test_grouped_conv_seed_002() -> None:
    # seed 002: [(3*3*3) + (3*3*3 - 1) + 1] * 2*2*6 = 54 * 24 = 1296 FLOPs; hwprof: 2 x MACs = 2 * 648
    conv = nn.Conv2d(3, 6, 3, stride=3)
    c = hwprof.count(conv, torch.randn(1, 3, 6, 6), backward=False)
    assert c.totals["flops_fwd"] == 1296 and c.totals["macs_fwd"] == 648
    # groups=3: [(3*3*1) + (3*3*1 - 1) + 1] * 2*2*6 = 432 (seed: 1296 / 3)
    gconv = nn.Conv2d(3, 6, 3, stride=3, groups=3)
    c = hwprof.count(gconv, torch.randn(1, 3, 6, 6), backward=False)
    assert c.totals["flops_fwd"] == 432 and c.totals["macs_fwd"] == 216
    # params: conv 6*(3*3*3) + 6 = 168; grouped 6*(3*3*1) + 6 = 60 (seed: (k*k*Cin/g + 1)*Cout/g*g)
    assert hwprof.count(conv, "3x6x6", backward=False).totals["params"] == 168
    assert hwprof.count(gconv, "3x6x6", backward=False).totals["params"] == 60


def test_vgg16_1024_params_and_feature_maps_seed_003() -> None:
    with torch.device("meta"):  # 2.18 G parameters: counted without allocating them
        notop, top = VGG16(1024, include_top=False), VGG16(1024, include_top=True)
    assert hwprof.count(notop, "3x1024x1024", backward=False).totals["params"] == 14_714_688
    c = hwprof.count(top, "3x1024x1024", backward=False)
    # fc1 alone: 512*32*32*4096 + 4096 = 2,147,487,744
    assert c.totals["params"] == 2_183_080_744
    # Seed 003 sums Keras' per-layer output sizes, input included, in fp32 (elements):
    seed_elements = (
        3 * 1024**2                                   # input
        + 2 * 64 * 1024**2 + 64 * 512**2              # block1 conv x2, pool
        + 2 * 128 * 512**2 + 128 * 256**2             # block2
        + 3 * 256 * 256**2 + 256 * 128**2             # block3
        + 3 * 512 * 128**2 + 512 * 64**2              # block4
        + 3 * 512 * 64**2 + 512 * 32**2               # block5
        + 512 * 32**2                                 # flatten (a copy in Keras' accounting)
        + 4096 + 4096 + 1000                          # fc1, fc2, predictions
    )
    assert seed_elements * 4 / 2**20 == 1216.0350646972656  # seed: "1216.0350647 M"
    # hwprof counts distinct new tensors: Keras fuses ReLU into the conv layer, PyTorch's
    # in-place ReLU and the Flatten view allocate nothing, so hwprof = seed - the 2 MiB flatten.
    flatten_bytes = 512 * 32**2 * 4
    assert c.totals["feature_map_bytes"] == seed_elements * 4 - flatten_bytes
    # params memory: 2,183,080,744 * 4 / 2**20 = 8327.79 MiB (seed: "8327.79214477539 M")
    assert round(c.totals["params_bytes"] / 2**20, 5) == 8327.79214


def _seed_000_script(input_size: int, separable: bool) -> int:
    """Seed 000's script verbatim: valid (unpadded) 3x3 convs with round((in - 2) / stride)."""
    total, depth = 0, 3
    for d in MOBILENET_V1_CONV_DEFS:
        out = round((input_size - int(d.kernel / 2) * 2) / d.stride)
        if d.kind == "conv" or not separable:
            total += out * out * d.kernel * d.kernel * depth * d.depth
        else:
            total += out * out * (depth * d.kernel * d.kernel + depth * d.depth)
        depth, input_size = d.depth, out
    return total


def test_mobilenet_v1_standard_vs_separable_seed_000() -> None:
    # the seed script's own output, reproduced:
    assert _seed_000_script(160, separable=False) == 1_045_417_824
    assert _seed_000_script(160, separable=True) == 126_373_376
    # hwprof's MobileNetV1 pads 3x3 convs by 1 ("same"), so each layer's output is ceil(in/stride):
    # 80, 80, 40, 40, 20, 20, 10 x6, 5, 5. The seed script shrinks every layer by 2 (valid padding)
    # and rounds, so its maps are smaller and its counts lower. Exact multiply counts (MACs):
    def exact(separable: bool) -> int:
        total, depth, size = 0, 3, 160
        for d in MOBILENET_V1_CONV_DEFS:
            size = math.ceil(size / d.stride)
            if d.kind == "conv" or not separable:
                total += size * size * 9 * depth * d.depth
            else:
                total += size * size * (depth * 9 + depth * d.depth)
            depth = d.depth
        return total

    sep, dense = exact(True), exact(False)
    assert (sep, dense) == (289_651_200, 2_482_790_400)
    for model, expected in ((MobileNetV1(), sep), (MobileNetV1(dense=True), dense)):
        c = hwprof.count(model, "3x160x160", backward=False)
        assert int(c.ops.loc[c.ops["op"] == "aten.convolution", "macs"].sum()) == expected
