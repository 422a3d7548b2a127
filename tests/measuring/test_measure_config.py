"""One configuration: measure(model, inputs, MeasureConfig, **overrides); the result carries the config it ran."""

from __future__ import annotations

import argparse
import dataclasses

import pytest
import torch
from measure_helpers import FakeClock
from torch import nn

from hwprof.cli.measure import add_arguments, config_of
from hwprof.measuring.records import MeasureConfig
from hwprof.measuring.runner import measure

QUICK = MeasureConfig(device="cpu", budget_s=0.01, warmup=1, min_reps=2, max_reps=2, alloc_trace=False)


def test_the_config_is_what_runs_and_what_the_result_carries() -> None:
    cfg = dataclasses.replace(QUICK, mode="train", optimizer="sgd", batch=3)
    m = measure(nn.Linear(4, 2), "4", cfg, clock=FakeClock(1_000))
    assert m.config == cfg
    assert list(m.phases.index) == ["fwd", "bwd", "step"]   # mode and optimizer came from the config
    assert m.run.batch == 3 and m.timings["fwd"].reps == 2    # batch and max_reps too
    with pytest.raises(dataclasses.FrozenInstanceError):
        m.config.mode = "inference"  # type: ignore[misc]


def test_keyword_arguments_override_the_config_fields() -> None:
    m = measure(nn.Linear(4, 2), "4", QUICK, max_reps=3, min_reps=3, clock=FakeClock(1_000))
    assert m.config == dataclasses.replace(QUICK, max_reps=3, min_reps=3)
    assert m.timings["fwd_nograd"].reps == 3
    assert QUICK.max_reps == 2                                 # the caller's config is not changed


def test_keywords_alone_still_work_and_start_from_the_defaults() -> None:
    m = measure(nn.Linear(4, 2), "4", device="cpu", budget_s=0.01, min_reps=2, max_reps=2, alloc_trace=False)
    assert m.config == MeasureConfig(device="cpu", budget_s=0.01, min_reps=2, max_reps=2, alloc_trace=False)


def test_device_and_dtype_objects_are_stored_by_name() -> None:
    m = measure(nn.Linear(4, 2), "4", QUICK, device=torch.device("cpu"), dtype=torch.float64)
    assert m.config.device == "cpu" and m.config.dtype == "float64" and m.run.dtype == "float64"
    assert MeasureConfig(dtype="bf16").dtype == "bf16"         # names are kept as given


def test_unknown_keyword_and_bad_values_are_refused_before_any_work() -> None:
    with pytest.raises(TypeError, match="unexpected keyword argument 'budget'"):
        measure(nn.Linear(2, 2), "2", budget=0.1)
    with pytest.raises(ValueError, match="unknown optimizer 'lion'"):
        measure(nn.Linear(2, 2), "2", QUICK, mode="train", optimizer="lion")
    with pytest.raises(ValueError, match="needs mode='train'"):
        measure(nn.Linear(2, 2), "2", QUICK, optimizer="adam")


def test_cli_options_become_one_config() -> None:
    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["lenet5", "--mode", "train", "--optimizer", "adam", "--per-layer", "--depth", "2",
                         "--budget", "0.5", "--warmup", "2", "--threads", "1", "--dtype", "bf16", "--batch", "4"])
    assert config_of(args) == MeasureConfig(mode="train", optimizer="adam", per_layer=True, depth=2, budget_s=0.5,
                                            warmup=2, threads=1, dtype="bf16", batch=4)
