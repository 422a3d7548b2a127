"""Two real `hwprof ceilings --refresh` processes at once, as in the issue: measured at the same
time they cached about half the real roofs, with rounds agreeing. Now the second waits on the
cache's lock, and a measurement that other processes competed with is not cached: what is left is
a cache whose roofs are within 10% of a lone run's, or no cache and a line saying why.

The machine running the suite may be busy with anything; then nothing is cached and the test
checks the lines. The roofs are compared only when the lone run and the cached one both measured
on a quiet machine (their own load records say so)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

ARGV = [sys.executable, "-m", "hwprof", "ceilings", "--device", "cpu", "--refresh", "--quick", "--format", "json"]


def _env(cache: Path) -> dict[str, str]:
    return {**os.environ, "HWPROF_CACHE_DIR": str(cache)}


def _roofs(k: dict[str, Any]) -> dict[str, float]:
    return {**{f"{m}_flop_per_s": v for m, v in k["flop_per_s"].items() if v}, "bytes_per_s": k["bytes_per_s"]}


def test_two_refreshes_at_once_leave_a_cache_near_a_lone_runs_or_none_and_a_line(tmp_path: Path) -> None:
    lone_run = subprocess.run(ARGV, capture_output=True, text=True, timeout=300, env=_env(tmp_path / "lone"))
    assert lone_run.returncode == 0 and "Traceback" not in lone_run.stderr, lone_run.stderr
    lone = json.loads(lone_run.stdout)
    pair = [subprocess.Popen(ARGV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             env=_env(tmp_path / "pair")) for _ in range(2)]
    outs = [p.communicate(timeout=600) for p in pair]
    assert [p.returncode for p in pair] == [0, 0], [err for _, err in outs]
    assert not any("Traceback" in err for _, err in outs), [err for _, err in outs]
    results = [json.loads(out) for out, _ in outs]
    cached = [p for p in (tmp_path / "pair").rglob("*.json") if p.is_file()]
    if not cached:
        # nothing cached: each run says why in one warning (rounds disagreeing, or other processes)
        for (_, err), k in zip(outs, results, strict=True):
            assert k["cache_file"] is None and "not cached" in err, err
        return
    assert len(cached) == 1
    saved = json.loads(cached[0].read_text())
    assert saved["load"]["competing_share"] <= 0.10 and not saved["flagged"]   # measured with no one competing
    assert any(k["cache_file"] == str(cached[0]) for k in results)               # by one of the pair ...
    assert all(k["source"] == "cache" or k["cache_file"] or "not cached" in err    # ... the other reused it,
               for (_, err), k in zip(outs, results, strict=True))                # or said why it did not cache
    if lone["cache_file"] is not None:          # the lone run was quiet too: the compute roofs must agree
        # (the quick copy's bandwidth is not compared: twelve lone quick runs one after another on the quiet
        # 2-core machine gave 33.0-58.1 GB/s, two modes; their fp32 roofs 198.9-205.4 GFLOP/s; that a second
        # refresh waits for the first and reuses its result is tested in test_ceilings_cache.py)
        for key, value in _roofs(lone).items():
            if key.endswith("_flop_per_s"):
                assert abs(_roofs(saved)[key] - value) <= 0.10 * value, (key, _roofs(saved)[key], value)
