"""bench/load_test.py's judgement: the per-layer/whole ratio bound and unwarned roof violations."""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch

import hwprof
from hwprof.files import to_jsonable
from hwprof.hardware.ceilings import Ceilings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gpu"))   # bench_scripts: bench/ as modules
from bench_scripts import bench_module  # noqa: E402


@pytest.fixture(scope="module")
def lt() -> ModuleType:
    return bench_module("load_test")


def _judged(ratio: float, violations: list[dict[str, Any]] | None = None,
            warnings: list[str] | None = None) -> dict[str, Any]:
    v = violations or []
    w = warnings or []
    return {"ratios": {"fwd": {"ratio": ratio, "q25": ratio, "q75": ratio, "pairs": 5}}, "violations": v,
            "warnings": w, "uncovered_violations": [x for x in v if not any(x["roof_key"] in s for s in w)]}


def test_a_ratio_within_its_bound_passes(lt: ModuleType) -> None:
    # 0.946 / 1.004 = 0.942: inside 0.8-1.25
    v = lt.verdict(_judged(1.004), _judged(0.946))
    assert v["passed"] and v["phases"]["fwd"]["loaded_over_quiet"] == pytest.approx(0.946 / 1.004)


@pytest.mark.parametrize("loaded", [0.79, 1.26])
def test_a_ratio_outside_the_bound_fails(lt: ModuleType, loaded: float) -> None:
    v = lt.verdict(_judged(1.0), _judged(loaded))
    assert not v["passed"] and not v["ratio_within_bounds"] and v["every_violation_warned"]


def test_a_violation_without_a_warning_naming_its_roof_fails(lt: ModuleType) -> None:
    over = [{"what": "layer relu", "roof_key": "LLC", "roof": 4.8e10, "rate": 8e10, "unit": "B/s"}]
    warned = lt.verdict(_judged(1.0, over, ["1 layer(s) moved data faster than 1.10x the LLC roof"]), _judged(1.0))
    assert warned["passed"]
    silent = lt.verdict(_judged(1.0, over, ["something about the fp32 roof"]), _judged(1.0))
    assert not silent["passed"] and not silent["every_violation_warned"]


def _shared_ceilings(cache: Path) -> Ceilings:
    """Ceilings for this CPU in ``cache`` (roofs far above any layer, so nothing re-measures them)."""
    from hwprof.device import device_name
    from hwprof.hardware.ceilings import cache_path
    from hwprof.hardware.levels import MemoryLevel

    name = device_name(torch.device("cpu"))
    k = Ceilings("cpu", name, torch.__version__, "2026-12-06", "measured", {"fp32": 1e15, "bf16": 4e15}, 1e13,
                 levels=(MemoryLevel("L2", 2**20, 5e13, 2**20, "sweep"), MemoryLevel("DRAM", None, 1e13, None, "copy")))
    for threads in {torch.get_num_threads(), os.cpu_count() or 1}:   # the launched run's thread count
        path = cache_path(cache, name, quick=False, threads=threads)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(to_jsonable(k.to_dict())))
    return k


def test_the_profile_command_runs_on_the_cpu_with_the_shared_ceilings(lt: ModuleType, tmp_path: Path) -> None:
    _shared_ceilings(tmp_path / "c")
    args = type("A", (), {"model": "lenet5", "batch": 1, "budget": 0.05, "ceilings_cache": tmp_path / "c"})()
    cmd = lt.profile_command(args, tmp_path / "quiet")
    assert cmd[1:4] == ["-m", "hwprof", "profile"] and "--ceilings-cache" in cmd and "--no-html" in cmd
    assert cmd[cmd.index("--device") + 1] == "cpu" and cmd[-1] == str(tmp_path / "quiet")
    run = lt.run_profile(args, tmp_path / "quiet")          # the command itself, in its own process
    assert run["command"] == shlex.join(cmd) and run["seconds"] >= 0
    p = hwprof.load_profile(tmp_path / "quiet")
    assert p.ceilings.source == "cache" and p.ceilings.roof("fp32") == 1e15   # judged against the shared file
    judged = lt.judge(tmp_path / "quiet")
    assert set(judged["ratios"]) == {"fwd"} and judged["ratios"]["fwd"]["pairs"] >= 3
    assert judged["uncovered_violations"] == [] and judged["fraction_of_peak"] == p.summary["fraction_of_peak"]
