"""The step path on the GPU: profile_step with CUDA events, fp16 autocast with a GradScaler, bf16 autocast,
hwprof.capture around a loop; each check against an independent reading, written to ``steps.json``.

    python bench/gpu_steps.py --device cuda --out $W/steps          # the GPU run's `steps` stage
    python bench/gpu_steps.py --device cpu --quick --out /tmp/steps  # its dry run (bf16 only: no fp16 on CPU)

Checks (each a row: name, value, criterion, pass):

* ``float16_autocast_step`` (CUDA only): a CNN training step under ``torch.autocast(fp16)`` with ``torch.amp.GradScaler``,
  profiled with :func:`hwprof.profile_step`: the convolutions recorded in fp16, MACs x 2 equal to
  ``FlopCounterMode``'s FLOPs per op, the model, optimizer and scaler bit-identical afterwards,
  ``step_time_s`` within 0.5-2x of a plain loop timed with ``torch.cuda.synchronize`` and
  ``perf_counter``, and CUDA timing (the phase's device) used.
* ``bfloat16_autocast_step``: the same step under bf16 autocast (no scaler), the convolutions in bf16.
* ``capture``: a loop's losses with and without ``hwprof.capture("2:6")`` identical; a profile made.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import hwprof
from hwprof.files import write_json_atomic


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _plain_s(step: Any, args: tuple[Any, ...], dev: torch.device, n: int = 15) -> float:
    for _ in range(3):
        step(*args)
    out = []
    for _ in range(n):
        _sync(dev)
        t0 = time.perf_counter()
        step(*args)
        _sync(dev)
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


def _flop_mismatches(p: Any, step: Any, args: tuple[Any, ...]) -> list[str]:
    with FlopCounterMode(display=False) as fc:
        step(*args)
    ours: dict[str, float] = defaultdict(float)
    for op, macs in zip(p.ops["op"], p.ops["macs"], strict=True):
        ours[str(op).removeprefix("aten.")] += macs
    return [f"{op}: {2 * ours[str(op).removeprefix('aten.')]:.0f} vs {v}" for op, v in fc.get_flop_counts()["Global"].items()
            if 2 * ours[str(op).removeprefix("aten.")] != v]


def _state(objs: list[Any]) -> list[Any]:
    return copy.deepcopy([o.state_dict() for o in objs])


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a.cpu(), b.cpu())
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b)


def check_autocast_step(dev: torch.device, amp: torch.dtype, batch: int, budget_s: float, k: Any,
                        judge_time: bool = True) -> dict[str, Any]:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 64, 3, padding=1),
                          nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10)).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    scaler = torch.amp.GradScaler(dev.type, enabled=amp == torch.float16)
    x, y = torch.randn(batch, 3, 32, 32, device=dev), torch.randint(0, 10, (batch,), device=dev)

    def amp_step(x: torch.Tensor, y: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=amp):
            loss = F.cross_entropy(model(x), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    amp_step(x, y)                     # optimizer state and the scaler's growth tracker exist before the snapshot
    before = _state([model, opt, scaler])
    p = hwprof.profile_step(amp_step, x, y, budget_s=budget_s, ceilings=k)
    restored = _same(before, _state([model, opt, scaler]))
    conv = p.ops[p.ops["op_class"] == "conv"]
    mismatches = _flop_mismatches(p, amp_step, (x, y))
    ratio = p.summary["step_time_s"] / _plain_s(amp_step, (x, y), dev)
    name = str(amp).removeprefix("torch.")
    return {"check": f"{name}_autocast_step", "conv_dtypes": sorted(set(conv["dtype"])), "restored": restored,
            "flop_mismatches": mismatches, "step_time_over_plain": ratio, "timing_device": p.measurement.timings[
                "whole_step"].device, "split": p.summary["step_split"],
            "timing_judged": judge_time,
            "pass": bool(set(conv["dtype"]) == {name} and restored and not mismatches
                         and (0.5 <= ratio <= 2.0 or not judge_time))}


def check_capture(dev: torch.device, k: Any) -> dict[str, Any]:
    def loop(cap: bool) -> tuple[list[float], Any]:
        torch.manual_seed(0)
        model = nn.Sequential(nn.Linear(64, 256), nn.ReLU(), nn.Dropout(0.1), nn.Linear(256, 10)).to(dev)
        opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        losses: list[float] = []
        ctx = hwprof.capture("2:6", ceilings=k) if cap else None
        if ctx is not None:
            ctx.__enter__()
        try:
            for _ in range(8):
                x, y = torch.randn(32, 64, device=dev), torch.randint(0, 10, (32,), device=dev)
                opt.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                opt.step()
                losses.append(loss.item())
        finally:
            if ctx is not None:
                ctx.__exit__(None, None, None)
        return losses, ctx

    plain, _ = loop(False)
    captured, cap = loop(True)
    return {"check": "capture", "identical_losses": plain == captured, "profile": cap.profile is not None,
            "missing": cap.missing, "pass": bool(plain == captured and cap.profile is not None)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--quick", action="store_true",
                    help="small batch and budget, quick ceilings, the timing band recorded but not judged (the dry run)")
    args = ap.parse_args(argv)
    dev = torch.device(args.device)
    batch, budget = (4, 0.05) if args.quick else (128, 0.5)
    amps = [torch.bfloat16] + ([torch.float16] if dev.type == "cuda" else [])
    k = hwprof.measure_ceilings(device=str(dev), quick=args.quick)     # the ceilings stage's, from the cache
    rows = [check_autocast_step(dev, a, batch, budget, k, judge_time=not args.quick) for a in amps]
    rows.append(check_capture(dev, k))
    args.out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out / "steps.json", {"device": str(dev), "torch": torch.__version__, "checks": rows})
    for r in rows:
        print(f"{r['check']}: {'pass' if r['pass'] else 'FAIL'} {r}")
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
