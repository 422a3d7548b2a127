"""Per-layer pass: rows for every module; every self and inclusive time, forward and backward, equal to a
hand derivation on modules that take scripted times (measure_helpers.TimedNet)."""

from __future__ import annotations

import math

import pytest
import torch
from measure_helpers import MS_NS, BranchNet, FakeClock, Timed, TimedNet, TinyNet
from torch import nn

from hwprof.measuring.runner import LAYER_COLUMNS, measure
from hwprof.measuring.timers import LayerTimer


def run(model: nn.Module, clock: FakeClock, mode: str, **kw):  # type: ignore[no-untyped-def]
    return measure(model, "3x8x8", device="cpu", mode=mode, per_layer=True, clock=clock, budget_s=0.001,
                   warmup=1, min_reps=3, max_reps=5, layer_reps=3, **kw)


@pytest.mark.parametrize("mode", ["inference", "train"])
def test_rows_for_every_module_and_self_sums_to_root(tiny_net: TinyNet, fake_clock: FakeClock, mode: str) -> None:
    m = run(tiny_net, fake_clock, mode)
    paths = [p for p, _ in tiny_net.named_modules()]
    assert list(m.layers.index) == paths
    assert set(LAYER_COLUMNS) <= set(m.layers.columns)
    assert (m.layers["calls"] >= 1).all()
    assert (m.layers["fwd_s"] >= 0).all()
    # a leaf's self time is its inclusive time
    leaves = m.layers[m.layers["is_leaf"]]
    assert (leaves["fwd_s"] == leaves["fwd_incl_s"]).all()
    assert m.layers.loc["blocks.0", "type"] == "Block"
    if mode == "train":
        assert m.layers["bwd_s"].notna().all()
        assert (m.layers["bwd_s"] >= 0).all()
        # every leaf that has parameters or inputs needing grad has backward work of its own
        assert (m.layers.loc[["stem.0", "blocks.0.conv", "fc"], "bwd_s"] > 0).all()
        assert m.layer_sum["bwd_layer_sum_s"] == pytest.approx(m.layers["bwd_s"].sum())
    else:
        assert m.layers["bwd_s"].isna().all()
        assert m.layer_sum["bwd_whole_s"] is None

MS = 1e-3
# TimedNet's hand derivation (measure_helpers.TimedNet), seconds: fwd_s, fwd_incl_s, bwd_s, bwd_incl_s
TIMED = {"": (0, 11 * MS, 0, 28 * MS), "a": (2 * MS, 2 * MS, 7 * MS, 7 * MS),
         "inner": (5 * MS, 9 * MS, 11 * MS, 21 * MS), "inner.c": (1 * MS, 1 * MS, 4 * MS, 4 * MS),
         "inner.d": (3 * MS, 3 * MS, 6 * MS, 6 * MS)}
TIME_COLUMNS = ["fwd_s", "fwd_incl_s", "bwd_s", "bwd_incl_s"]


def _times(m) -> dict[str, tuple[float, ...]]:  # type: ignore[no-untyped-def]
    return {p: tuple(pytest.approx(v, abs=1e-12) for v in row) for p, row in
            zip(m.layers.index, m.layers[TIME_COLUMNS].itertuples(index=False), strict=True)}


def test_scripted_self_and_inclusive_times_forward_and_backward() -> None:
    clock = FakeClock(step_ns=0)        # time moves only inside the modules
    m = measure(TimedNet(clock), "4", device="cpu", mode="train", per_layer=True, clock=clock, budget_s=0.001,
                warmup=1, min_reps=3, max_reps=3, layer_reps=3)
    assert _times(m) == TIMED
    assert list(m.layers["calls"]) == [1] * 5
    assert m.phases.loc["fwd", "median_s"] == pytest.approx(11 * MS)
    assert m.phases.loc["bwd", "median_s"] == pytest.approx(28 * MS)
    s = m.layer_sum   # the self times add up to the whole model here because nothing runs outside a module
    assert (s["fwd_layer_sum_s"], s["fwd_whole_s"], s["bwd_layer_sum_s"], s["bwd_whole_s"]) == pytest.approx(
        (11 * MS, 11 * MS, 28 * MS, 28 * MS))
    assert s["fwd_ratio"] == pytest.approx(1.0) and s["bwd_paired_ratio"] == pytest.approx(1.0)
    inference = measure(TimedNet(clock), "4", device="cpu", per_layer=True, clock=clock, budget_s=0.001, warmup=1,
                        min_reps=3, max_reps=3, layer_reps=3)
    assert {p: row[:2] for p, row in _times(inference).items()} == {p: row[:2] for p, row in TIMED.items()}
    assert inference.layers["bwd_s"].isna().all()


class Busy(nn.Module):
    """Advances the scripted clock by ``ns`` when called: a module that 'takes' ns."""

    def __init__(self, clock: FakeClock, ns: int) -> None:
        super().__init__()
        self.clock, self.ns = clock, ns

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.advance(self.ns)
        return x * 1.0


class Residual(nn.Module):
    def __init__(self, clock: FakeClock) -> None:
        super().__init__()
        self.clock = clock
        self.a = Busy(clock, 2_000_000)
        self.b = Busy(clock, 3_000_000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        self.clock.advance(5_000_000)   # stands for the residual add written in forward
        return self.b(y) + x


def test_parent_self_time_holds_what_runs_between_children() -> None:
    clock = FakeClock(step_ns=0)        # time moves only inside the modules
    model = Residual(clock)
    m = measure(model, "4", device="cpu", per_layer=True, clock=clock, budget_s=0.001, warmup=0,
                min_reps=2, max_reps=2, layer_reps=2)
    assert m.layers.loc["a", "fwd_s"] == pytest.approx(0.002)
    assert m.layers.loc["b", "fwd_s"] == pytest.approx(0.003)
    assert m.layers.loc["", "fwd_s"] == pytest.approx(0.005)
    assert m.layers.loc["", "fwd_incl_s"] == pytest.approx(0.010)
    assert m.phases.loc["fwd_nograd", "median_s"] == pytest.approx(0.010)
    assert m.layer_sum["fwd_ratio"] == pytest.approx(1.0)


def test_sequential_has_no_backward_self_time(tiny_net: TinyNet) -> None:
    m = run(tiny_net, FakeClock(step_ns=1_000), "train")
    assert m.layers.loc["blocks", "bwd_s"] == 0   # a Sequential creates no autograd node itself
    assert m.layers.loc["blocks.0", "bwd_s"] > 0  # the Block's add does


def test_depth_limits_rows(tiny_net: TinyNet, fake_clock: FakeClock) -> None:
    m = run(tiny_net, fake_clock, "train", depth=1)
    assert list(m.layers.index) == ["", "stem", "blocks", "pool", "fc"]


def test_depth_gives_untracked_children_to_their_tracked_ancestor() -> None:
    clock = FakeClock(step_ns=0)
    m = measure(TimedNet(clock), "4", device="cpu", mode="train", per_layer=True, depth=1, clock=clock,
                budget_s=0.001, warmup=1, min_reps=2, max_reps=2, layer_reps=2)
    # inner's children are below depth 1: their 1 + 3 ms forward and 4 + 6 ms backward are inner's self time
    assert _times(m) == {"": TIMED[""], "a": TIMED["a"], "inner": (9 * MS, 9 * MS, 21 * MS, 21 * MS)}


def test_shared_module_counts_calls() -> None:
    lin = nn.Linear(4, 4)
    model = nn.Sequential(lin, nn.ReLU(), lin)   # the same Linear called twice
    m = measure(model, "4", device="cpu", mode="train", per_layer=True, clock=FakeClock(1_000), budget_s=0.001,
                layer_reps=2, min_reps=2, max_reps=2)
    assert m.layers.loc["0", "calls"] == 2
    clock = FakeClock(step_ns=0)
    busy = Timed(clock, 2 * MS_NS, 3 * MS_NS)
    m = measure(nn.Sequential(busy, Timed(clock, 1 * MS_NS, 1 * MS_NS), busy), "4", device="cpu", mode="train",
                per_layer=True, clock=clock, budget_s=0.001, layer_reps=2, min_reps=2, max_reps=2)
    # the shared module's two calls add up: 2 x 2 ms forward, 2 x 3 ms backward; the root holds 5 + 7 ms
    assert m.layers.loc["0", "calls"] == 2 and m.layers.loc["1", "calls"] == 1
    assert _times(m) == {"": (0, 5 * MS, 0, 7 * MS), "0": (4 * MS, 4 * MS, 6 * MS, 6 * MS),
                         "1": (1 * MS, 1 * MS, 1 * MS, 1 * MS)}


def test_real_clock_backward_self_times_are_non_negative_with_branches() -> None:
    m = measure(BranchNet(), "3x16x16", batch=2, device="cpu", mode="train", per_layer=True, budget_s=0.01,
                layer_reps=3, min_reps=2, max_reps=2, warmup=1)
    assert (m.layers["bwd_s"] >= 0).all()
    assert (m.layers["fwd_s"] >= 0).all()
    assert (m.layers.loc[["layer1.downsample.0", "layer1.conv1", "layer2.conv2"], "bwd_s"] > 0).all()
    # the downsample branch's backward is not stretched over the main branch's
    assert m.layers.loc["layer1.downsample", "bwd_incl_s"] < m.layers.loc["layer1", "bwd_incl_s"]


def test_global_hooks_keep_transformer_fast_path_and_are_removed() -> None:
    from torch.nn.modules import module as mm
    layer = nn.TransformerEncoderLayer(16, 2, 32, batch_first=True).eval()
    before = (len(mm._global_forward_hooks), len(mm._global_forward_pre_hooks))
    with LayerTimer(layer) as lt, torch.no_grad():
        layer(torch.randn(2, 5, 16))
        rec = lt.collect()
        assert not layer._forward_hooks and not layer._forward_pre_hooks
    assert (len(mm._global_forward_hooks), len(mm._global_forward_pre_hooks)) == before
    assert rec[""]["calls"] == 1
    # the fused path runs the whole layer in one op: its sub-modules are never called
    assert rec["linear1"]["calls"] == 0 and math.isnan(rec["linear1"]["fwd_s"])


def test_hooks_removed_when_forward_raises() -> None:
    from torch.nn.modules import module as mm
    before = len(mm._global_forward_hooks) + len(mm._global_forward_pre_hooks)
    model = nn.Sequential(nn.Linear(4, 4), nn.Linear(5, 2))
    with pytest.raises(RuntimeError), LayerTimer(model):
        model(torch.randn(1, 4))
    assert len(mm._global_forward_hooks) + len(mm._global_forward_pre_hooks) == before
