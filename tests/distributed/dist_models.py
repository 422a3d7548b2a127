"""Models for the torchrun tests, built through ``hwprof``'s ``package.module:factory`` source
(``tests/distributed`` is put on ``PYTHONPATH`` of the launched ranks)."""

from __future__ import annotations

import os
import time

import torch
from torch import nn

# parameter shapes are even, so that FSDP2 shards them on 2 ranks without padding
IN, HIDDEN, OUT = 16, 32, 8
PARAM_BYTES = 4 * (IN * HIDDEN + HIDDEN + HIDDEN * HIDDEN + HIDDEN + HIDDEN * OUT + OUT)   # 7456 B


class TinyMLP(nn.Module):
    """Three linear blocks in an ``nn.Sequential`` (FSDP2 shards each, then the root)."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(nn.Sequential(nn.Linear(IN, HIDDEN), nn.ReLU()),
                                    nn.Sequential(nn.Linear(HIDDEN, HIDDEN), nn.ReLU()), nn.Linear(HIDDEN, OUT))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class _Faulty(TinyMLP):
    """Rank 1 fails in its forward number ``at`` (counted from 1): ``how`` is "die" (the process exits at once,
    as a crash would) or "hang" (it sleeps far longer than the test's process-group timeout)."""

    def __init__(self, how: str, at: int = 3) -> None:
        super().__init__()
        self.how, self.at, self.calls = how, at, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        if os.environ.get("RANK") == "1" and self.calls == self.at:
            if self.how == "die":
                os._exit(17)
            time.sleep(600)
        return super().forward(x)


def tiny_mlp() -> nn.Module:
    torch.manual_seed(0)
    return TinyMLP()


def dies_on_rank1() -> nn.Module:
    return _Faulty("die")


def hangs_on_rank1() -> nn.Module:
    return _Faulty("hang")
