"""The formula predictor: exactly which tensors autograd saves (torch 2.13), and the closed form.

Derivations use fp32 (4 B per value). "saved" = packed by ``saved_tensors_hooks``; storages
are deduplicated, parameters and buffers are not activations, model inputs are ``inputs``.
"""

from __future__ import annotations

from torch import nn

from hwprof.memory.formula import backward_peak, formula, inspect_forward
from hwprof.memory.optimizer_state import optimizer_state_bytes

LINEAR_1024_PARAMS_BYTES = (1024 * 1024 + 1024) * 4          # weight + bias = 4,198,400 B


def conv_bn_relu_linear(inplace: bool) -> nn.Module:
    # input (4, 3, 8, 8); conv 3 -> 16, 3x3, padding 1 keeps 8x8; Linear(16 * 8 * 8 = 1024, 10)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=inplace),
                         nn.Flatten(), nn.Linear(16 * 8 * 8, 10))


def test_linear_params_grads_and_optimizer_states() -> None:
    model = nn.Linear(1024, 1024)
    for opt, k in (("sgd", 0), ("momentum", 1), ("adam", 2), ("adamw", 2), (None, 0)):
        c = formula(model, "1024", batch=4, optimizer=opt, device="cpu").components
        assert c["params"] == LINEAR_1024_PARAMS_BYTES == 4_198_400
        assert c["grads"] == LINEAR_1024_PARAMS_BYTES
        assert c["optimizer_state"] == k * 4_198_400            # momentum_buffer; exp_avg + exp_avg_sq
    assert optimizer_state_bytes("adam", 100) == 200


def test_linear_adam_cuda_peak_is_the_step() -> None:
    c = formula(nn.Linear(1024, 1024), "1024", batch=4, optimizer="adam", device="cuda").components
    # addmm saves its input (the model input: counted in inputs) and weight.t() (a parameter view):
    assert c["activations_saved"] == 0
    assert c["inputs"] == 4 * 1024 * 4 == 16_384
    # backward: 16,384 (input) + 16,384 (output) = 32,768; step (foreach Adam's sqrt temp) = P = 4,198,400
    # peak = params + inputs + states + max(grads + 0 + 32,768, grads + 4,198,400)
    #      = 4,198,400 + 16,384 + 8,396,800 + 8,396,800 = 21,008,384
    assert c["transient"] == 4_198_400
    assert c["peak_predicted"] == 21_008_384


def test_conv_bn_inplace_relu_linear_saved_tensors() -> None:
    model = conv_bn_relu_linear(inplace=True)
    insp = inspect_forward(model, "3x8x8", batch=4, mode="train", device="cpu")
    saved = [(s.module, s.shape, s.dtype, s.kind) for s in insp.saved]
    # what torch 2.13 saves, in order:
    assert saved == [
        ("0", (4, 3, 8, 8), "float32", "inputs"),          # conv: its input x ...
        ("0", (16, 3, 3, 3), "float32", "params"),         # ... and its weight (not the bias)
        ("1", (4, 16, 8, 8), "float32", "activations"),    # BN: its input (the conv output),
        ("1", (16,), "float32", "buffers"),                # running_mean,
        ("1", (16,), "float32", "buffers"),                # running_var,
        ("1", (16,), "float32", "params"),                 # weight,
        ("1", (16,), "float32", "activations"),            # save_mean,
        ("1", (16,), "float32", "activations"),            # save_invstd
        ("2", (4, 16, 8, 8), "float32", "activations"),    # ReLU: its result = the BN output (in place)
        ("4", (4, 1024), "float32", "activations"),        # Linear: its input, a view of the ReLU result,
        ("4", (1024, 10), "float32", "params"),            # and weight.t()
    ]
    # the Linear's input is the ReLU result's storage: one storage, counted once
    assert insp.saved[8].key == insp.saved[9].key
    # conv out 4*16*8*8*4 = 16,384 + save_mean 64 + save_invstd 64 + BN/ReLU out 16,384 = 32,896
    assert insp.distinct_saved_bytes("activations") == 32_896
    assert insp.distinct_saved_bytes("inputs") == 4 * 3 * 8 * 8 * 4 == 3_072
    layers = insp.layers().set_index("module")
    assert layers.loc["1", "activations_saved_bytes"] == 16_384 + 64 + 64
    assert layers.loc["2", "activations_saved_bytes"] == 16_384
    assert bool(layers.loc["2", "in_place_or_view"]) and bool(layers.loc["3", "in_place_or_view"])
    assert layers.loc["4", "activations_saved_bytes"] == 0      # nothing new: the view's storage was saved


def test_conv_bn_relu_linear_components() -> None:
    c = formula(conv_bn_relu_linear(inplace=True), "3x8x8", batch=4, optimizer="adam", device="cpu").components
    params = (16 * 3 * 9 + 16) + (16 + 16) + (1024 * 10 + 10)   # conv 448 + BN 32 + linear 10,250 values
    assert c["params"] == params * 4 == 42_920
    assert c["buffers"] == (16 + 16) * 4 + 8 == 136            # running mean/var + int64 num_batches_tracked
    assert c["activations_saved"] == 32_896
    assert c["inputs"] == 3_072
    # backward, calls in reverse (activations first saved by the call and earlier + grads of the call and
    # later + its input + output):
    #   Linear   32,896 + 41,000 (linear grads)   + 16,384 + 160  =  90,440
    #   Flatten  32,896 + 41,000                  + 16,384 + 16,384 = 106,664
    #   ReLU     32,896 + 41,000                  + 32,768        = 106,664   (then its 16,384 is freed)
    #   BN       16,512 + 41,000 + 128            + 32,768        =  90,408   (then its 16,512 is freed)
    #   conv          0 + 41,128 + 1,792          + 16,384        =  59,304   (x: the model input, no grad)
    bwd, where = backward_peak(inspect_forward(conv_bn_relu_linear(inplace=True), "3x8x8", batch=4, device="cpu"),
                               42_920)
    assert (bwd, where) == (106_664, "3")
    # the CPU's one-tensor-at-a-time Adam holds sqrt(exp_avg_sq) and its quotient for the largest
    # parameter at once: 2 x the Linear weight 1024 * 10 * 4 = 81,920; step = grads 42,920 + 81,920
    # = 124,840 > 106,664: the peak is in the step
    assert c["transient"] == 81_920
    # 42,920 + 136 + 3,072 + Adam 85,840 + 124,840 = 256,808
    assert c["peak_predicted"] == 256_808


def test_non_inplace_relu_saves_its_own_output() -> None:
    insp = inspect_forward(conv_bn_relu_linear(inplace=False), "3x8x8", batch=4, mode="train", device="cpu")
    # BN's output is no longer saved (ReLU saves its result, a new storage): same bytes, other storages
    assert insp.saved[8].key != insp.saved[2].key
    assert insp.distinct_saved_bytes("activations") == 16_384 + 64 + 64 + 16_384 == 32_896


def test_maxpool_indices_and_dropout_mask() -> None:
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.MaxPool2d(2), nn.Dropout(0.5),
                          nn.Flatten(), nn.Linear(8 * 4 * 4, 10))
    # input (2, 3, 8, 8): conv out (2, 8, 8, 8) = 4,096 B; pool out (2, 8, 4, 4) = 256 values
    cuda = formula(model, "3x8x8", batch=2, optimizer="sgd", device="cuda").components
    # max pool saves its input (4,096) and int64 indices (256 x 8 = 2,048); CUDA dropout (native_dropout)
    # saves a bool mask (256 B); the Linear saves the dropout output (1,024): 7,424
    assert cuda["activations_saved"] == 4_096 + 2_048 + 256 + 1_024 == 7_424
    # the CPU's dropout multiplies by a float noise tensor and saves that (1,024 B instead of 256)
    cpu = formula(model, "3x8x8", batch=2, optimizer="sgd", device="cpu").components
    assert cpu["activations_saved"] == 4_096 + 2_048 + 1_024 + 1_024 == 8_192


def test_inference_formula() -> None:
    model = nn.Sequential(nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1024))
    c = formula(model, "1024", batch=4, mode="inference", device="cpu").components
    assert c["activations_saved"] == 0 and c["grads"] == 0 and c["optimizer_state"] == 0
    # params 2 x 4,198,400 + input 16,384 + largest leaf in + out: the ReLU's 16,384 + 16,384
    # (the first Linear's input is the model input, already counted)
    assert c["peak_predicted"] == 2 * 4_198_400 + 16_384 + 32_768 == 8_445_952


def test_inference_peak_counts_the_inputs_enclosing_calls_hold() -> None:
    """A nested Sequential keeps its input alive (its caller holds it) while its children run."""
    m = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.BatchNorm2d(8)))
    r = formula(m, "3x16x16", batch=2, mode="inference", device="cpu")
    fmap = 2 * 8 * 16 * 16 * 4                       # 16384 B per 8x16x16 feature map, batch 2
    # while the BatchNorm runs: its input (inner conv out) + its output + the inner Sequential's
    # input (outer conv out, held by the outer Sequential) = 3 feature maps
    assert r.components["transient"] == 3 * fmap
    params = (8 * 3 * 9 + 8 + 8 * 8 * 9 + 8 + 2 * 8) * 4   # 896 + 2336 + 64 B
    buffers = 2 * 8 * 4 + 8                          # running mean/var + num_batches_tracked (int64)
    inputs = 2 * 3 * 16 * 16 * 4                     # 6144 B
    assert r.components["peak_predicted"] == params + buffers + inputs + 3 * fmap   # 58664
