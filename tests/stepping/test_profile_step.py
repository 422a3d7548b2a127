"""hwprof.profile_step on the steps users write: counted like FlopCounterMode, every module timed and counted,
the step's time against a plain loop, and the user's program left bit-identical."""

from __future__ import annotations

from collections import defaultdict

import pytest
import torch
from step_scenarios import CEILINGS, SCENARIOS, assert_same_state, state_of
from torch.utils.flop_counter import FlopCounterMode

import hwprof

BUDGET_S = 0.2


def _flop_counter_per_op(step, args) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """FlopCounterMode's FLOPs per aten op packet on one run of ``step`` (its "Global" totals)."""
    with FlopCounterMode(display=False) as fc:
        step(*args)
    return {str(op).removeprefix("aten."): int(v) for op, v in fc.get_flop_counts()["Global"].items()}


@pytest.fixture(scope="module", params=list(SCENARIOS))
def profiled(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    sc = SCENARIOS[request.param]()
    before = state_of(sc)
    p = hwprof.profile_step(sc.step, *sc.args, budget_s=BUDGET_S, ceilings=CEILINGS)
    after = state_of(sc)
    return request.param, sc, p, before, after


def test_the_users_program_is_left_bit_identical(profiled) -> None:  # type: ignore[no-untyped-def]
    _, _, _, before, after = profiled
    # parameters, buffers, grads, training flags, parameter identities, optimizer state (values and tensor
    # identities), schedulers and the random generators: as they were before profiling
    assert_same_state(before, after)


def test_flops_equal_flop_counter_mode_on_the_ops_it_covers(profiled) -> None:  # type: ignore[no-untyped-def]
    name, sc, p, _, _ = profiled
    reference = _flop_counter_per_op(sc.step, sc.args)
    for o in sc.optimizers:   # FlopCounterMode's run trained the models: that changes no shape, hence no count
        o.zero_grad()
    ours: dict[str, float] = defaultdict(float)
    for op, macs in zip(p.ops["op"], p.ops["macs"], strict=True):
        ours[op.removeprefix("aten.")] += macs
    assert reference, name
    # FlopCounterMode counts 2 FLOPs per multiply-accumulate of matmuls and convolutions; hwprof's MACs are
    # those multiply-accumulates (its FLOPs add the bias gradient's adds, N*H*W*C_out per convolution_backward,
    # which FlopCounterMode leaves out: docs/CONVENTIONS.md)
    for op, flops in reference.items():
        assert 2 * ours[op] == flops, (name, op, 2 * ours[op], flops)


def test_every_module_that_ran_is_counted_and_timed(profiled) -> None:  # type: ignore[no-untyped-def]
    name, sc, p, _, _ = profiled
    one = len(sc.modules) == 1   # a single root is reported with its own paths, as hwprof.profile reports a model
    leaves = {path if one else f"{root}.{path}" for root, m in sc.modules.items() for path, sub in m.named_modules()
              if path and not list(sub.children())}
    rows = p.layers
    assert leaves <= set(rows.index), (name, leaves - set(rows.index))   # the teacher included
    assert (rows.loc[sorted(leaves), "calls"] > 0).all()
    assert rows.loc[sorted(leaves), "fwd_s"].notna().all()


def test_matmuls_are_recorded_in_the_dtype_autocast_gave_them(profiled) -> None:  # type: ignore[no-untyped-def]
    name, _, p, _, _ = profiled
    mm = p.ops[p.ops["op_class"] == "matmul"]
    assert len(mm)
    if name == "gan":    # every Linear of G and D under bf16 autocast, forward and backward
        assert set(mm["dtype"]) == {"bfloat16"} and set(mm["roof_key"]) == {"bf16"}
        # the parameters stay fp32: Adam's arithmetic on them is fp32 work, held to the fp32 roof
        opt = p.ops[p.ops["phase"] == "opt"]
        assert set(opt["dtype"]) == {"float32"} and set(opt["roof_key"]) == {"fp32"}
    else:
        assert set(mm["dtype"]) == {"float32"}


def test_the_optimizer_is_counted_and_in_the_step_time(profiled) -> None:  # type: ignore[no-untyped-def]
    _, sc, p, _, _ = profiled
    opt_ops = p.counts.ops[p.counts.ops["phase"] == "opt"]
    assert len(opt_ops) and (opt_ops["module"] == "").all()     # optimizer ops: owned by no layer
    assert p.summary["optimizer_in_whole_time"] is True
    assert p.summary["flops_optimizer"] == p.counts.totals["flops_opt"] > 0
    split = p.summary["step_split"]
    assert split["optimizer_s"] > 0 and split["fwd_s"] > 0 and split["bwd_s"] > 0
    parts = split["fwd_s"] + split["bwd_s"] + split["optimizer_s"] + split["not_owned_s"]
    assert parts == pytest.approx(split["hooked_s"])              # the four parts make up the hooked step


def test_saved_and_loaded_step_profile_keeps_its_kind(profiled, tmp_path) -> None:  # type: ignore[no-untyped-def]
    _, _, p, _, _ = profiled
    p.save(tmp_path / "p", html=False)
    q = hwprof.load_profile(tmp_path / "p")
    assert q.config["kind"] == "step" and q.summary["step_time_s"] == p.summary["step_time_s"]
    assert q.summary["flops"] == p.summary["flops"] and list(q.layers.index) == list(p.layers.index)


def test_restore_false_keeps_the_training_done_by_the_repetitions() -> None:
    sc = SCENARIOS["distillation"]()
    w0 = sc.modules["student"][0].weight.detach().clone()
    hwprof.profile_step(sc.step, *sc.args, budget_s=0.05, restore=False, ceilings=CEILINGS)
    assert not torch.equal(w0, sc.modules["student"][0].weight)


def test_models_names_the_layers() -> None:
    sc = SCENARIOS["gan"]()
    p = hwprof.profile_step(sc.step, *sc.args, models={"G": sc.modules["gen"], "D": sc.modules["disc"]},
                            budget_s=0.05, ceilings=CEILINGS)
    assert {"G.0", "G.2", "D.0", "D.2"} <= set(p.layers.index)


def test_a_failing_step_restores_and_raises_unchanged() -> None:
    sc = SCENARIOS["accumulation"]()
    before = state_of(sc)
    calls = []

    def step(*args):  # type: ignore[no-untyped-def]
        calls.append(1)
        sc.step(*args)             # trains once, then fails
        raise KeyError("user bug")

    with pytest.raises(KeyError, match="user bug"):
        hwprof.profile_step(step, *sc.args, ceilings=CEILINGS)
    assert calls == [1]
    assert_same_state(before, state_of(sc))
