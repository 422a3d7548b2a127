"""Overhead of hwprof's per-layer hooks: whole-model forward with and without them (CPU, small model).

Run: ``pytest bench/test_hook_overhead.py --benchmark-only``. The two results differ by what the
global forward hooks cost: two clock reads and two sequence-number peeks per module call, plus
``_call_impl``'s slow path (hooks present) for every module.
"""

from __future__ import annotations

import pytest
import torch

from hwprof.measuring.timers import LayerTimer
from hwprof.zoo import MobileNetV1


@pytest.fixture(scope="module")
def model_input() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return MobileNetV1(width=0.25, num_classes=10).eval(), torch.randn(1, 3, 64, 64)


def test_forward_without_hooks(benchmark, model_input) -> None:  # type: ignore[no-untyped-def]
    model, x = model_input
    with torch.no_grad():
        benchmark.pedantic(model, args=(x,), rounds=100, iterations=1, warmup_rounds=5)


def test_forward_with_per_layer_hooks(benchmark, model_input) -> None:  # type: ignore[no-untyped-def]
    model, x = model_input
    with LayerTimer(model) as lt, torch.no_grad():
        benchmark.pedantic(model, args=(x,), setup=lt.reset, rounds=100, iterations=1, warmup_rounds=5)
        assert lt.collect()[""]["calls"] == 1


def test_train_step_with_per_layer_hooks(benchmark, model_input) -> None:  # type: ignore[no-untyped-def]
    model, x = model_input
    model.train()
    try:
        with LayerTimer(model, backward=True) as lt:
            def step() -> None:
                lt.reset()
                loss = model(x).sum()
                lt.prepare_backward(loss)
                loss.backward()
            benchmark.pedantic(step, rounds=30, iterations=1, warmup_rounds=2)
            assert lt.collect()["fc"]["bwd_s"] > 0
    finally:
        model.eval()
        model.zero_grad(set_to_none=True)
