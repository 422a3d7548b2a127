"""Per-op times: walking the profiler's event tree (synthetic events) and a real CPU pass."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from hwprof.measuring.op_times import dispatched_ops, is_composite_implicit, profile_ops


@dataclass
class _Range:
    start: int


@dataclass
class Ev:
    """A stand-in for torch.profiler's FunctionEvent: name, children, times in microseconds."""

    name: str
    start: int
    cpu_time_total: float = 0.0
    device_time_total: float = 0.0
    cpu_children: list = field(default_factory=list)

    @property
    def time_range(self) -> _Range:
        return _Range(self.start)


def test_walk_descends_through_composites_and_skips_views() -> None:
    roots = [
        # aten::linear is CompositeImplicitAutograd: the counter sees its addmm (t is a view)
        Ev("aten::linear", 0, 50.0, cpu_children=[Ev("aten::t", 1, 2.0), Ev("aten::addmm", 2, 40.0, 7.0)]),
        # relu has a kernel: emitted as is, its internal clamp_min is hidden
        Ev("aten::relu", 10, 5.0, cpu_children=[Ev("aten::clamp_min", 11, 4.0)]),
        Ev("autograd::engine::evaluate_function: AddmmBackward0", 20, 30.0, cpu_children=[
            Ev("AddmmBackward0", 21, 29.0, cpu_children=[Ev("aten::mm", 22, 12.0), Ev("aten::mm", 23, 11.0)])]),
    ]
    got = dispatched_ops(roots, use_device_time=False)
    assert [(p, o) for p, o, _ in got] == [("fwd", "aten.addmm"), ("fwd", "aten.relu"), ("bwd", "aten.mm"), ("bwd", "aten.mm")]
    assert [round(t * 1e6, 9) for _, _, t in got] == [40.0, 5.0, 12.0, 11.0]  # microseconds -> seconds
    # on CUDA the kernels' time is used
    assert [round(t * 1e6, 9) for _, _, t in dispatched_ops(roots[:1], use_device_time=True)] == [7.0]


def test_composite_detection() -> None:
    assert is_composite_implicit("aten::linear") and is_composite_implicit("aten::batch_norm")
    assert is_composite_implicit("aten::flatten")  # no default overload: judged by its overloads
    assert not is_composite_implicit("aten::native_batch_norm")  # a decomposition exists, and a CPU kernel
    assert not is_composite_implicit("aten::addmm") and not is_composite_implicit("aten::no_such_op")


def test_profile_ops_on_cpu_matches_the_counted_sequence() -> None:
    import hwprof

    m = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4)).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ops = profile_ops(lambda: m(x), torch.device("cpu"), reps=2)
    counted = hwprof.count(m, x, backward=False).ops
    assert list(ops["op"]) == list(counted["op"])
    assert (ops["time_s"] > 0).all() and set(ops["phase"]) == {"fwd"}
