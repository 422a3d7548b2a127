"""Two runs of one model for `hwprof compare`: NCHW against channels_last, or fp32 against bf16,
profiled and saved as `hwprof profile --out` folders.

    python bench/compare_runs.py mobilenet_v1 --batch 8 --vary channels_last --out results/compare/runs
    hwprof compare results/compare/runs/mobilenet_v1-nchw results/compare/runs/mobilenet_v1-channels_last \\
        --out results/compare/mobilenet_v1-nchw-vs-channels_last

Like bench/predict_validation.py (see its docstring) the runs are single-threaded and timed with the
thread's CPU clock by default, since other jobs share this machine; the ceilings are measured once
the same way and joined with both runs. The two runs alternate (``--repeats`` each) and each keeps
its fastest repeat. Every folder is a complete saved profile (hwprof.load_profile reads it).
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from pathlib import Path

import torch

import hwprof
from hwprof import zoo
from hwprof.joining import join
from hwprof.measuring.runner import measure

sys.path.insert(0, str(Path(__file__).parent))
from predict_validation import ThreadClock, best, quiet_ceilings  # noqa: E402

VARIANTS = {"channels_last": (("nchw", {}), ("channels_last", {"channels_last": True})),
            "dtype": (("fp32", {"dtype": "fp32"}), ("bf16", {"dtype": "bf16"}))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--vary", choices=tuple(VARIANTS), default="channels_last")
    ap.add_argument("--out", type=Path, required=True, help="the two profile folders go here")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--clock", choices=("thread", "wall"), default="thread")
    args = ap.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if args.clock == "thread" and args.threads != 1:
        ap.error("--clock thread times one CPU thread: use it with --threads 1")
    torch.set_num_threads(args.threads)
    clock = ThreadClock() if args.clock == "thread" else None
    k = quiet_ceilings(5, float("inf"), 0.0, "cpu", clock)
    model, spec = zoo.build(args.model)
    runs: dict[str, list[hwprof.Profile]] = {name: [] for name, _ in VARIANTS[args.vary]}
    for _ in range(args.repeats):
        for name, kw in VARIANTS[args.vary]:
            m = measure(model, spec, device="cpu", per_layer=True, batch=args.batch, budget_s=args.budget,
                        clock=clock, threads=args.threads, **kw)
            c = hwprof.count(model, spec, backward=False, batch=args.batch, dtype=kw.get("dtype"))
            runs[name].append(join(c, m, k, name=args.model))
    command = "python bench/compare_runs.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    for name, profiles in runs.items():
        folder = args.out / f"{args.model}-{name}"
        best(profiles).save(folder, command=command)
        print(f"{folder}: {1e3 * best(profiles).summary['whole_model_time_s']:.2f} ms (fastest of {len(profiles)})")


if __name__ == "__main__":
    main()
