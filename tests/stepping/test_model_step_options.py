"""model(inputs) as a step of hwprof's own: autocast (asked for, or the caller's), real batches, the user's
own optimizers and a list of them, profile(loss_fn=)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from step_scenarios import CEILINGS
from torch import nn

import hwprof
from hwprof.spec import Inputs, resize_batch

FAST = {"budget_s": 0.01, "warmup": 1, "min_reps": 2, "max_reps": 2}


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 8 * 8, 10))


def test_count_under_amp_records_each_ops_dtype() -> None:
    c = hwprof.count(_net(), "3x8x8", amp="bf16", backward=True, mode="train")
    assert c.config["amp"] == "bf16" and c.config["dtype"] == "float32"      # parameters keep theirs
    heavy = c.ops[c.ops["op_class"].isin(["conv", "matmul"])]
    assert set(heavy["dtype"]) == {"bfloat16"}
    # the parameters are cast for the kernels: a _to_copy per weight and bias in the forward
    assert (c.ops["op"] == "aten._to_copy").sum() >= 4


def test_a_call_inside_the_users_autocast_is_recorded_as_such() -> None:
    with torch.autocast("cpu", dtype=torch.bfloat16):
        c = hwprof.count(_net(), "3x8x8")
        m = hwprof.measure(_net(), "3x8x8", device="cpu", **FAST)
    assert c.config["amp"] == "bf16" and m.run.amp == "bf16"
    assert set(c.ops[c.ops["op_class"] == "conv"]["dtype"]) == {"bfloat16"}


def test_measure_and_profile_under_amp() -> None:
    m = hwprof.measure(_net(), "3x8x8", device="cpu", mode="train", optimizer="adamw", amp="bf16", **FAST)
    assert m.config.amp == "bf16" and m.run.amp == "bf16" and m.run.dtype == "float32"
    p = hwprof.profile(_net(), "3x8x8", device="cpu", mode="train", optimizer="sgd", amp="bf16", budget_s=0.01,
                       ceilings=CEILINGS)
    assert p.config["amp"] == "bf16"
    assert set(p.layers.loc[["0", "3"], "roof_key"]) == {"bf16"}      # conv and linear held to the bf16 roof
    with pytest.raises(ValueError, match="amp must be"):
        hwprof.measure(_net(), "3x8x8", amp="fp8")


def test_batch_with_tensors_is_applied_and_recorded() -> None:
    x = torch.randn(6, 3, 8, 8)
    c = hwprof.count(_net(), x, batch=4)
    assert c.config["batch"] == 4
    assert c.layers.loc["0", "flops_fwd"] == 2 * 8 * 3 * 3 * 3 * 8 * 8 * 4   # 2 * C_out * K*K*C_in * H*W * N=4
    m = hwprof.measure(_net(), x, batch=9, device="cpu", **FAST)
    assert m.run.batch == 9 and m.run.input_shapes[0] == (9, 3, 8, 8)
    assert hwprof.count(_net(), x).config["batch"] == 6                  # without batch=: the batch that ran
    r = resize_batch(Inputs((torch.arange(3.0),)), 5)
    assert r.args[0].tolist() == [0.0, 1.0, 2.0, 0.0, 1.0]                # rows repeated in order, the user's data


def test_the_users_optimizers_step_and_are_put_back() -> None:
    net = _net()
    opt_a = torch.optim.Adam(net[0].parameters(), lr=1e-2)
    opt_b = torch.optim.SGD(net[3].parameters(), lr=1e-2, momentum=0.9)
    w = net[0].weight.detach().clone()
    m = hwprof.measure(net, "3x8x8", device="cpu", mode="train", optimizer=[opt_a, opt_b], **FAST)
    assert "step" in m.phases.index and m.config.optimizer_name == "Adam+SGD"
    assert not opt_a.state and not opt_b.state and torch.equal(net[0].weight, w)   # as they were: empty
    with pytest.raises(ValueError, match="unknown optimizer"):
        hwprof.measure(net, "3x8x8", mode="train", optimizer=["adam", "bogus"])


def test_profile_takes_a_loss_fn_and_counts_it() -> None:
    y = torch.randint(0, 10, (2,))

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(out, y)

    p = hwprof.profile(_net(), "3x8x8", batch=2, device="cpu", mode="train", loss_fn=loss_fn, budget_s=0.01,
                       ceilings=CEILINGS)
    ops = set(p.counts.ops["op"])
    assert "aten._log_softmax" in ops and "aten.nll_loss_forward" in ops and "aten.nll_loss_backward" in ops
    assert p.summary["optimizer_in_whole_time"] is False and p.summary["optimizer_step_s"] is None


def test_estimate_memory_inside_the_users_autocast_predicts_an_autocast_step() -> None:
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 8))
    plain = hwprof.estimate_memory(model, "64", batch=32, device="cpu")
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ambient = hwprof.estimate_memory(model, "64", batch=32, device="cpu")
    asked = hwprof.estimate_memory(model, "64", batch=32, device="cpu", amp="bf16")
    assert (ambient.config["amp"], ambient.config["dtype"]) == (True, "bfloat16") == (asked.config["amp"],
                                                                                     asked.config["dtype"])
    assert ambient.peak_bytes == asked.peak_bytes != plain.peak_bytes   # bf16 activations, fp32 parameters
