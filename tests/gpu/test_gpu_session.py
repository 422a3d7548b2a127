"""bench/gpu_session.sh's schedule, on a stage table of its own (``GPU_SESSION_TABLE``): each stage
killed at its share of the budget, the time a stage leaves passed on, everything re-packed and
logged after each stage, only the archive and the log in $OUT. Shell commands only: seconds."""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "gpu_session.sh"

TABLE = """\
stage first   10 'run sleep 0.2; echo one > $W/one.txt' 'run true'
stage slow    20 'run sleep 60; run touch $W/never.txt' 'run true'
stage third   30 'run tar -tzf $OUT/gpu-results.tar.gz' 'run true'
"""


def _session(tmp: Path, *args: str, budget: int = 10) -> subprocess.CompletedProcess[str]:
    (tmp / "table.sh").write_text(TABLE)
    env = {**os.environ, "OUT": str(tmp / "out"), "WORK": str(tmp / "work"), "BUDGET": str(budget),
           "GPU_SESSION_TABLE": str(tmp / "table.sh"), "PY": sys.executable}
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=120, env=env)


def _log(tmp: Path) -> list[list[str]]:
    return [line.split("\t") for line in (tmp / "out" / "gpu-log.txt").read_text().splitlines()[1:]]


def test_a_stage_is_killed_at_its_share_and_the_rest_go_on(tmp_path: Path) -> None:
    r = _session(tmp_path, "all")
    assert r.returncode == 0, r.stderr
    stages = {row[0]: row for row in _log(tmp_path) if row[1].startswith("stage ")}
    # budget 10 s, shares 10/20/30 %: "slow" must end by +3 s, 2 s or so after it started
    assert stages["first"][2] == "0" and stages["third"][2] == "0"
    slow_cmd = next(row for row in _log(tmp_path) if row[0] == "slow" and row[1].startswith("sleep"))
    assert slow_cmd[2] == "124" and int(slow_cmd[3]) <= 4        # timeout's exit code: killed at its share
    touch = next(row for row in _log(tmp_path) if row[0] == "slow" and row[1].startswith("touch"))
    assert touch[2] == "skipped"                                  # no time left in the stage: not started
    assert sorted(os.listdir(tmp_path / "out")) == ["gpu-log.txt", "gpu-results.tar.gz"]
    with tarfile.open(tmp_path / "out" / "gpu-results.tar.gz") as tar:
        names = tar.getnames()
    assert "gpu-results/one.txt" in names and "gpu-results/never.txt" not in names
    assert {"gpu-results/gpu-log.txt", "gpu-results/session.txt", "gpu-results/logs/slow.log"} <= set(names)
    # the third stage saw the archive re-packed after the earlier stages
    assert "gpu-results/one.txt" in (tmp_path / "work" / "gpu-results" / "logs" / "third.log").read_text()


def test_stages_named_share_the_budget(tmp_path: Path) -> None:
    r = _session(tmp_path, "first", "third", budget=20)
    assert r.returncode == 0, r.stderr
    rows = [row for row in _log(tmp_path) if row[1].startswith("stage ")]
    # shares 10 and 30 of the 60 the table has, over 60% of the budget: limits 3 s, then the rest of 12 s;
    # the script counts whole seconds (date +%s), so a start that crosses a second boundary after T0 leaves 2
    assert [row[0] for row in rows] == ["first", "third"]
    assert rows[0][1] in ("stage first (limit 3 s)", "stage first (limit 2 s)"), rows[0]


def test_listing_and_bad_input(tmp_path: Path) -> None:
    r = _session(tmp_path, "--list")
    assert r.returncode == 0 and [ln.split()[0] for ln in r.stdout.splitlines()] == ["first", "slow", "third"]
    assert _session(tmp_path, "nope").returncode == 2
    env = {k: v for k, v in os.environ.items() if k != "OUT"}
    r = subprocess.run(["bash", str(SCRIPT), "all"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode != 0 and "OUT must name the output folder" in r.stderr


def test_the_built_in_table_has_every_stage_in_priority_order() -> None:
    r = subprocess.run(["bash", str(SCRIPT), "--list"], capture_output=True, text=True, timeout=60)
    rows = [ln.split()[:2] for ln in r.stdout.splitlines()]
    assert [name for name, _ in rows] == ["env", "pytest", "ceilings", "profile", "memory", "depthwise", "counters",
                                          "resnet50", "llm", "steps", "verify"]
    assert sum(int(share.rstrip("%")) for _, share in rows) <= 96   # the rest is slack for packing


def test_a_dry_run_with_a_failing_command_fails(tmp_path: Path) -> None:
    r = _session(tmp_path, "--dry-run", "all")
    assert r.returncode == 0, r.stderr                          # every dry command of the table is `true`
    (tmp_path / "bad").mkdir()
    table = TABLE.replace("'run true'\nstage slow", "'run false'\nstage slow")
    (tmp_path / "bad" / "table.sh").write_text(table)
    env = {**os.environ, "OUT": str(tmp_path / "bad" / "out"), "WORK": str(tmp_path / "bad" / "work"),
           "BUDGET": "10", "GPU_SESSION_TABLE": str(tmp_path / "bad" / "table.sh"), "PY": sys.executable}
    r = subprocess.run(["bash", str(SCRIPT), "--dry-run", "all"], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 1 and "dry run: 1 command(s) did not exit 0" in r.stderr
    assert (tmp_path / "bad" / "out" / "gpu-results.tar.gz").exists()   # packed all the same
