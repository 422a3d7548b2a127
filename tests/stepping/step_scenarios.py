"""Ordinary training steps as users write them, for the profile_step / capture tests.

Each scenario builds fresh modules and optimizers (seeded) and returns a :class:`Scenario`: the
step, its arguments, and the objects whose state must be bit-identical after profiling.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hwprof.hardware.ceilings import Ceilings

CEILINGS = Ceilings("cpu", "test-cpu", torch.__version__, "2026-12-06", "measured",
                    {"fp32": 100e9, "bf16": 400e9}, 20e9)
"""Fixed roofs: the joins in these tests need ceilings, not a measurement of them."""


@dataclass
class Scenario:
    step: Callable[..., Any]
    args: tuple[Any, ...]
    modules: dict[str, nn.Module]
    optimizers: list[torch.optim.Optimizer]
    others: list[Any] = field(default_factory=list)   # schedulers, scalers


def gan(batch: int = 16) -> Scenario:
    """A GAN step under bf16 autocast: D on real and fake, then G through D; two Adams."""
    torch.manual_seed(1)
    gen = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 48))
    disc = nn.Sequential(nn.Linear(48, 64), nn.LeakyReLU(0.2), nn.Linear(64, 1))
    opt_g = torch.optim.Adam(gen.parameters(), lr=2e-4)
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4)
    z, real = torch.randn(batch, 32), torch.randn(batch, 48)

    def gan_step(z: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fake = gen(z)
            loss_d = F.softplus(disc(fake.detach())).mean() + F.softplus(-disc(real)).mean()
        opt_d.zero_grad()
        loss_d.backward()
        opt_d.step()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss_g = F.softplus(-disc(gen(z))).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
        return loss_g.detach()

    return Scenario(gan_step, (z, real), {"gen": gen, "disc": disc}, [opt_g, opt_d])


def distillation(batch: int = 8) -> Scenario:
    """A student trained against a frozen teacher that runs inside the loss function."""
    torch.manual_seed(2)
    teacher = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.ReLU(), nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(),
                            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(16, 10)).eval()
    student = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                            nn.Flatten(), nn.Linear(8, 10))
    opt = torch.optim.SGD(student.parameters(), lr=0.1, momentum=0.9)
    x, y = torch.randn(batch, 3, 16, 16), torch.randint(0, 10, (batch,))

    def distill_loss(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            soft = F.softmax(teacher(x) / 2.0, dim=-1)
        return F.cross_entropy(logits, y) + F.kl_div(F.log_softmax(logits / 2.0, -1), soft, reduction="batchmean")

    def distill_step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        distill_loss(student(x), x, y).backward()
        opt.step()

    # teacher and student live in this closure; the step reaches the teacher only through distill_loss
    return Scenario(distill_step, (x, y), {"teacher": teacher, "student": student}, [opt])


class MaskedNet(nn.Module):
    """A forward taking (x, mask), as many do: the loss is computed outside it."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Linear(16, 32)
        self.block = nn.Sequential(nn.LayerNorm(32), nn.Linear(32, 64), nn.GELU(), nn.Linear(64, 32))
        self.head = nn.Linear(32, 4)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.embed(x)
        h = h + self.block(h)
        return self.head((h * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True))


def accumulation(micro: int = 4, batch: int = 4) -> Scenario:
    """Gradient accumulation over ``micro`` micro-batches, clipping, AdamW and a cosine LR schedule."""
    torch.manual_seed(3)
    net = MaskedNet()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=100)
    xs = torch.randn(micro, batch, 10, 16)
    masks = (torch.rand(micro, batch, 10) > 0.2).float()
    ys = torch.randint(0, 4, (micro, batch))

    def accumulate_step(xs: torch.Tensor, masks: torch.Tensor, ys: torch.Tensor) -> None:
        opt.zero_grad()
        for i in range(xs.shape[0]):
            loss = F.cross_entropy(net(xs[i], masks[i]), ys[i], label_smoothing=0.1) / xs.shape[0]
            loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        sched.step()

    return Scenario(accumulate_step, (xs, masks, ys), {"net": net}, [opt], [sched])


SCENARIOS = {"gan": gan, "distillation": distillation, "accumulation": accumulation}


def state_of(sc: Scenario) -> dict[str, Any]:
    """Everything profiling could change: module state and grads, optimizer and scheduler state, RNGs."""
    return copy.deepcopy({
        "modules": {n: (m.state_dict(), m.training, [p.grad for p in m.parameters()], [id(p) for p in m.parameters()])
                    for n, m in sc.modules.items()},
        "optimizers": [(o.state_dict(), [id(t) for s in o.state.values() for t in s.values()
                                         if isinstance(t, torch.Tensor)]) for o in sc.optimizers],
        "others": [o.state_dict() for o in sc.others],
        "rng": (torch.get_rng_state(), random.getstate()),
    })


def assert_same_state(a: Any, b: Any, where: str = "") -> None:
    """Deep, bit-exact equality of :func:`state_of` results (tensors by ``torch.equal``, dtype included)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for k in a:
            assert_same_state(a[k], b[k], f"{where}.{k}")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_same_state(x, y, f"{where}[{i}]")
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
