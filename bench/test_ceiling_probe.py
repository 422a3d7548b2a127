"""hwprof's ceilings against plain hand-written probes: hwprof must reach >= 97% of each.

CUDA: a bf16 8192^3 matmul (FLOPs = 2 n^3) timed with CUDA events, and a 1 GiB device-to-device
copy (bytes = 2 x 1 GiB, read + written). CPU: a 1024^3 fp32 matmul and a 256 MiB copy timed with
perf_counter (1024 is one of the full CPU sizes; the quick sizes are too short to compare on a
shared 2-core machine). A probe's rate is its work / its median time.

Two ways to run it:

* ``pytest bench/test_ceiling_probe.py --benchmark-only``: measures hwprof's ceilings here, then
  the probes (pytest-benchmark records them);
* ``python bench/test_ceiling_probe.py --ceilings C.json --out probe.json [--check]``: the probes
  against ceilings already measured in the same run (``hwprof ceilings --format json --out D``
  writes ``D/ceilings.json``), as ``bench/gpu_session.sh`` does; ``--check`` exits 1 when hwprof
  stays below 97% of a probe; ``--quick`` uses small sizes (a check of the code, not a ceiling).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from hwprof.hardware.ceilings import Ceilings, measure_ceilings

THRESHOLD = 0.97
"""hwprof's ceiling must reach this fraction of the hand-written probe's rate."""

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _events_median_s(fn: Callable[[], Any], reps: int = 50, warmup: int = 10) -> float:
    """Median seconds of ``fn`` on the current CUDA stream: one event pair per rep, one sync at the end
    (``Event.elapsed_time`` is in milliseconds)."""
    for _ in range(warmup):
        fn()
    pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for start, end in pairs:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in pairs) * 1e-3


def _clock_median_s(fn: Callable[[], Any], reps: int = 50, warmup: int = 5) -> float:
    """Median seconds of ``fn`` on the CPU (``perf_counter_ns``)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        fn()
        times.append((time.perf_counter_ns() - t0) * 1e-9)
    return statistics.median(times)


def hand_bf16_gemm_flop_per_s(n: int = 8192) -> float:
    """CUDA: 2 n^3 / median time of an n x n bf16 matmul."""
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    return 2 * n**3 / _events_median_s(lambda: torch.matmul(a, b))


def hand_copy_bytes_per_s(nbytes: int = 2**30) -> float:
    """CUDA: 2 x nbytes / median time of a device-to-device copy of nbytes (read + written)."""
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").fill_(1)
    dst = torch.empty_like(src)
    return 2 * nbytes / _events_median_s(lambda: dst.copy_(src), reps=20)


def hand_cpu_fp32_gemm_flop_per_s(n: int = 1024, reps: int = 50) -> float:
    """CPU: 2 n^3 / median time of an n x n fp32 matmul."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    return 2 * n**3 / _clock_median_s(lambda: a @ b, reps=reps)


def hand_cpu_copy_bytes_per_s(nbytes: int = 256 * 2**20, reps: int = 20) -> float:
    """CPU: 2 x nbytes / median time of a copy of nbytes (read + written)."""
    src = torch.ones(nbytes, dtype=torch.uint8)
    dst = torch.empty_like(src)
    return 2 * nbytes / _clock_median_s(lambda: dst.copy_(src), reps=reps)


def probes(device: str, quick: bool = False) -> list[dict[str, Any]]:
    """The hand-written probes of ``device`` ("cuda" or "cpu"): the compute roof each GEMM stands
    for, its size, its rate; and the copy (roof ``bytes_per_s``)."""
    if device == "cuda":
        n, nbytes = (1024, 64 * 2**20) if quick else (8192, 2**30)
        return [{"roof": "bf16", "size": n, "hand_rate_per_s": hand_bf16_gemm_flop_per_s(n)},
                {"roof": "bytes_per_s", "size": nbytes, "hand_rate_per_s": hand_copy_bytes_per_s(nbytes)}]
    n, nbytes = (256, 16 * 2**20) if quick else (1024, 256 * 2**20)
    return [{"roof": "fp32", "size": n, "hand_rate_per_s": hand_cpu_fp32_gemm_flop_per_s(n)},
            {"roof": "bytes_per_s", "size": nbytes, "hand_rate_per_s": hand_cpu_copy_bytes_per_s(nbytes)}]


def compare(k: Ceilings, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each probe with hwprof's rate for its roof, ratio = hwprof / hand and whether it reaches
    :data:`THRESHOLD` (False, with ratio None, when hwprof has no such roof)."""
    out = []
    for r in rows:
        ours = k.bytes_per_s if r["roof"] == "bytes_per_s" else k.flop_per_s.get(r["roof"])
        ratio = None if not ours or not r["hand_rate_per_s"] else float(ours) / r["hand_rate_per_s"]
        out.append({**r, "hwprof_rate_per_s": ours, "ratio": ratio, "reaches": ratio is not None and ratio >= THRESHOLD})
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--ceilings", required=True, help="ceilings.json of `hwprof ceilings --format json --out D`")
    p.add_argument("--out", required=True, help="JSON file for the comparison")
    p.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    p.add_argument("--quick", action="store_true", help="small probes: a check of the code, not of the ceilings")
    p.add_argument("--check", action="store_true", help=f"exit 1 when hwprof is below {THRESHOLD:.0%} of a probe")
    args = p.parse_args(argv)
    k = Ceilings.from_dict(json.loads(Path(args.ceilings).read_text()))
    rows = compare(k, probes(args.device, args.quick))
    result = {"device": k.device_name, "device_type": args.device, "quick": args.quick, "threshold": THRESHOLD,
              "ceilings_date": k.date, "probes": rows, "all_reach": all(r["reaches"] for r in rows)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{100 * r['ratio']:.1f}%"
        sys.stdout.write(f"{r['roof']}: hand {r['hand_rate_per_s']:.4g}/s, hwprof {r['hwprof_rate_per_s']}/s, {ratio}\n")
    return 1 if args.check and not result["all_reach"] else 0


# --------------------------------------------------------------------------- pytest-benchmark
@pytest.fixture(scope="module")
def cuda_ceilings(tmp_path_factory):  # type: ignore[no-untyped-def]
    return measure_ceilings(device="cuda", refresh=True, cache_dir=tmp_path_factory.mktemp("ceilings"))


@cuda
def test_bf16_gemm_reaches_hand_probe(benchmark, cuda_ceilings) -> None:  # type: ignore[no-untyped-def]
    hand = benchmark.pedantic(hand_bf16_gemm_flop_per_s, rounds=1, iterations=1)
    benchmark.extra_info.update(hand_flop_per_s=hand, hwprof_flop_per_s=cuda_ceilings.roof("bf16"))
    assert cuda_ceilings.roof("bf16") >= THRESHOLD * hand


@cuda
def test_copy_reaches_hand_probe(benchmark, cuda_ceilings) -> None:  # type: ignore[no-untyped-def]
    hand = benchmark.pedantic(hand_copy_bytes_per_s, rounds=1, iterations=1)
    benchmark.extra_info.update(hand_bytes_per_s=hand, hwprof_bytes_per_s=cuda_ceilings.bytes_per_s)
    assert cuda_ceilings.bytes_per_s >= THRESHOLD * hand


def test_cpu_fp32_gemm_reaches_hand_probe(benchmark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hand = benchmark.pedantic(hand_cpu_fp32_gemm_flop_per_s, rounds=1, iterations=1)
    k = measure_ceilings(device="cpu", refresh=True, cache_dir=tmp_path)
    benchmark.extra_info.update(hand_flop_per_s=hand, hwprof_flop_per_s=k.roof("fp32"))
    assert k.roof("fp32") >= THRESHOLD * hand


if __name__ == "__main__":
    sys.exit(main())
