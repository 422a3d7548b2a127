"""What profiling a user's step costs, and whether its step time is the step's: three checks per step.

    python bench/step_instrumentation.py --out results/steps/cpu-2core-2026-12-06

Steps (``tests/stepping/step_scenarios.py``: a bf16-autocast GAN with two Adams, a distillation
step with its teacher inside the loss, 4-step gradient accumulation with clipping and a cosine
schedule) and a ResNet-18 training step (batch 8, 3x64x64, SGD with momentum):

1. **Outside the captured range** (``hwprof.capture`` with a range the loop never reaches: only the
   optimizer post hook that counts steps is installed): blocks of ``--block`` steps alternate with
   blocks of the same loop unprofiled, ``--rounds`` times; per round the speed ratio is
   unprofiled median / captured median (1.0 = as fast). Criterion: median ratio >= 0.98.
2. **The counted step** (the dispatch mode on the real tensors, module hooks, backward claims,
   optimizer marks) against one step under ``torch.utils.flop_counter.FlopCounterMode``,
   alternating, ``--rounds`` times each. Criterion: median hwprof / FlopCounterMode <= 1.5. The whole
   :func:`hwprof.count_step` (that run, then the CountResult's pandas tables) is reported beside it.
3. **step_time_s** of :func:`hwprof.profile_step` against a plain ``perf_counter`` loop of the same step
   (15 steps right after). Criterion: within a factor of 2.

Alternation cancels a load that drifts between blocks; run it on a quiet machine all the same
(the load average is recorded before and after). Writes ``step_instrumentation.json`` and ``.md``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

import hwprof
from hwprof.device import describe_device
from hwprof.files import write_atomic, write_json_atomic

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests" / "stepping"))
from step_scenarios import CEILINGS, SCENARIOS, Scenario  # noqa: E402

NEVER = range(10**9, 10**9 + 1)   # a captured range no loop reaches
CRITERIA = {"outside_speed": 0.98, "count_over_flop_counter": 1.5, "step_time_band": (0.5, 2.0)}


def resnet_step() -> Scenario:
    from hwprof import zoo

    torch.manual_seed(4)
    model, _ = zoo.build("resnet18")
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 1000, (8,))

    def resnet_train_step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return Scenario(resnet_train_step, (x, y), {"resnet18": model}, [opt])


def _times(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def outside_speed(sc: Scenario, block: int, rounds: int) -> dict[str, Any]:
    """Median over rounds of (unprofiled block median / block median inside a capture that never starts)."""
    run = lambda: sc.step(*sc.args)  # noqa: E731
    _times(run, 3)
    ratios = []
    for _ in range(rounds):
        plain = statistics.median(_times(run, block))
        with hwprof.capture(NEVER, ceilings=CEILINGS):
            captured = statistics.median(_times(run, block))
        ratios.append(plain / captured)
    return {"ratio": statistics.median(ratios), "min": min(ratios), "max": max(ratios), "rounds": rounds}


def count_cost(sc: Scenario, rounds: int) -> dict[str, Any]:
    """Median seconds of one step under hwprof's counter (:class:`hwprof.counting.counter.StepCount`: the
    dispatch mode, module hooks, backward claims and optimizer marks), of the whole
    :func:`hwprof.count_step` (that run, then the CountResult's pandas tables), and of one step under
    FlopCounterMode, alternating. The criterion is on the instrumented run; the tables are a fixed
    cost per count, reported beside it."""
    from torch.optim.optimizer import register_optimizer_step_post_hook, register_optimizer_step_pre_hook

    from hwprof.counting.counter import StepCount, count_step
    from hwprof.stepping.unit import prepare_step

    prepared = prepare_step(sc.step, sc.args, restore=False)
    run, whole, theirs = [], [], []
    for _ in range(rounds):
        sc_ = StepCount(prepared.root)
        hooks = [register_optimizer_step_pre_hook(sc_.opt_enter), register_optimizer_step_post_hook(sc_.opt_leave)]
        t0 = time.perf_counter()
        sc_.begin()
        try:
            prepared.run()
        finally:
            sc_.end()
        run.append(time.perf_counter() - t0)
        for h in hooks:
            h.remove()
        t0 = time.perf_counter()
        count_step(prepared)
        whole.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        with FlopCounterMode(display=False):
            sc.step(*sc.args)
        theirs.append(time.perf_counter() - t0)
    a, w, b = statistics.median(run), statistics.median(whole), statistics.median(theirs)
    return {"hwprof_s": a, "count_step_s": w, "flop_counter_mode_s": b, "ratio": a / b, "ratio_with_tables": w / b,
            "rounds": rounds}


def step_time(sc: Scenario, budget_s: float) -> dict[str, Any]:
    p = hwprof.profile_step(sc.step, *sc.args, budget_s=budget_s, ceilings=CEILINGS)
    _times(lambda: sc.step(*sc.args), 3)
    plain = statistics.median(_times(lambda: sc.step(*sc.args), 15))
    return {"step_time_s": p.summary["step_time_s"], "plain_s": plain, "ratio": p.summary["step_time_s"] / plain,
            "split": p.summary["step_split"]}


def _row(name: str, r: dict[str, Any]) -> str:
    o, c, s = r["outside"], r["count"], r["step_time"]
    lo, hi = CRITERIA["step_time_band"]
    return (f"| {name} | {o['ratio']:.3f} ({o['min']:.3f}-{o['max']:.3f}) | {c['hwprof_s'] * 1e3:.1f} / "
            f"{c['flop_counter_mode_s'] * 1e3:.1f} ms = {c['ratio']:.2f} (with the tables {c['count_step_s'] * 1e3:.1f} ms"
            f" = {c['ratio_with_tables']:.2f}) | {s['step_time_s'] * 1e3:.2f} / "
            f"{s['plain_s'] * 1e3:.2f} ms = {s['ratio']:.2f} | "
            f"{'pass' if o['ratio'] >= CRITERIA['outside_speed'] and c['ratio'] <= CRITERIA['count_over_flop_counter'] and lo <= s['ratio'] <= hi else 'FAIL'} |")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--block", type=int, default=31)
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--only", nargs="*", default=None, help="scenario names (default: all)")
    args = ap.parse_args(argv)
    makers = {**SCENARIOS, "resnet18": resnet_step}
    names = args.only or list(makers)
    load_before = os.getloadavg()[0]
    results = {}
    for name in names:
        sc = makers[name]()
        results[name] = {"outside": outside_speed(sc, args.block, args.rounds), "count": count_cost(sc, args.rounds),
                         "step_time": step_time(sc, args.budget)}
        print(_row(name, results[name]), flush=True)
    meta = {"command": " ".join(["python", *sys.argv]), "torch": torch.__version__, "threads": torch.get_num_threads(),
            "device": describe_device(torch.device("cpu"))["name"], "load_average_before": load_before,
            "load_average_after": os.getloadavg()[0], "criteria": CRITERIA, "date": time.strftime("%Y-%m-%d")}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "step_instrumentation.json", {**meta, "results": results})
    lines = ["# Cost of profiling a user's step", "", f"Command: `{meta['command']}`", "",
             f"{meta['device']}, torch {meta['torch']}, {meta['threads']} threads, load average {load_before:.2f} before, "
             f"{meta['load_average_after']:.2f} after, {meta['date']}", "",
             "| step | outside the range: speed vs unprofiled (median, min-max) | counted step: hwprof / FlopCounterMode (and count_step with its tables) "
             "| step_time_s / plain loop | criteria |", "| --- | --- | --- | --- | --- |",
             *(_row(n, r) for n, r in results.items())]
    write_atomic(args.out / "step_instrumentation.md", "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
