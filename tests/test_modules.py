"""The shared module-call tracker (hwprof.modules): the call stack, and backward attribution by creation."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch import nn
from torch.nn.modules import module as mm

from hwprof.modules import LABEL_KEY, ModuleCalls, backward_module, graph_nodes


class Scale(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 3.0


class Residual(nn.Module):
    """a, then a multiply written in forward, then b, plus the input: the parent owns mul and add."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), Scale()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x) * 2.0) + x


class Aux(nn.Module):
    """Returns its input unchanged and leaves a side result on itself (an auxiliary loss)."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.loss = (x * self.w).pow(2).sum()
        return x


class WithAux(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.aux, self.fc = Aux(), nn.Linear(4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.aux(x)).sum() + self.aux.loss


def _owners(calls: ModuleCalls, root: torch.Tensor) -> dict[str, str]:
    """Node name -> owning path (a node name seen twice keeps the first owner found)."""
    out: dict[str, str] = {}
    for node, frame in calls.owned_nodes([root]):
        out.setdefault(type(node).__name__, frame.path)
    return out


def test_nodes_belong_to_the_call_that_created_them() -> None:
    model = Residual()
    x = torch.randn(2, 4, requires_grad=True)
    with ModuleCalls(model) as calls:
        out = model(x)
    owners = _owners(calls, out.sum())
    # the linear's addmm and its weight's AccumulateGrad are a's; b's multiply is b's; the multiply
    # and add written in Residual.forward are the root's; the loss's sum and the input's
    # AccumulateGrad (no module owns the input) belong to no call
    assert owners["AddmmBackward0"] == "a"
    assert owners["AddBackward0"] == ""
    assert "SumBackward0" not in owners
    by_seq = sorted((n._sequence_nr(), f.path) for n, f in calls.owned_nodes([out])
                    if type(n).__name__ == "MulBackward0")
    assert [p for _, p in by_seq] == ["", "b"]      # x2 in the root first, then b's x3
    params = {id(p): name for name, p in model.named_parameters()}
    accumulate = [(params.get(id(n.variable)), f.path) for n, f in calls.owned_nodes([out])
                  if hasattr(n, "variable")]
    assert sorted(accumulate) == [("a.bias", "a"), ("a.weight", "a")]


def test_a_side_result_belongs_to_the_module_that_computed_it() -> None:
    """The aux loss leaves Aux through an attribute, not its output: it is still Aux's work."""
    model = WithAux()
    with ModuleCalls(model) as calls:
        loss = model(torch.randn(3, 4))
    labelled = calls.label_backward([loss])
    nodes = [n for n in graph_nodes([loss]) if not hasattr(n, "variable")]
    order = [(type(n).__name__, n.metadata.get(LABEL_KEY)) for n in sorted(nodes, key=lambda n: n._sequence_nr())]
    # creation order: Aux's x * w, pow, sum; fc's weight.t() and addmm; the root's sum and add
    assert order == [("MulBackward0", "aux"), ("PowBackward0", "aux"), ("SumBackward0", "aux"),
                     ("TBackward0", "fc"), ("AddmmBackward0", "fc"), ("SumBackward0", ""), ("AddBackward0", "")]
    accumulate = {n.variable.shape: n.metadata.get(LABEL_KEY) for n in graph_nodes([loss]) if hasattr(n, "variable")}
    assert accumulate == {(4,): "aux", (1, 4): "fc", (1,): "fc"}
    assert labelled == 7 + 3


def test_parameter_of_a_module_never_called_goes_to_its_called_ancestor() -> None:
    """nn.MultiheadAttention uses out_proj's weight in F.multi_head_attention_forward without calling
    out_proj: its gradient accumulation is the attention module's."""
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    x = torch.randn(2, 3, 8)
    with ModuleCalls(mha) as calls:
        out, _ = mha(x, x, x)
    paths = {frame.path for node, frame in calls.owned_nodes([out]) if getattr(node, "variable", None)
             is mha.out_proj.weight}
    assert paths == {""}


def test_backward_ops_read_the_label_of_the_running_node() -> None:
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    seen: list[tuple[str, str]] = []

    class Spy(torch.utils._python_dispatch.TorchDispatchMode):
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            seen.append((func.overloadpacket.__name__, backward_module()))
            return func(*args, **(kwargs or {}))

    with ModuleCalls(model) as calls:
        loss = model(torch.randn(3, 4)).sum()
    calls.label_backward([loss])
    with Spy():
        loss.backward()
    modules = {m for op, m in seen if op in ("mm", "threshold_backward")}
    assert modules == {"0", "1", "2"}
    assert backward_module() == ""                  # outside backward


def test_depth_limits_the_tracked_calls() -> None:
    model = nn.Sequential(nn.Sequential(nn.Linear(4, 4), nn.ReLU()), nn.Linear(4, 2))
    with ModuleCalls(model, depth=1) as calls:
        out = model(torch.randn(1, 4))
    assert [f.path for f in calls.frames] == ["", "0", "1"]
    assert calls.tracked("0.1") == "0"
    # the inner Linear's addmm goes to its tracked parent "0"
    assert {f.path for n, f in calls.owned_nodes([out]) if type(n).__name__ == "AddmmBackward0"} == {"0", "1"}


class FirstThatWorks(nn.Module):
    """Returns the first of its children's results that does not raise (a fused kernel with fallbacks)."""

    def __init__(self, *options: nn.Module) -> None:
        super().__init__()
        self.options = nn.ModuleList(options)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for option in self.options[:-1]:
            try:
                return option(x)
            except RuntimeError:
                pass
        return self.options[-1](x)


def test_a_caught_exception_does_not_leave_the_stack_stale() -> None:
    # options.0 expects 5 features and raises on 4; its post-hook never runs
    model = nn.Sequential(FirstThatWorks(nn.Linear(5, 4), nn.Linear(4, 4)), nn.Linear(4, 2))
    ended: list[str] = []

    class Ends(ModuleCalls):
        def on_exit(self, frame: Any, args: Any, output: Any) -> None:
            ended.append(frame.path)

    with Ends(model) as calls:
        model(torch.randn(1, 4))
        # the end of "0" drops the frame options.0 left, and every call that returned ends
        assert calls.stack == []
    assert ended == ["0.options.1", "0", "1", ""]


def test_hooks_are_global_and_removed() -> None:
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True).eval()
    before = (len(mm._global_forward_hooks), len(mm._global_forward_pre_hooks))
    with ModuleCalls(layer) as calls, torch.no_grad():
        layer(torch.randn(2, 5, 16))
        assert not layer._forward_hooks and not layer._forward_pre_hooks
    assert (len(mm._global_forward_hooks), len(mm._global_forward_pre_hooks)) == before
    # the fused fast path ran: the sub-modules were never called
    assert [f.path for f in calls.frames] == [""]
    with pytest.raises(RuntimeError), ModuleCalls(nn.Linear(4, 4)) as failing:
        failing.model(torch.randn(1, 5))
    assert (len(mm._global_forward_hooks), len(mm._global_forward_pre_hooks)) == before
