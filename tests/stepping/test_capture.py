"""hwprof.capture around the user's own loop: what the loop computes is unchanged, the chosen steps are
counted, timed and hooked, step boundaries follow the optimizers (or cap.step())."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from step_scenarios import CEILINGS
from torch import nn

import hwprof
from hwprof.capturing import parse_steps, role_plan
from hwprof.stepping.snapshot import hook_counts


def _loop(steps: int) -> list[float]:
    """A training loop as users write it (fresh seeded model, SGD with momentum, a scheduler, clipping,
    dropout drawing from the RNG), its losses as Python floats."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Dropout(0.2),
                          nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.StepLR(opt, 2)
    losses = []
    for _ in range(steps):
        x, y = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        losses.append(loss.item())
    return losses


def test_the_loop_computes_exactly_what_it_computes_without_hwprof() -> None:
    plain = _loop(8)
    with hwprof.capture("2:7", ceilings=CEILINGS) as cap:   # counted, timed, hooked, profiled, timed
        captured = _loop(8)
    assert captured == plain                                # bit-identical losses, every step
    assert cap.profile is not None and cap.steps_seen == 8
    assert cap.missing is None


def test_the_captured_steps_make_a_profile() -> None:
    with hwprof.capture("1:5", ceilings=CEILINGS) as cap:
        _loop(6)
    p = cap.profile
    assert p is not None and p.config["kind"] == "step"
    # the counted step: conv 2*8*3*3*3*8*8*4 = 110,592 MACs... forward + backward counted, one step
    conv = p.counts.ops[(p.counts.ops["module"] == "model.0") & (p.counts.ops["phase"] == "fwd")]
    assert conv["macs"].sum() == 8 * 3 * 3 * 3 * 8 * 8 * 4
    assert (p.counts.ops["phase"] == "opt").any() and (p.counts.ops["phase"] == "bwd").any()
    # 1:5 -> step 1 counted, 2 timed, 3 hooked (paired with 2), 4 profiled
    assert p.measurement.timings["whole_step"].reps == 1
    assert p.measurement.layer_sum["step_pairs"] == 1
    assert p.ops["time_s"].notna().any() and p.measurement.memory_record.alloc_trace is not None
    assert {"model.0", "model.1", "model.6"} <= set(p.layers.index)   # named by the loop's own variable


def test_steps_outside_the_range_carry_no_hook() -> None:
    seen = []

    class Spy(nn.Module):
        """Records, at each step, torch's global module pre-hooks and whether a dispatch mode is active."""

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            from torch.nn.modules import module as mm
            from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

            seen.append((len(mm._global_forward_pre_hooks), bool(_get_current_dispatch_mode_stack())))
            return x

    spy = Spy()
    base = hook_counts(spy)["_global_forward_pre_hooks"]
    model = nn.Linear(4, 4)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with hwprof.capture("2:4", ceilings=CEILINGS):
        for _ in range(6):
            opt.zero_grad()
            model(spy(torch.randn(2, 4))).sum().backward()
            opt.step()
    hooks = [h for h, _ in seen]
    modes = [m for _, m in seen]
    # 2:4 -> step 2 counted (module hooks and the dispatch mode), step 3 timed (boundary marks only);
    # steps 0, 1, 4 and 5 run as without hwprof
    assert hooks == [base, base, hooks[2], base, base, base] and hooks[2] > base
    assert modes == [False, False, True, False, False, False]


def test_two_optimizers_end_a_step_after_the_last_of_them() -> None:
    torch.manual_seed(0)
    g, d = nn.Linear(4, 4), nn.Linear(4, 1)
    og, od = torch.optim.Adam(g.parameters()), torch.optim.Adam(d.parameters())
    with hwprof.capture("1:3", ceilings=CEILINGS) as cap:
        for _ in range(4):
            z = torch.randn(8, 4)
            od.zero_grad()
            d(g(z).detach()).mean().backward()
            od.step()
            og.zero_grad()
            (-d(g(z)).mean()).backward()
            og.step()
    assert cap.steps_seen == 4                 # four steps, not eight optimizer steps
    p = cap.profile
    assert p is not None
    opt_ops = p.counts.ops[p.counts.ops["phase"] == "opt"]
    # both Adams stepped inside the counted step: 2 parameters each, every one updated
    assert len(opt_ops) and p.counts.totals["flops_opt"] > 0
    assert {"g", "d"} <= {i.split(".")[0] for i in p.layers.index}


def test_explicit_steps_for_a_loop_without_an_optimizer() -> None:
    model = nn.Linear(8, 8)
    with hwprof.capture("1:3", ceilings=CEILINGS) as cap:
        for _ in range(4):
            with torch.no_grad():
                model(torch.randn(4, 8))
            cap.step()
    assert cap.steps_seen == 4 and cap.profile is not None
    assert cap.profile.counts.totals["flops_fwd"] == 2 * 4 * 8 * 8   # one Linear forward: 2 * N * in * out


def test_a_loop_that_stops_early_says_how_far_it_got() -> None:
    with hwprof.capture("3:6", ceilings=CEILINGS) as cap:
        _loop(2)
    assert cap.profile is None and cap.steps_seen == 2
    assert cap.missing is not None and "ran 2 step(s)" in cap.missing


def test_an_exception_in_the_loop_propagates_and_the_profile_is_kept() -> None:
    with pytest.raises(RuntimeError, match="after"):
        with hwprof.capture("1:3", ceilings=CEILINGS) as cap:
            _loop(4)
            raise RuntimeError("the loop failed after its steps")
    assert cap.profile is not None


@pytest.mark.parametrize(("text", "expected"), [("3:6", range(3, 6)), ("5", range(5, 6)), (":2", range(0, 2)),
                                                 (7, range(7, 8)), (range(1, 4), range(1, 4))])
def test_parse_steps(text: object, expected: range) -> None:
    assert parse_steps(text) == expected  # type: ignore[arg-type]


@pytest.mark.parametrize("bad", ["6:3", "3:3", "-1:2", "a:b", "３:６", "1:2:3", "", 2.5, True])
def test_parse_steps_refuses(bad: object) -> None:
    with pytest.raises(ValueError, match="steps"):
        parse_steps(bad)  # type: ignore[arg-type]


def test_role_plan() -> None:
    assert role_plan(3) == ["count", "time", "layers"]
    assert role_plan(4) == ["count", "time", "layers", "ops"]
    assert role_plan(8) == ["count", "time", "layers", "ops", "time", "layers", "time", "layers"]
