"""Does a profile hold under load? The same `hwprof profile` run on a quiet machine and beside busy
processes, compared on what must not move: the per-layer/whole-model time ratio and the roof checks.

    python bench/load_test.py --model resnet18 --batch 4 --busy 2 --out results/reliability/cpu-xeon-2core-2026-11-30

Steps: (1) `hwprof profile MODEL --device cpu` on the machine as it is (run this when it is quiet);
(2) start ``--busy`` processes that each spin one core (pure Python loops), run the same command
again, stop them. Both runs use one ceilings cache (``--ceilings-cache``, default
``OUT/ceilings-cache``), so both are judged against the same roofs, measured at step (1).

Pass criteria (checked here, written to ``load_test.json`` and ``load_test.md``):

* the loaded run's per-layer/whole ratio (``summary.layer_sum_paired``: the median over repetitions
  in which each hooked pass is paired with an unhooked one) is within 0.8-1.25 of the quiet run's,
  for every timed phase;
* in each run, every layer or whole-model rate above its roof (``summary.roof_violations``) is
  covered by a warning naming its roof (``Profile.warnings``): nothing above a roof goes unsaid.

The load average (1 min) is recorded before and after each run. Each run is a complete saved profile
(``quiet/``, ``loaded/``; ``hwprof.load_profile`` reads them).
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import hwprof
from hwprof.files import write_atomic, write_json_atomic

RATIO_BOUNDS = (0.8, 1.25)
SPIN = "while True: pass"


def profile_command(args: argparse.Namespace, out: Path) -> list[str]:
    return [sys.executable, "-m", "hwprof", "profile", args.model, "--batch", str(args.batch), "--device", "cpu",
            "--budget", str(args.budget), "--ceilings-cache", str(args.ceilings_cache), "--no-html", "--out", str(out)]


def run_profile(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    cmd = profile_command(args, out)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return {"command": shlex.join(cmd), "seconds": round(time.perf_counter() - t0, 1),
            "load_1min_before": load_before, "load_1min_after": os.getloadavg()[0]}


def loaded(args: argparse.Namespace, out: Path) -> dict[str, Any]:
    """The profile beside ``args.busy`` spinning processes (started 5 s before, killed after)."""
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(args.busy)]
    try:
        time.sleep(5)
        return {**run_profile(args, out), "busy_processes": args.busy}
    finally:
        for p in spinners:
            p.kill()
            p.wait()


def judge(folder: Path) -> dict[str, Any]:
    """The ratio per phase, the roof violations and whether each is covered by a warning."""
    p = hwprof.load_profile(folder)
    violations = p.summary.get("roof_violations", [])
    uncovered = [v for v in violations if not any(v["roof_key"] in w for w in p.warnings)]
    return {"ratios": p.summary.get("layer_sum_paired", {}), "violations": violations, "warnings": p.warnings,
            "uncovered_violations": uncovered, "fraction_of_peak": p.summary.get("fraction_of_peak"),
            "above_roof_layers": p.summary.get("above_roof_layers", [])}


def verdict(quiet: dict[str, Any], busy: dict[str, Any]) -> dict[str, Any]:
    lo, hi = RATIO_BOUNDS
    phases = {}
    for ph, q in quiet["ratios"].items():
        b = busy["ratios"].get(ph)
        rel = b["ratio"] / q["ratio"] if b and q["ratio"] else None
        phases[ph] = {"quiet": q["ratio"], "loaded": b["ratio"] if b else None, "loaded_over_quiet": rel,
                      "within": rel is not None and lo <= rel <= hi}
    ok_ratio = bool(phases) and all(v["within"] for v in phases.values())
    ok_roofs = not quiet["uncovered_violations"] and not busy["uncovered_violations"]
    return {"phases": phases, "ratio_within_bounds": ok_ratio, "every_violation_warned": ok_roofs,
            "passed": ok_ratio and ok_roofs}


def markdown(result: dict[str, Any]) -> str:
    v = result["verdict"]
    rows = [f"| {ph} | {d['quiet']:.3f} | {d['loaded']:.3f} | {d['loaded_over_quiet']:.3f} | "
            f"{'yes' if d['within'] else 'NO'} |" for ph, d in v["phases"].items() if d["loaded"] is not None]
    runs = [f"| {name} | {r['load_1min_before']:.2f} -> {r['load_1min_after']:.2f} | {r['seconds']} s | "
            f"{len(result[name + '_judged']['violations'])} | {len(result[name + '_judged']['warnings'])} | "
            f"{len(result[name + '_judged']['uncovered_violations'])} |" for name, r in
            (("quiet", result["quiet"]), ("loaded", result["loaded"]))]
    return "\n".join([
        f"# Load test: {result['model']}, batch {result['batch']}, CPU", "",
        f"Command: `{result['command']}` ({result['date']}, torch {result['torch']}).", "",
        "| run | load (1 min) before -> after | duration | rates above a roof | roof warnings | unwarned |",
        "| --- | --- | --- | --- | --- | --- |", *runs, "",
        "Per-layer self-time sum / whole-model time (median over paired repetitions):", "",
        "| phase | quiet | loaded | loaded / quiet | within 0.8-1.25 |", "| --- | --- | --- | --- | --- |", *rows, "",
        f"**{'PASSED' if v['passed'] else 'FAILED'}**: ratio within bounds: {v['ratio_within_bounds']}; "
        f"every rate above a roof warned: {v['every_violation_warned']}.", ""])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--budget", type=float, default=1.0, help="timing budget per phase, s")
    ap.add_argument("--busy", type=int, default=2, help="spinning processes beside the loaded run")
    ap.add_argument("--ceilings-cache", type=Path, default=None)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    args.ceilings_cache = args.ceilings_cache or args.out / "ceilings-cache"
    quiet = run_profile(args, args.out / "quiet")
    busy = loaded(args, args.out / "loaded")
    qj, bj = judge(args.out / "quiet"), judge(args.out / "loaded")
    import torch
    result = {"model": args.model, "batch": args.batch, "command": shlex.join(["python", "bench/load_test.py",
              *(argv if argv is not None else sys.argv[1:])]), "date": time.strftime("%Y-%m-%d"),
              "torch": torch.__version__, "quiet": quiet, "loaded": busy, "quiet_judged": qj, "loaded_judged": bj,
              "verdict": verdict(qj, bj)}
    write_json_atomic(args.out / "load_test.json", result)
    text = markdown(result)
    write_atomic(args.out / "load_test.md", text)
    print(text)
    return 0 if result["verdict"]["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
