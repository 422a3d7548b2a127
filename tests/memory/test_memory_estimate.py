"""``hwprof.estimate_memory``: the public object, and the user's model left exactly as it was."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hwprof
from hwprof.errors import InputShapeError
from hwprof.memory.estimate import PREDICTORS, predictor_columns


def test_predictors_table_and_components() -> None:
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                          nn.Flatten(), nn.Linear(16 * 8 * 8, 10))
    e = hwprof.estimate_memory(model, "3x8x8", mode="train", optimizer="adam", batch=4, device="cpu")
    assert list(e.predictors.index) == list(PREDICTORS)
    assert list(e.predictors.columns) == predictor_columns()
    for key in ("params", "grads", "optimizer_state", "activations_saved", "inputs", "peak_predicted"):
        assert key in e.components
    # accounting terms from the formula (see test_memory_formula), the peak from the simulation
    assert e.components["params"] == 42_920
    assert e.components["optimizer_state"] == 2 * 42_920
    assert e.components["activations_saved"] == 32_896
    # the peak is the simulated replay's: torch's MemTracker following the same two steps on real tensors
    # (Adam's default single-tensor step on the CPU) peaks at the same 256,896 B
    assert e.peak_bytes == int(e.predictors.loc["simulated", "peak_predicted_bytes"]) == _memtracker_peak(model, 4)
    assert e.reserved_bytes is None                               # CPU: no caching allocator
    assert e.config["batch"] == 4 and e.config["optimizer"] == "adam"
    assert not e.layers.empty and not e.timeline.empty
    assert e.to_dict()["components"]["params"] == 42_920


def _memtracker_peak(model: nn.Module, batch: int) -> int:
    import copy

    mt = pytest.importorskip("torch.distributed._tools.mem_tracker")
    from hwprof.training import training_loss

    work = copy.deepcopy(model)
    x = torch.randn(batch, 3, 8, 8)
    opt = torch.optim.Adam(work.parameters())
    tracker = mt.MemTracker()
    tracker.track_external(work, opt, x)
    with tracker:
        for _ in range(2):
            loss = training_loss(work(x))
            loss.backward()
            del loss
            opt.step()
            opt.zero_grad(set_to_none=True)
            tracker.reset_mod_stats()
    return int(tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"])


def test_cuda_target_models_reserved_and_workspace() -> None:
    e = hwprof.estimate_memory(nn.Linear(64, 64), "64", optimizer="sgd", batch=2)        # device="cuda"
    assert e.reserved_bytes is not None and e.reserved_bytes >= e.peak_bytes
    assert e.components["workspace"] is not None and e.components["workspace"] > 0
    inference = hwprof.estimate_memory(nn.Linear(64, 64), "64", mode="inference", batch=2)
    assert inference.components["grads"] == 0 and inference.config["optimizer"] is None


def test_tensor_inputs_are_rebatched_and_not_touched() -> None:
    x = torch.randn(2, 64)
    e = hwprof.estimate_memory(nn.Linear(64, 64), x, batch=16, device="cpu")
    assert e.config["batch"] == 16
    assert e.components["inputs"] == 16 * 64 * 4
    assert x.shape == (2, 64)


def test_bad_input_names_the_module() -> None:
    model = nn.Sequential(nn.Linear(64, 32), nn.Linear(16, 8))
    with pytest.raises(InputShapeError) as ei:
        hwprof.estimate_memory(model, "64", batch=2, device="cpu")
    assert ei.value.module_path == "1" and ei.value.input_shapes == [(2, 32)]


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        hwprof.estimate_memory(nn.Linear(4, 4), "4", optimizer="lamb")
    with pytest.raises(ValueError):
        hwprof.estimate_memory(nn.Linear(4, 4), "4", mode="eval")


def test_model_left_exactly_as_it_was() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(),
                          nn.Linear(8 * 8 * 8, 10))
    model.eval()
    model[4].weight.requires_grad_(False)
    model[0].weight.grad = torch.ones_like(model[0].weight)
    grad_obj = model[0].weight.grad
    calls: list[str] = []
    h1 = model[0].register_forward_hook(lambda m, i, o: calls.append("fwd"))
    h2 = model[1].register_forward_pre_hook(lambda m, i: calls.append("pre"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    param_ids = [id(p) for p in model.parameters()]
    hooks_before = (dict(model[0]._forward_hooks), dict(model[1]._forward_pre_hooks))
    e = hwprof.estimate_memory(model, "3x8x8", mode="train", optimizer="adam", batch=2, device="cuda")
    assert e.peak_bytes > 0
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)        # BN running stats included
    assert [id(p) for p in model.parameters()] == param_ids
    assert all(p.device.type == "cpu" for p in model.parameters())
    assert model.training is False and all(not m.training for m in model.modules())
    assert model[4].weight.requires_grad is False and model[0].weight.requires_grad is True
    assert model[0].weight.grad is grad_obj and torch.equal(grad_obj, torch.ones_like(grad_obj))
    assert model[1].weight.grad is None
    assert (dict(model[0]._forward_hooks), dict(model[1]._forward_pre_hooks)) == hooks_before
    assert calls == []                                # the user's hooks never ran on the fake copy
    h1.remove()
    h2.remove()


def test_meta_model() -> None:
    from hwprof.zoo import build
    model, spec = build("lenet5", device="meta")
    e = hwprof.estimate_memory(model, spec, optimizer="sgd", batch=8)
    assert e.components["params"] == 431_080 * 4                           # seed 001's LeNet-5
    assert all(p.device.type == "meta" for p in model.parameters())
