"""The counter as a whole: attribution, totals, bad input, the model left untouched."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensor

import hwprof
from hwprof import zoo
from hwprof.errors import InputShapeError

_SELF_COLUMNS = ["flops_fwd", "macs_fwd", "bytes_fwd", "flops_bwd", "macs_bwd", "bytes_bwd"]


def test_per_layer_self_columns_sum_to_totals_and_root_inclusive() -> None:
    c = hwprof.count(zoo.build("resnet18")[0], "3x64x64", backward=True)
    for col in _SELF_COLUMNS:
        assert c.layers[col].sum() == c.totals[col]
        assert c.layers.loc["", f"{col}_incl"] == c.totals[col]


def test_backward_attribution_deep_transformer() -> None:
    """ModuleTracker's parent set goes stale in backward (most ops of a deep stack landed on
    one dropout module); hwprof labels autograd nodes, so every layer gets its own backward."""
    enc = nn.TransformerEncoder(nn.TransformerEncoderLayer(32, 4, 64, dropout=0.1, batch_first=True), 6,
                                enable_nested_tensor=False)
    x = torch.randn(2, 12, 32, requires_grad=True)
    c = hwprof.count(enc, x, backward=True, mode="train")  # train mode: dropout runs
    lay = c.layers
    linears = lay[lay["type"] == "Linear"]
    assert len(linears) == 12
    # a Linear's backward = grad_input (1 x fwd MACs) + grad_weight (1 x fwd MACs)
    assert (linears["macs_bwd"] == 2 * linears["macs_fwd"]).all()
    # each Dropout's backward is its own mask multiply: 1 FLOP per element of its output
    drops = lay[lay["type"] == "Dropout"]
    numel = drops["output_shapes"].map(lambda s: eval(s.replace("x", "*")))
    assert (drops["flops_bwd"] == numel).all() and len(drops) == 18
    # nothing lands on the root: every backward op belongs to a module
    assert lay.loc["", "flops_bwd"] == 0
    assert lay["flops_bwd"].sum() == c.totals["flops_bwd"]


def test_first_layer_backward_has_no_grad_input() -> None:
    m = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    c = hwprof.count(m, "8", batch=3, backward=True)
    # input without grad: first Linear computes grad_weight only (3*8*16 = 384 MACs)
    assert c.layers.loc["0", "macs_bwd"] == 384
    # second: grad_input + grad_weight = 2 * 3*16*4 = 384
    assert c.layers.loc["2", "macs_bwd"] == 384


def test_residual_add_attributed_to_the_block() -> None:
    c = hwprof.count(zoo.build("resnet18")[0], "3x64x64", backward=False)
    # 64 -> conv1 s2 -> 32 -> maxpool -> 16; layer1.0: out + identity on 1x64x16x16 = 16,384 adds,
    # done by the block itself (not a leaf)
    assert c.layers.loc["layer1.0", "flops_fwd"] == 16_384


class _Router(nn.Module):
    """Scales its input and keeps a balance penalty on itself (as a mixture-of-experts router keeps
    its auxiliary loss): the penalty leaves the module through an attribute, not its output."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scaled = x * self.gate
        self.penalty = scaled.pow(2).sum()
        return scaled


class _RoutedSum(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.router = _Router()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.router(x).sum() + self.router.penalty


def test_backward_of_a_side_result_belongs_to_the_module_that_made_it() -> None:
    c = hwprof.count(_RoutedSum(), "4", batch=3, backward=True)
    # router backward on 3x4 = 12 elements: pow's gradient (pow, x2, x grad: 3 ops), the two
    # gradients meeting at `scaled` (1 add), grad of the gate (mul by x, sum over the batch: 2 ops),
    # 6 ops x 12 FLOPs = 72; the root's sum and add only pass gradients on
    assert c.layers.loc["router", "flops_bwd"] == 72
    assert c.layers.loc["", "flops_bwd"] == 0
    assert c.layers["flops_bwd"].sum() == c.totals["flops_bwd"]


class _Raises(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("no fused kernel for this input")


class _Fallback(nn.Module):
    """Tries a fused child, catches its error and runs a plain Linear instead."""

    def __init__(self) -> None:
        super().__init__()
        self.fused, self.plain = _Raises(), nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return self.fused(x)
        except RuntimeError:
            return self.plain(x)


def test_an_exception_caught_inside_a_forward_leaves_the_records_whole() -> None:
    c = hwprof.count(nn.Sequential(_Fallback(), nn.Linear(4, 2)), "4", batch=3, backward=True)
    lay = c.layers
    # every module that returned is counted once, with its shapes; the one that raised never returned
    assert lay.loc[["", "0", "0.plain", "1"], "calls"].tolist() == [1, 1, 1, 1]
    assert lay.loc["0.fused", "calls"] == 0
    assert lay.loc["0", "output_shapes"] == "3x4" and lay.loc["", "output_shapes"] == "3x2"
    # Linear(4, 4) at batch 3: 3*4*4 = 48 MACs forward; backward grad_weight only (48: the input
    # needs no gradient)
    assert lay.loc["0.plain", "macs_fwd"] == 48 and lay.loc["0.plain", "macs_bwd"] == 48


def test_identical_runs_give_identical_numbers() -> None:
    from torch.utils.flop_counter import FlopCounterMode

    m = zoo.build("transformer_encoder")[0]
    a, b = hwprof.count(m, "long:32", backward=True), hwprof.count(m, "long:32", backward=True)
    assert a.ops.equals(b.ops) and a.totals == b.totals
    # and the numbers both runs agree on are right: every op counted (no NaN), and the linear layers'
    # matmuls, forward and backward, equal FlopCounterMode's on the same step
    assert len(a.ops) == 78 and a.ops["flops"].notna().all() and not a.uncounted
    fcm = FlopCounterMode(display=False)
    with fcm:
        m(*hwprof.spec.as_input_tuple("long:32", batch=1)).float().sum().backward()
    m.zero_grad(set_to_none=True)
    theirs = {f"aten.{str(k).split('.')[-1]}": v for k, v in fcm.get_flop_counts()["Global"].items()}
    ours = a.ops.groupby("op")["flops"].sum()
    for op in ("aten.addmm", "aten.mm"):
        assert ours[op] == theirs[op] > 0, op


def test_meta_model_counts_without_memory() -> None:
    with torch.device("meta"):
        m = zoo.GPT(vocab=1000, d_model=256, n_heads=4, n_layers=2, max_seq=128)
    c = hwprof.count(m, "long:128", backward=True)
    assert c.totals["params"] == sum(p.numel() for p in m.parameters())
    # every Linear ran on B*S = 128 rows: MACs = 128 * in * out
    lin = c.layers[c.layers["type"] == "Linear"]
    assert (lin["macs_fwd"] == 128 * lin["params"]).all()


def test_uncounted_ops_are_listed_never_zero() -> None:
    class FFT(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.fft.rfft(x).abs()

    c = hwprof.count(FFT(), "64", backward=False)
    assert c.uncounted == {"aten._fft_r2c": 1}
    row = c.ops[c.ops["op"] == "aten._fft_r2c"].iloc[0]
    assert not row["counted"] and row["flops"] != row["flops"]  # NaN, not 0
    assert c.totals["uncounted_calls"] == 1


def test_wrong_input_shape_names_the_module() -> None:
    with pytest.raises(InputShapeError) as e:
        hwprof.count(zoo.LeNet5(), "3x28x28", backward=False)
    msg = str(e.value)
    assert "module 'conv1' (Conv2d)" in msg and "1x3x28x28" in msg
    assert e.value.module_path == "conv1"


def _snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "keys": list(model.state_dict()),
        "training": [m.training for m in model.modules()],
        "requires_grad": [p.requires_grad for p in model.parameters()],
        "grads": [p.grad for p in model.parameters()],
        "hooks": [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks)) for m in model.modules()],
        "global": (len(torch.nn.modules.module._global_forward_hooks),
                   len(torch.nn.modules.module._global_forward_pre_hooks)),
        "attrs": [sorted(vars(m)) for m in model.modules()],
        "buffers": [n for n, _ in model.named_buffers()],
    }


def test_model_left_exactly_as_it_was() -> None:
    model = zoo.build("resnet18")[0].train()
    model.fc.weight.requires_grad_(False)
    model.conv1.weight.grad = torch.full_like(model.conv1.weight, 7.0)
    model.layer1.register_forward_hook(lambda *a: None)
    before = _snapshot(model)
    sentinel = model.conv1.weight.grad
    hwprof.count(model, "3x32x32", batch=2, backward=True)
    after = _snapshot(model)
    assert after["keys"] == before["keys"]
    assert all(torch.equal(before["state"][k], v) for k, v in after["state"].items())  # BN stats too
    for key in ("training", "requires_grad", "hooks", "global", "attrs", "buffers"):
        assert after[key] == before[key], key
    assert model.conv1.weight.grad is sentinel and [g is None for g in after["grads"][1:]] == [
        g is None for g in before["grads"][1:]]
    # a failing count leaves it untouched too: the same snapshot as before either count
    with pytest.raises(InputShapeError):
        hwprof.count(model, "4x32x32", backward=True)
    failed = _snapshot(model)
    assert all(torch.equal(before["state"][k], v) for k, v in failed["state"].items())
    for key in ("keys", "training", "requires_grad", "hooks", "global", "attrs", "buffers"):
        assert failed[key] == before[key], key
    assert model.conv1.weight.grad is sentinel
    assert all(not isinstance(t, FakeTensor) for t in (*model.parameters(), *model.buffers()))


def test_dtype_changes_bytes_not_flops() -> None:
    m = nn.Conv2d(8, 8, 3)
    f32 = hwprof.count(m, "8x16x16", backward=False)
    b16 = hwprof.count(m, "8x16x16", backward=False, dtype="bf16")
    assert f32.totals["flops_fwd"] == b16.totals["flops_fwd"]
    assert f32.totals["bytes_fwd"] == 2 * b16.totals["bytes_fwd"]
    assert m.weight.dtype == torch.float32  # the user's model is not converted


def test_count_on_another_device_moves_only_the_copy() -> None:
    m = zoo.LeNet5()
    on_meta = hwprof.count(m, "1x28x28", backward=True, device="meta")
    on_cpu = hwprof.count(m, "1x28x28", backward=True)
    assert on_meta.totals == on_cpu.totals
    assert next(m.parameters()).device == torch.device("cpu")


def test_meta_model_counts_the_cpu_kernels_by_default() -> None:
    # on meta, SDPA would dispatch its math path (full S x S matrix); a real CPU runs the flash
    # kernel, whose causal work hwprof counts as useful pairs: the default follows the CPU.
    with torch.device("meta"):
        meta = zoo.GPT(vocab=100, d_model=32, n_heads=2, n_layers=1, max_seq=16)
    cpu = zoo.GPT(vocab=100, d_model=32, n_heads=2, n_layers=1, max_seq=16)
    c_meta, c_cpu = hwprof.count(meta, "long:16"), hwprof.count(cpu, "long:16")
    assert "aten._scaled_dot_product_flash_attention_for_cpu" in set(c_meta.ops["op"])
    assert c_meta.totals == c_cpu.totals
    assert any("meta" in n for n in c_meta.notes)
    as_meta = hwprof.count(meta, "long:16", device="meta")
    assert "aten._scaled_dot_product_flash_attention_for_cpu" not in set(as_meta.ops["op"])
