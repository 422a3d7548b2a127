"""Out of memory in each pass: MeasurementError(oom=True) naming the phase, raised after the run's tensors are
gone, with the model restored."""

from __future__ import annotations

import gc
import weakref
from typing import Any

import pytest
import torch
from measure_helpers import TinyNet, assert_same, prepared_model, snapshot
from torch import nn

import hwprof.measuring.runner as runner
from hwprof.errors import InputShapeError, MeasurementError
from hwprof.measuring.runner import measure

W, R = 1, 2


def oom() -> torch.cuda.OutOfMemoryError:
    return torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class OomNet(TinyNet):
    """TinyNet whose ``at``-th forward runs out of memory half-way; keeps weak references to its inputs."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0
        self.inputs: list[weakref.ref[torch.Tensor]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        self.inputs.append(weakref.ref(x))
        y = self.blocks(self.stem(x))
        if self.calls == self.at:
            raise oom()
        return self.fc(torch.flatten(self.pool(y), 1))


# inference, W warm-up and R timed reps: forwards 1 (first), 2-4 (fwd_nograd), 5-6 (allocator trace),
# 7-8 (the per-layer warm-up pair), 9-10 (its one pair), 11-14 (per-op: one warm-up, three profiled)
PHASE_AT = {1: "fwd_nograd", 3: "fwd_nograd", 5: "alloc_trace", 8: "per_layer", 9: "per_layer", 12: "per_op"}


@pytest.mark.parametrize("at", sorted(PHASE_AT))
def test_oom_names_its_phase_and_drops_the_run_tensors_first(monkeypatch: pytest.MonkeyPatch, at: int) -> None:
    model, _ = prepared_model(OomNet(at))
    before = snapshot(model)
    freed: list[bool] = []

    def free(dev: torch.device, **kw: Any) -> None:
        gc.collect()
        freed.append(all(r() is None for r in model.inputs))   # the inputs the run built are gone

    monkeypatch.setattr(runner, "free_device_memory", free)
    with pytest.raises(MeasurementError) as e:
        measure(model, "3x8x8", batch=2, device="cpu", per_layer=True, per_op=True, warmup=W, min_reps=R,
                max_reps=R, budget_s=1e6, layer_reps=1)
    err = e.value
    assert (err.oom, err.phase, err.batch) == (True, PHASE_AT[at], 2)
    assert "out of memory" in str(err) and "Tried to allocate 2.00 GiB" in str(err) and "\n" not in str(err)
    assert freed == [True]
    assert_same(model, before)


class OomStep(torch.optim.SGD):
    def __init__(self, params: Any) -> None:
        super().__init__(params, lr=1e-3)

    def step(self, closure: Any = None) -> None:  # type: ignore[override]
        raise oom()


def test_oom_in_the_optimizer_step_names_the_step_phase() -> None:
    model = nn.Linear(4, 4)
    with pytest.raises(MeasurementError) as e:
        measure(model, "4", batch=3, device="cpu", mode="train", optimizer=OomStep, warmup=W, min_reps=R, max_reps=R)
    assert e.value.oom and e.value.phase == "step" and e.value.batch == 3
    assert model.weight.grad is None and model.training


def test_oom_while_preparing_the_run_names_setup(monkeypatch: pytest.MonkeyPatch) -> None:
    def prepare(*args: Any) -> Any:
        raise oom()

    monkeypatch.setattr(runner, "_prepare_inputs", prepare)
    with pytest.raises(MeasurementError) as e:
        measure(nn.Linear(4, 4), "4", device="cpu")
    assert e.value.oom and e.value.phase == "setup" and e.value.batch == 1   # a spec's default batch


def test_other_errors_pass_unchanged() -> None:
    """An error that is not out-of-memory, raised in a timed repetition, reaches the caller as the very
    exception raised: not a MeasurementError, not re-worded."""
    class FailsLater(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.calls = 0
            self.raised: ZeroDivisionError | None = None

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            if self.calls == 3:              # the first forward (1) and the warm-up (2) pass
                self.raised = ZeroDivisionError("not memory")
                raise self.raised
            return x

    model = FailsLater()
    with pytest.raises(ZeroDivisionError) as e:
        measure(model, "4", device="cpu", warmup=W, min_reps=R, max_reps=R)
    assert e.value is model.raised and str(e.value) == "not memory" and model.calls == 3


def test_an_error_in_the_first_forward_names_the_module_and_is_not_oom() -> None:
    class Broken(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            raise ZeroDivisionError("not memory")

    with pytest.raises(InputShapeError) as e:   # the first forward names the module that failed
        measure(Broken(), "4", device="cpu")
    assert not isinstance(e.value, MeasurementError) and isinstance(e.value.__cause__, ZeroDivisionError)
    assert str(e.value) == "module '<root>' (Broken) failed on input shapes [(1, 4)]: not memory"
