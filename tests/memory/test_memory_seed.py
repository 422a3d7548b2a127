"""Seed 000's training-memory rule and seed 003's per-layer feature-map sum, reproduced.

"MB" in both seeds is 2**20 bytes (params x 4 / 1024 / 1024).
"""

from __future__ import annotations

import torch
from torch import nn

from hwprof.memory.formula import inspect_forward
from hwprof.memory.seed import feature_maps, seed000_training_bytes, seed_per_layer_rule, seed_rule
from hwprof.zoo import build

MiB = 2**20

# seed 003's printed per-layer feature maps of Keras VGG16 at 1024x1024 (MB), in layer order;
# its loop runs on the model rebuilt with include_top=True, hence the last four entries
SEED003_FEATURE_MB = {
    "input": 12.0,
    "block1_conv1": 256.0, "block1_conv2": 256.0, "block1_pool": 64.0,
    "block2_conv1": 128.0, "block2_conv2": 128.0, "block2_pool": 32.0,
    "block3_conv1": 64.0, "block3_conv2": 64.0, "block3_conv3": 64.0, "block3_pool": 16.0,
    "block4_conv1": 32.0, "block4_conv2": 32.0, "block4_conv3": 32.0, "block4_pool": 8.0,
    "block5_conv1": 8.0, "block5_conv2": 8.0, "block5_conv3": 8.0, "block5_pool": 2.0,
    "flatten": 2.0, "fc1": 0.015625, "fc2": 0.015625, "predictions": 0.003814697265625,
}


def test_seed000_worked_example() -> None:
    # 500w params: 5,000,000 x 4 B = 20,000,000 B = 19.07 MiB (the seed: "19MB")
    r = seed000_training_bytes(5_000_000, 2**20, 128, terms=1)
    assert r["params_bytes"] == 20_000_000
    assert round(r["params_bytes"] / MiB, 2) == 19.07
    # x 2 ("1 为 params, 1 为 Adam"): 40,000,000 B = 38.15 MiB (the seed: 19 x 2 = 38MB)
    assert r["model_bytes"] == 40_000_000
    assert round(r["model_bytes"] / MiB, 2) == 38.15
    # 100w values per image: the seed's "4MB" is 2**20 values x 4 B = 4 MiB exactly ...
    assert r["feature_bytes_per_image"] == 4 * MiB
    # ... x batch 128 x 2 (forward and backward) = 1024 MiB
    assert r["feature_bytes"] == 1024 * MiB
    assert r["total_bytes"] == 40_000_000 + 1024 * MiB          # 38 + 1024 MB > 1 GB
    # with 1,000,000 values (3.81 MiB per image, which the seed rounds to 4): 976.5625 MiB
    r2 = seed000_training_bytes(5_000_000, 1_000_000, 128, terms=1)
    assert r2["feature_bytes"] == 1_000_000 * 4 * 128 * 2 == 1_024_000_000
    assert r2["feature_bytes"] / MiB == 976.5625


def test_seed003_vgg16_1024_notop() -> None:
    model, spec = build("vgg16_1024_notop", device="meta")
    insp = inspect_forward(model, spec, batch=1, mode="inference", device="cpu")
    # params: 14,714,688 (the seed's count_params() without top) x 4 B = 58,858,752 B = 56.13 MiB
    assert insp.setup.n_params == 14_714_688
    assert insp.setup.params_bytes == 14_714_688 * 4 == 58_858_752
    assert round(insp.setup.params_bytes / MiB, 2) == 56.13
    fm = feature_maps(insp)
    # input 3 x 1024 x 1024 x 4 B = 12 MiB (Keras' input layer)
    assert fm.input_bytes == 12 * MiB
    # the seed's list up to block5_pool (the model without top) sums to 1214 MiB:
    keras_notop = sum(v for k, v in SEED003_FEATURE_MB.items() if k not in ("flatten", "fc1", "fc2", "predictions"))
    assert keras_notop == 1214.0
    # its printed total 1216.0350647 MiB adds flatten 2 MiB and the top's 0.015625 + 0.015625 + 0.0038147 MiB
    assert round(sum(SEED003_FEATURE_MB.values()), 7) == 1216.0350647
    # PyTorch: 13 convs (1080 MiB of outputs: 2 x 256 + 2 x 128 + 3 x 64 + 3 x 32 + 3 x 8) and 5 pools
    # (64 + 32 + 16 + 8 + 2 = 122 MiB): counting each storage once, 12 + 1080 + 122 = 1214 MiB = Keras
    assert fm.total_distinct_bytes == 1214 * MiB
    # but every conv is followed by its own ReLU(inplace=True) module, whose output is the conv's
    # storage again: the plain sum over leaf modules counts the 1080 MiB twice: 2294 MiB
    assert fm.n_leaf_calls == 13 + 13 + 5
    assert fm.n_aliasing_calls == 13
    assert fm.total_bytes == (12 + 2 * 1080 + 122) * MiB == 2294 * MiB
    # seed 003's total: params + feature maps
    r = seed_per_layer_rule(inspection=insp)
    assert r.components["peak_predicted"] == 58_858_752 + 2294 * MiB


def test_seed_predictor_on_a_linear_layer() -> None:
    model = nn.Linear(1024, 1024)
    insp = inspect_forward(model, "1024", batch=8, mode="train", device="cpu")
    p = (1024 * 1024 + 1024) * 4                     # 4,198,400 B of parameters
    feats = 8 * 1024 * 4 + 8 * 1024 * 4              # input 32,768 B + the Linear's output 32,768 B
    r = seed_rule(inspection=insp, mode="train", optimizer="adam")
    c = r.components
    assert c["params"] == p == 4_198_400
    assert c["grads"] == p
    assert c["optimizer_state"] == 2 * p              # Adam: exp_avg + exp_avg_sq
    assert c["activations_saved"] == feats and c["transient"] == feats    # feature maps x 2
    assert c["peak_predicted"] == p * (1 + 1 + 2) + 2 * feats == 16_924_672    # 16,793,600 + 131,072
    r_inf = seed_rule(inspection=inspect_forward(model, "1024", batch=8, mode="inference", device="cpu"),
                      mode="inference")
    assert r_inf.components["peak_predicted"] == p + feats       # inference: params + feature maps once
    r_sgd = seed_rule(inspection=insp, mode="train", optimizer="sgd")
    assert r_sgd.components["peak_predicted"] == p * 2 + 2 * feats


def test_seed_rules_take_the_run_dtype() -> None:
    model = nn.Linear(16, 16)
    insp = inspect_forward(model, "16", batch=2, mode="train", dtype=torch.bfloat16, device="cpu")
    # bf16: 2 B per value; params (16 x 16 + 16) x 2 = 544 B, features (2 x 16 + 2 x 16) x 2 = 128 B
    r = seed_per_layer_rule(inspection=insp)
    assert r.components["peak_predicted"] == 544 + 128
