"""Public surface of measure(): names, columns, keys, JSON, and hwprof.measure as a callable."""

from __future__ import annotations

import json

import pandas as pd
import torch
from measure_helpers import FakeClock
from torch import nn

import hwprof
import hwprof.counting.counter  # noqa: F401 - importing the engines must not shadow the public functions
import hwprof.measuring.timers  # noqa: F401
from hwprof.measuring.runner import PHASE_COLUMNS, Measurement, measure

MEMORY_KEYS = {"alloc_peak_bytes", "reserved_peak_bytes", "nvml_used_peak_bytes", "nvml_baseline_bytes",
               "nvml_process_bytes", "rss_peak_bytes", "rss_baseline_bytes", "ru_maxrss_bytes"}


def test_public_functions_stay_callable_after_submodule_imports() -> None:
    m = hwprof.measure(nn.Linear(3, 3), "3", device="cpu", budget_s=0.01, min_reps=2, max_reps=2)
    assert isinstance(m, Measurement)
    for name in ("count", "measure", "measure_ceilings", "profile", "estimate_memory"):
        assert callable(getattr(hwprof, name)) and getattr(hwprof, name).__module__.startswith("hwprof."), name


def test_measurement_fields_and_json() -> None:
    m = measure(nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5)), (torch.randn(2, 3),), device="cpu",
                mode="train", optimizer="momentum", l2_flush=True, clock=FakeClock(1_000), budget_s=0.01)
    assert list(m.phases.columns) == list(PHASE_COLUMNS)
    assert list(m.phases.index) == ["fwd", "bwd", "step"]
    assert MEMORY_KEYS <= set(m.memory)
    assert {"alloc_peak_bytes_fwd", "alloc_peak_bytes_bwd", "alloc_peak_bytes_step"} <= set(m.memory)
    assert m.layers.empty and m.layer_sum == {}
    assert m.timings["bwd"].times_s and m.config.optimizer_name == "momentum" and m.run.batch == 2
    assert m.device["torch_version"] == torch.__version__ and m.device["threads"] >= 1
    data = json.loads(json.dumps(m.to_dict()))
    assert data["config"]["l2_flush"] is True
    assert set(data["timings"]) == {"fwd", "bwd", "step"}


def test_user_input_tensors_are_not_modified() -> None:
    x = torch.randn(2, 3)
    before = x.clone()
    measure(nn.Sequential(nn.Linear(3, 3), nn.ReLU(inplace=True)), x, device="cpu", budget_s=0.01,
            min_reps=2, max_reps=2)
    assert torch.equal(x, before)


def test_optimizer_class_and_custom_loss() -> None:
    seen = []

    def loss_fn(out: torch.Tensor) -> torch.Tensor:
        seen.append(out.shape)
        return (out**2).mean()

    m = measure(nn.Linear(3, 1), "3", batch=4, device="cpu", mode="train", optimizer=torch.optim.RMSprop,
                loss_fn=loss_fn, budget_s=0.01, min_reps=2, max_reps=2)
    assert "step" in m.phases.index and seen[0] == torch.Size([4, 1])
    assert m.config.optimizer_name == "RMSprop"


def test_measurement_round_trips_through_json() -> None:
    """to_dict -> JSON -> from_dict gives back the same records (what load_profile relies on)."""
    import json

    from hwprof.measuring.records import Measurement

    model = nn.Sequential(nn.Linear(8, 4), nn.ReLU())
    m = measure(model, "8", batch=2, mode="train", optimizer="sgd", per_layer=True, per_op=True, budget_s=0.01,
                min_reps=2, max_reps=3, layer_reps=2, warmup=1)
    back = Measurement.from_dict(json.loads(json.dumps(m.to_dict())))
    assert back.config == m.config and back.run == m.run and back.math_modes == m.math_modes
    pd.testing.assert_frame_equal(back.phases, m.phases, check_dtype=False)
    pd.testing.assert_frame_equal(back.layers[["fwd_s", "bwd_s"]], m.layers[["fwd_s", "bwd_s"]], check_dtype=False)
    assert list(back.ops["op"]) == list(m.ops["op"]) and back.memory == json.loads(json.dumps(m.memory))
    assert back.timings["bwd"].times_s == m.timings["bwd"].times_s and back.notes == m.notes
