"""The user's model is left exactly as it was: values, flags, grads (same objects), hooks, attributes, RNG."""

from __future__ import annotations

import pytest
import torch
from measure_helpers import FakeClock, TinyNet
from torch import nn

from hwprof.measuring.runner import measure
from hwprof.measuring.state import hook_counts, preserved_state


def snapshot(model: nn.Module) -> dict:
    return {
        "state": {k: v.detach().clone() for k, v in model.state_dict().items()},
        "training": {n: m.training for n, m in model.named_modules()},
        "requires_grad": {n: p.requires_grad for n, p in model.named_parameters()},
        "grad_ids": {n: id(p.grad) if p.grad is not None else None for n, p in model.named_parameters()},
        "hooks": hook_counts(model),
        "attrs": {n: sorted(vars(m)) for n, m in model.named_modules()},
        "param_ids": {n: id(p) for n, p in model.named_parameters()},
        "buffer_ids": {n: id(b) for n, b in model.named_buffers()},
        "rng": torch.get_rng_state().clone(),
    }


def assert_same(model: nn.Module, before: dict) -> None:
    after = snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k
    for key in ("training", "requires_grad", "grad_ids", "hooks", "attrs", "param_ids", "buffer_ids"):
        assert after[key] == before[key], key
    assert torch.equal(after["rng"], before["rng"])


def prepared_model() -> tuple[TinyNet, dict[str, torch.Tensor]]:
    model = TinyNet()
    model.train()
    model.blocks[1].bn.eval()                      # mixed training flags
    model.stem[0].weight.requires_grad_(False)     # a frozen parameter
    sentinels = {}
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.grad = torch.full_like(p, 7.0)
            sentinels[name] = p.grad
    model.fc.register_forward_hook(lambda mod, inp, out: None)   # a user hook stays, and only it
    return model, sentinels


def test_train_adam_per_layer_leaves_model_untouched() -> None:
    model, sentinels = prepared_model()
    before = snapshot(model)
    m = measure(model, "3x8x8", batch=2, device="cpu", mode="train", optimizer="adam", per_layer=True,
                budget_s=0.02, warmup=1, min_reps=2, max_reps=3, layer_reps=2)
    assert set(m.phases.index) == {"fwd", "bwd", "step"}
    assert_same(model, before)
    for name, p in model.named_parameters():
        if name in sentinels:
            assert p.grad is sentinels[name]
            assert torch.all(p.grad == 7.0)      # backward never accumulated into the user's grads
        else:
            assert p.grad is None
    assert before["hooks"]["_forward_hooks"] == 1


def test_bn_stats_did_move_inside_and_were_restored() -> None:
    model = TinyNet().train()
    seen = {}

    def spy(mod: nn.Module, inp: object, out: object) -> None:
        seen["nbt"] = int(mod.num_batches_tracked)

    model.stem[1].register_forward_hook(spy)
    measure(model, "3x8x8", batch=2, device="cpu", mode="train", budget_s=0.01, warmup=1, min_reps=2, max_reps=2)
    assert seen["nbt"] > 0                           # the run did update BatchNorm...
    assert int(model.stem[1].num_batches_tracked) == 0   # ...and the user's buffer was restored


def test_state_restored_when_the_run_fails() -> None:
    model, _ = prepared_model()
    before = snapshot(model)
    with pytest.raises(Exception):  # noqa: B017 - any failure must still restore the model
        measure(model, "3x9x9x9", device="cpu", mode="train", optimizer="sgd")
    assert_same(model, before)


def test_copy_path_never_touches_the_original() -> None:
    model, _ = prepared_model()
    before = snapshot(model)
    m = measure(model, "3x8x8", batch=2, device="cpu", mode="train", optimizer="sgd", dtype="fp64",
                channels_last=True, budget_s=0.01, warmup=1, min_reps=2, max_reps=2, clock=FakeClock(1000))
    assert m.run.measured_copy is True
    assert any("deep copy" in n for n in m.notes)
    assert m.run.dtype == "float64"
    assert_same(model, before)
    assert model.fc.weight.dtype == torch.float32


def test_preserved_state_restores_replaced_buffer_objects() -> None:
    bn = nn.BatchNorm1d(3)
    original = bn.running_mean
    with preserved_state(bn):
        bn.running_mean = torch.ones(3)      # a forward that re-binds a buffer
        bn.weight.data.mul_(5)
    assert bn.running_mean is original
    assert torch.equal(bn.running_mean, torch.zeros(3))
    assert torch.equal(bn.weight, torch.ones(3))
