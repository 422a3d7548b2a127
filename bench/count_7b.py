"""Time and peak RSS of counting the 7B transformer (forward + backward) in a fresh process.

Usage: .venv/bin/python bench/count_7b.py --out results/count/7b-count-cpu.json
Peak RSS is ``ru_maxrss`` of this process (imports included), which is what a user pays.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import resource
import time

import torch

import hwprof
from hwprof import zoo
from hwprof.files import write_json_atomic


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    model, spec = zoo.build("gpt_7b", device="meta")
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        c = hwprof.count(model, spec, backward=True)
        times.append(time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rec = {
        "what": "hwprof.count(gpt_7b on meta, long:2048, batch 1, backward=True)",
        "params": c.totals["params"], "flops_fwd": c.totals["flops_fwd"], "flops_bwd": c.totals["flops_bwd"],
        "op_rows": len(c.ops), "uncounted": c.uncounted,
        "time_s": times, "time_median_s": sorted(times)[len(times) // 2], "peak_rss_bytes": rss,
        "machine": f"{platform.machine()} {platform.processor() or ''} cpus={torch.get_num_threads()}",
        "torch": torch.__version__, "date": datetime.date.today().isoformat(),
        "command": "python bench/count_7b.py --out " + args.out,
    }
    write_json_atomic(args.out, rec)
    print(f"median {rec['time_median_s']:.2f} s, peak RSS {rss / 2**20:.0f} MiB -> {args.out}")


if __name__ == "__main__":
    main()
