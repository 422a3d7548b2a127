"""The user's model is left exactly as it was: values, flags, grads (same objects), hooks, attributes, RNG."""

from __future__ import annotations

import pytest
import torch
from measure_helpers import FakeClock, TinyNet, assert_same, prepared_model, snapshot
from torch import nn

from hwprof.measuring.runner import measure
from hwprof.stepping.snapshot import preserved_state


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
