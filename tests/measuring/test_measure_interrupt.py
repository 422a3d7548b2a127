"""Ctrl-C inside measure(): a KeyboardInterrupt raised from inside a forward propagates as itself and leaves
the model, the thread count, the RNG and torch's global hooks as they were."""

from __future__ import annotations

import pytest
import torch
from measure_helpers import TinyNet, assert_same, prepared_model, snapshot
from torch import nn
from torch.nn.modules import module as torch_module

from hwprof.measuring.runner import measure

W, R, PAIRS = 1, 2, 2


def global_hooks() -> int:
    return len(torch_module._global_forward_pre_hooks) + len(torch_module._global_forward_hooks)


class Trap(nn.Module):
    """Identity that raises KeyboardInterrupt on its ``at``-th call, noting what was in force then."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.at, self.calls = at, 0
        self.seen: dict[str, int] = {}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if self.calls == self.at:
            self.seen = {"threads": torch.get_num_threads(), "global_hooks": global_hooks()}
            raise KeyboardInterrupt
        return x


class TrapNet(TinyNet):
    """TinyNet with a Trap after its blocks: interrupted there, a forward has already moved BatchNorm stats."""

    def __init__(self, at: int) -> None:
        super().__init__()
        self.trap = Trap(at)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.trap(self.blocks(self.stem(x)))), 1))


# train + adam, W warm-up and R timed reps per phase: forwards 1 (first), 2-4 (fwd), 5-7 (bwd setups),
# 8-10 (step setups), 11-12 (allocator trace), then per pair an unhooked and a hooked one: 13-14 (warm-up pair), ...
WHERE = {3: "a timed fwd repetition", 9: "the step phase's setup", 14: "a hooked per-layer repetition",
         15: "an unhooked per-layer repetition"}


@pytest.mark.parametrize("at", sorted(WHERE))
def test_ctrl_c_inside_a_forward_leaves_everything_as_found(at: int) -> None:
    model, sentinels = prepared_model(TrapNet(at))
    before = snapshot(model)
    threads = torch.get_num_threads()
    hooks = global_hooks()
    with pytest.raises(KeyboardInterrupt):
        measure(model, "3x8x8", batch=2, device="cpu", mode="train", optimizer="adam", per_layer=True,
                threads=threads + 1, warmup=W, min_reps=R, max_reps=R, budget_s=1e6, layer_reps=PAIRS)
    seen = model.trap.seen
    assert seen["threads"] == threads + 1                          # the run had changed the thread count...
    assert (seen["global_hooks"] > hooks) == (at == 14), WHERE[at]  # ...and, per layer, hooked the model
    assert_same(model, before)                                     # values, flags, grad objects, hooks, RNG
    for name, p in model.named_parameters():
        assert p.grad is sentinels.get(name)
        if p.grad is not None:
            assert torch.all(p.grad == 7.0)
    assert torch.get_num_threads() == threads and global_hooks() == hooks and torch.is_grad_enabled()
