"""``bash bench/gpu_session.sh --dry-run all``: every stage of the GPU session, its real commands
with tiny sizes on the CPU (platformdirs and psutil hidden, as on the device image), so that a
typo in a stage fails here and not in the GPU window; then ``bench/ingest_gpu.py`` on the archive
it returns. The numbers are a loaded CPU's: only the files, exit codes and tables are checked.

The session runs once for the module. Its default budget is 120 s (about 55 s of CPU time);
here it gets 400 s, so that a shared machine's load does not fail the check: the schedule
itself is checked by test_gpu_session.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import pytest
from bench_scripts import bench_module

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "bench" / "gpu_session.sh"
STAGES = ["env", "pytest", "ceilings", "profile", "memory", "depthwise", "counters", "resnet50", "llm", "steps", "verify"]
EXPECTED = [   # one file per stage at least: what the ingest reads
    "env/env.json", "pytest/junit.xml", "ceilings/hwprof/ceilings.json", "ceilings/probe.json",
    "profile/default/mobilenet_v1/profile.json", "profile/default/mobilenet_v1_dense/profile.json",
    "profile/default/comparison.md", "memory/memory-validation-cpu.csv", "depthwise/fp32/depthwise.csv",
    "depthwise/bf16/depthwise.csv", "counters/fp32-nchw/manifest.json", "resnet50/profile.json",
    "verify/summary.json", "steps/steps.json", "steps/amp-bf16/profile.json", "llm/generate/phases.csv", "llm/memory/memory.json", "session.txt", "gpu-log.txt", *(f"logs/{s}.log" for s in STAGES)]


@pytest.fixture(scope="module")
def session(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("dry-run")
    env = {**os.environ, "OUT": str(tmp / "out"), "WORK": str(tmp / "work"), "PY": sys.executable, "BUDGET": "400"}
    env.pop("HWPROF_CACHE_DIR", None)
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(SCRIPT), "--dry-run", "all"], capture_output=True, text=True, timeout=560,
                       env=env, cwd=tmp)
    return {"tmp": tmp, "run": r, "seconds": time.monotonic() - t0}


def test_every_stage_ran_and_returned_zero(session: dict[str, Any]) -> None:
    r = session["run"]
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [ln.split("\t") for ln in (session["tmp"] / "out" / "gpu-log.txt").read_text().splitlines()]
    assert rows[0] == ["stage", "command", "exit_code", "seconds"]
    stages = [row for row in rows[1:] if row[1].startswith("stage ")]
    assert sorted(row[0] for row in stages) == sorted(STAGES)   # after ceilings, three stages at a time
    failed = [row for row in rows[1:] if row[2] != "0"]
    logs = session["tmp"] / "work" / "gpu-results" / "logs"
    assert not failed, [(row, (logs / f"{row[0]}.log").read_text()[-2000:]) for row in failed]
    sys.stderr.write(f"dry run: {session['seconds']:.0f} s\n")


def test_only_the_archive_and_the_log_come_back(session: dict[str, Any]) -> None:
    out = session["tmp"] / "out"
    assert sorted(os.listdir(out)) == ["gpu-log.txt", "gpu-results.tar.gz"]
    assert (out / "gpu-results.tar.gz").stat().st_size < 16 * 2**20
    with tarfile.open(out / "gpu-results.tar.gz") as tar:
        names = set(tar.getnames())
    assert all(n == "gpu-results" or n.startswith("gpu-results/") for n in names)
    assert not [n for n in names if n.endswith(".svg") or ".tmp-" in n]
    assert {f"gpu-results/{f}" for f in EXPECTED} <= names, sorted({f"gpu-results/{f}" for f in EXPECTED} - names)


def test_hwprof_ran_without_the_packages_the_device_lacks(session: dict[str, Any]) -> None:
    env = json.loads((session["tmp"] / "work" / "gpu-results" / "env" / "env.json").read_text())
    deps = env["hwprof_dependencies"]
    assert deps["platformdirs"] is None and deps["psutil"] is None and env["missing_required"] == []
    assert env["device"]["type"] == "cpu"


def test_ingest_unpacks_records_and_prints_the_tables(session: dict[str, Any], capsys: pytest.CaptureFixture[str]
                                                      ) -> None:
    ingest = bench_module("ingest_gpu")
    results = session["tmp"] / "results"
    archive = session["tmp"] / "out" / "gpu-results.tar.gz"
    assert ingest.main([str(archive), "--results", str(results)]) == 0
    text = capsys.readouterr().out
    (folder,) = results.iterdir()
    assert folder.name.startswith("cpu-") and folder.name.endswith("-dry-run")
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["device_type"] == "cpu" and manifest["dry_run"] and manifest["torch"]
    assert manifest["command"] == "bash bench/gpu_session.sh --dry-run all" and manifest["date_utc"]
    assert sorted(s["stage"] for s in manifest["stages"]) == sorted(STAGES) and {"driver", "cuda"} <= set(manifest)
    assert (folder / "tables.md").read_text() == text
    for title, _ in ingest.SECTIONS:
        assert f"## {title}" in text
    for missing in ("No ceilings", "No hand-written", "No default profile", "No memory validation",
                    "No depthwise study", "No resnet50 profile", "No LLM generation"):
        assert missing not in text
    assert "No Nsight Compute counters in this run (--counters: " in text   # a CPU has no ncu: said so
    assert "| decode |" in text and "Generation memory, measured peak" in text
    assert "| dense 3x3 |" in text and "simulated within 3% of the measured peak" in text
    with pytest.raises(SystemExit, match="exists"):
        ingest.main([str(archive), "--results", str(results)])
