"""hwprof's ceilings against plain hand-written probes: hwprof must reach >= 97% of each.

CUDA: a bf16 8192^3 matmul timed with CUDA events, and a 1 GiB device-to-device copy (bytes read +
written). CPU: a 1024^3 fp32 matmul timed with perf_counter (1024 is one of the full CPU sizes;
the quick sizes are too short to compare on a shared 2-core machine).
Run: ``pytest bench/test_ceiling_probe.py --benchmark-only``.
"""

from __future__ import annotations

import statistics
import time

import pytest
import torch

from hwprof.hardware.ceilings import measure_ceilings

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _events_median_s(fn, reps: int = 50, warmup: int = 10) -> float:  # type: ignore[no-untyped-def]
    for _ in range(warmup):
        fn()
    pairs = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(reps)]
    for start, end in pairs:
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return statistics.median(s.elapsed_time(e) for s, e in pairs) * 1e-3


def hand_bf16_gemm_flop_per_s(n: int = 8192) -> float:
    a = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(n, n, device="cuda", dtype=torch.bfloat16)
    return 2 * n**3 / _events_median_s(lambda: torch.matmul(a, b))


def hand_copy_bytes_per_s(nbytes: int = 2**30) -> float:
    src = torch.empty(nbytes, dtype=torch.uint8, device="cuda").fill_(1)
    dst = torch.empty_like(src)
    return 2 * nbytes / _events_median_s(lambda: dst.copy_(src), reps=20)


@pytest.fixture(scope="module")
def cuda_ceilings(tmp_path_factory):  # type: ignore[no-untyped-def]
    return measure_ceilings(device="cuda", refresh=True, cache_dir=tmp_path_factory.mktemp("ceilings"))


@cuda
def test_bf16_gemm_reaches_hand_probe(benchmark, cuda_ceilings) -> None:  # type: ignore[no-untyped-def]
    hand = benchmark.pedantic(hand_bf16_gemm_flop_per_s, rounds=1, iterations=1)
    benchmark.extra_info.update(hand_flop_per_s=hand, hwprof_flop_per_s=cuda_ceilings.roof("bf16"))
    assert cuda_ceilings.roof("bf16") >= 0.97 * hand


@cuda
def test_copy_reaches_hand_probe(benchmark, cuda_ceilings) -> None:  # type: ignore[no-untyped-def]
    hand = benchmark.pedantic(hand_copy_bytes_per_s, rounds=1, iterations=1)
    benchmark.extra_info.update(hand_bytes_per_s=hand, hwprof_bytes_per_s=cuda_ceilings.bytes_per_s)
    assert cuda_ceilings.bytes_per_s >= 0.97 * hand


def hand_cpu_fp32_gemm_flop_per_s(n: int = 1024, reps: int = 50) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(5):
        a @ b
    times = []
    for _ in range(reps):
        t0 = time.perf_counter_ns()
        a @ b
        times.append((time.perf_counter_ns() - t0) * 1e-9)
    return 2 * n**3 / statistics.median(times)


def test_cpu_fp32_gemm_reaches_hand_probe(benchmark, tmp_path) -> None:  # type: ignore[no-untyped-def]
    hand = benchmark.pedantic(hand_cpu_fp32_gemm_flop_per_s, rounds=1, iterations=1)
    k = measure_ceilings(device="cpu", refresh=True, cache_dir=tmp_path)
    benchmark.extra_info.update(hand_flop_per_s=hand, hwprof_flop_per_s=k.roof("fp32"))
    assert k.roof("fp32") >= 0.97 * hand
