"""The parts of the step machinery: what a step reaches, the names of its layers, the snapshot that puts it
back, backward attribution as calls end, the split of a hooked step on a fake clock."""

from __future__ import annotations

import functools
import random

import torch
from torch import nn

from hwprof.measuring.timers import StepTimer
from hwprof.modules import ModuleCalls
from hwprof.stepping.recorder import StepRecorder, schedulers_of
from hwprof.stepping.snapshot import OptimizerSnapshot, StepSnapshot
from hwprof.stepping.targets import StepModels, build_root, name_roots, reachable_objects
from hwprof.stepping.unit import prepare_step

TEACHER = nn.Linear(3, 3)


def _uses_teacher(x: torch.Tensor) -> torch.Tensor:
    return TEACHER(x)


def test_reachable_objects_follow_arguments_closures_globals_partials_and_self() -> None:
    student, opt_model = nn.Linear(3, 3), nn.Linear(2, 2)
    opt = torch.optim.SGD(opt_model.parameters(), lr=0.1)

    def step(model: nn.Module, batch: torch.Tensor) -> None:
        _uses_teacher(model(batch))      # a global function that uses a global module: two levels
        opt.step()                       # a closure cell

    found = {name: obj for name, obj in reachable_objects(step, (student, torch.ones(1, 3))).values()}
    assert found["model"] is student and found["opt"] is opt and found["TEACHER"] is TEACHER

    class Trainer:
        def __init__(self) -> None:
            self.generator, self.others = nn.Linear(1, 1), [nn.Linear(1, 1)]

        def step(self) -> None: ...

    t = Trainer()
    found = {name: obj for name, obj in reachable_objects(t.step).values()}
    assert found["generator"] is t.generator and found["others0"] is t.others[0]
    part = functools.partial(step, student)
    assert any(obj is student for _, obj in reachable_objects(part).values())


def test_names_of_roots_and_the_one_tree() -> None:
    a, b, c = nn.Linear(1, 1), nn.Linear(1, 1), nn.Linear(1, 1)
    static = {id(a): ("gen", a)}
    named = name_roots([a, b, c], static)
    assert list(named) == ["gen", "Linear", "Linear_1"] and named["Linear_1"] is c
    root = build_root(named)
    assert isinstance(root, StepModels) and [n for n, _ in root.named_children()] == ["gen", "Linear", "Linear_1"]
    assert build_root({"model": a}) is a                  # one root: its own paths
    assert list(name_roots([a, b], {}, {"D": b, "G": a})) == ["G", "D"]


def test_step_snapshot_puts_back_modules_optimizers_schedulers_and_rngs() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1, gamma=0.5)
    model(torch.randn(8, 4)).sum().backward()
    opt.step()                                            # state exists before the snapshot
    exp_avg = opt.state[model[0].weight]["exp_avg"]
    grad = model[0].weight.grad
    before = ({k: v.clone() for k, v in model.state_dict().items()}, grad.clone(), exp_avg.clone(),
              opt.param_groups[0]["lr"], sched.state_dict(), torch.get_rng_state(), random.getstate())
    snap = StepSnapshot()
    snap.add([model, opt, sched])
    for _ in range(3):                                    # train: every piece of state moves
        model(torch.randn(8, 4)).sum().backward()
        opt.step()
        sched.step()
        random.random()
    snap.restore()
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before[0].items())
    assert model[0].weight.grad is grad and torch.equal(grad, before[1])                  # same object, same values
    assert opt.state[model[0].weight]["exp_avg"] is exp_avg and torch.equal(exp_avg, before[2])
    assert opt.param_groups[0]["lr"] == before[3] and sched.state_dict() == before[4]
    assert torch.equal(torch.get_rng_state(), before[5]) and random.getstate() == before[6]


def test_optimizer_snapshot_drops_state_created_meanwhile() -> None:
    p = nn.Parameter(torch.ones(3))
    opt = torch.optim.Adam([p])
    snap = OptimizerSnapshot.take(opt)                    # no state yet
    p.grad = torch.ones(3)
    opt.step()
    assert len(opt.state) == 1
    snap.restore()
    assert len(opt.state) == 0 and p.grad is None and torch.equal(p.detach(), torch.ones(3))


def test_recorder_finds_roots_optimizers_and_their_scheduler() -> None:
    enc, head = nn.Linear(2, 2), nn.Linear(2, 2)
    wrapper = nn.Sequential(enc, head)
    opt = torch.optim.SGD(wrapper.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.StepLR(opt, 1)
    with StepRecorder() as rec:
        wrapper(torch.ones(1, 2)).sum().backward()
        head(torch.ones(1, 2))                            # a submodule called on its own later
        opt.step()
    assert rec.outermost() == [wrapper] and rec.optimizers == [opt] and rec.schedulers == [sched]
    assert schedulers_of(opt) == [sched]


def test_a_step_that_calls_submodules_apart_is_named_by_their_holder() -> None:
    model = nn.ModuleDict({"encoder": nn.Linear(2, 2), "head": nn.Linear(2, 1)})

    def step() -> None:
        model["head"](model["encoder"](torch.ones(1, 2)))

    s = prepare_step(step)
    s.restore()
    assert s.root is model and {"encoder", "head"} <= {n for n, _ in s.root.named_modules()}


def test_claims_at_exit_give_the_same_owners_as_the_walk_from_the_loss() -> None:
    """Attribution by creation, as each call ends (for a step, whose loss hwprof never holds) against the one
    walk from the loss after the forward (for hwprof's own model step): the same owner for every node."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 8), nn.Sequential(nn.ReLU(), nn.Linear(8, 8)), nn.Linear(8, 2))

    class Claims(ModuleCalls):
        def __init__(self, m: nn.Module) -> None:
            super().__init__(m, claim_on_exit=True)
            self.got: dict[int, str] = {}

        def on_claim(self, node: object, frame: object) -> None:
            self.got[id(node)] = frame.path  # type: ignore[attr-defined]

    claims = Claims(model)
    with claims:
        loss = model(torch.randn(3, 4)).sum()
    walk = ModuleCalls(model)
    with walk:
        loss2 = model(torch.randn(3, 4)).sum()
    by_exit = sorted(claims.got.values())
    by_walk = sorted(f.path for _, f in walk.owned_nodes([loss2]))
    assert by_exit == by_walk and "1.1" in by_exit and "" not in by_exit     # the loss's sum belongs to no call
    del loss


class _Clock:
    """A clock that moves 1 ms every time it is read."""

    def __init__(self) -> None:
        self.t = 0

    def now_ns(self) -> int:
        self.t += 1_000_000
        return self.t


def test_step_timer_splits_a_hooked_step_into_its_parts() -> None:
    model = nn.Sequential(nn.Linear(2, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    timer = StepTimer(model, clock=_Clock())
    with timer:
        timer.reset()
        start = timer.mark()                          # t = 1 ms
        model(torch.ones(1, 2)).sum().backward()      # forward markers 2, 3 (the root and its child nest)
        opt.step()                                    # optimizer markers
        end = timer.mark()
        timer.collect()
        split = timer.split(start, end)
    # every part is a whole number of 1 ms clock reads, and the four parts make up the hooked step
    assert split["hooked_s"] == (end - start) * 1e-9
    parts = split["fwd_s"] + split["bwd_s"] + split["optimizer_s"] + split["not_owned_s"]
    assert abs(parts - split["hooked_s"]) < 1e-12
    assert split["fwd_s"] > 0 and split["bwd_s"] > 0 and split["optimizer_s"] == 1e-3
