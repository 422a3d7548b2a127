"""Helpers for the measurement tests (imported by name: tests/measure is on sys.path under pytest)."""

from __future__ import annotations

import torch
from torch import nn

from hwprof.stepping.snapshot import hook_counts


class FakeClock:
    """``now_ns()`` returns the current time, then advances it by ``step_ns``; ``advance`` moves it by hand."""

    def __init__(self, step_ns: int = 0) -> None:
        self.t = 0
        self.step_ns = step_ns
        self.reads = 0

    def now_ns(self) -> int:
        t = self.t
        self.t += self.step_ns
        self.reads += 1
        return t

    def advance(self, ns: int) -> None:
        self.t += ns


class Block(nn.Module):
    """conv-bn-relu with a residual add written in forward (its self time)."""

    def __init__(self, c: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(c)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.bn(self.conv(x)) + x)


class TinyNet(nn.Module):
    """stem (Sequential) -> 2 residual blocks (one shared relu inside each) -> pool -> fc. Input 3x8x8."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU())
        self.blocks = nn.Sequential(Block(4), Block(4))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.blocks(self.stem(x))), 1))


class DownBlock(nn.Module):
    """ResNet-style block with a downsample branch: the case where start/end module hooks overlap."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, padding=1, bias=False)
        self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = self.downsample(x)
        return self.relu(self.conv2(self.relu(self.bn1(self.conv1(x)))) + identity)


class BranchNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer1 = DownBlock(3, 8)
        self.layer2 = DownBlock(8, 16)
        self.fc = nn.Linear(16, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.layer2(self.layer1(x)).mean(dim=(2, 3)))


# --------------------------------------------------------------------------- the model left as found
def snapshot(model: nn.Module) -> dict:
    """Everything of ``model`` a measurement could change, and torch's CPU RNG state."""
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
    """``model`` (and the RNG) is as :func:`snapshot` found it: values, flags, grad objects, hooks, attributes."""
    after = snapshot(model)
    assert after["state"].keys() == before["state"].keys()
    for k, v in before["state"].items():
        assert torch.equal(after["state"][k], v), k
    for key in ("training", "requires_grad", "grad_ids", "hooks", "attrs", "param_ids", "buffer_ids"):
        assert after[key] == before[key], key
    assert torch.equal(after["rng"], before["rng"])


def prepared_model(model: TinyNet | None = None) -> tuple[TinyNet, dict[str, torch.Tensor]]:
    """``model`` (default a new TinyNet) with state to lose: mixed training flags, a frozen parameter, a user
    forward hook, and gradients set to 7 (returned by name: the objects that must come back)."""
    model = model if model is not None else TinyNet()
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


# --------------------------------------------------------------------------- scripted module times
class _Tick(torch.autograd.Function):
    """Identity whose backward advances ``clock`` by ``ns``: an autograd node that 'takes' ns."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, clock: FakeClock, ns: int) -> torch.Tensor:  # type: ignore[override]
        ctx.clock, ctx.ns = clock, ns
        return x.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None, None]:  # type: ignore[override]
        ctx.clock.advance(ctx.ns)
        return grad, None, None


class Timed(nn.Module):
    """Takes ``fwd_ns`` of the scripted clock in its forward and ``bwd_ns`` in its backward (one
    node of its own, ``_Tick``; its ``x * w`` node and ``w``'s AccumulateGrad take no time)."""

    def __init__(self, clock: FakeClock, fwd_ns: int, bwd_ns: int) -> None:
        super().__init__()
        self.clock, self.fwd_ns, self.bwd_ns = clock, fwd_ns, bwd_ns
        self.w = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.advance(self.fwd_ns)
        return _Tick.apply(x * self.w, self.clock, self.bwd_ns)


MS_NS = 1_000_000


class TimedPair(nn.Module):
    """c (1 ms forward, 4 ms backward), then 5 ms of its own forward work, then d (3 ms, 6 ms);
    its own backward node takes 11 ms."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.c = Timed(clock, 1 * MS_NS, 4 * MS_NS)
        self.d = Timed(clock, 3 * MS_NS, 6 * MS_NS)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.c(x)
        self.clock.advance(5 * MS_NS)               # work written in this forward: its self time
        return self.d(_Tick.apply(y, self.clock, 11 * MS_NS))


class TimedNet(nn.Module):
    """a (2 ms, 7 ms) then inner (TimedPair). Hand derivation of every time (ms), forward / backward:

    ===========  ======  ==========  ======  ==========
    module       fwd_s   fwd_incl_s  bwd_s   bwd_incl_s
    ===========  ======  ==========  ======  ==========
    a            2       2           7       7
    inner.c      1       1           4       4
    inner.d      3       3           6       6
    inner        5       1+5+3 = 9   11      11+4+6 = 21
    (root) ""    0       2+9 = 11    0       7+21 = 28
    ===========  ======  ==========  ======  ==========

    The whole model: 11 ms forward, 28 ms backward (the loss's own nodes take no time)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.a = Timed(clock, 2 * MS_NS, 7 * MS_NS)
        self.inner = TimedPair(clock)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(self.a(x))
