"""The ceilings cache under load, damage and concurrency: a measurement beside competing processes
is used and not cached; a damaged cache file is one warning and measured again; an unusable cache
folder is one warning and not cached; a second measurement waits for the first and reuses it.
Fake trials and fake load meters throughout (no real benchmark); the real meter's one test only
checks that it sees a process it starts."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from test_hardware_ceilings import CACHES, FakeTrials, steady

from hwprof.cli import main
from hwprof.device import device_name
from hwprof.hardware import ceilings as C
from hwprof.hardware.ceilings import cache_path, measure_ceilings
from hwprof.hardware.load import competed, load_record, quiet_load, system_load

REFRESH = "hwprof ceilings --refresh --device cpu"


@pytest.fixture(autouse=True)
def _cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private HWPROF_CACHE_DIR; an idle machine unless a test passes its own meter; and, for the
    CLI, the fake steady trials and the test caches instead of a benchmark."""
    monkeypatch.setenv("HWPROF_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(C, "system_load", quiet_load)
    monkeypatch.setattr(C, "device_trial", lambda dev, budget_s, clock=None: steady())
    monkeypatch.setattr(C, "system_caches", lambda dev: CACHES)
    return tmp_path / "cache"


def _path() -> Path:
    return cache_path(None, device_name(torch.device("cpu")), quick=True)


def _busy(other_cpus: float, cpus: int = 2, threads: int = 2, wall_s: float = 2.0) -> Callable[[], Any]:
    """A load meter that saw other processes keep ``other_cpus`` cores busy for ``wall_s`` seconds."""
    return lambda: (lambda: load_record(other_cpus * wall_s, wall_s, cpus, threads, 1.9, 2.1))


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def _stderr_lines(err: str, caplog: pytest.LogCaptureFixture) -> list[str]:
    """What a terminal would show on stderr: the printed lines and the log lines (under pytest the
    log goes to caplog instead, as hwprof: warning: ...)."""
    return err.splitlines() + [f"hwprof: warning: {m}" for m in _warnings(caplog)]


# ----------------------------------------------------------------------------- load
def test_the_competing_share_counts_what_free_cores_could_not_take() -> None:
    # 16 CPUs, 2 threads: 14 cores are free, so others using 10 cores compete with nothing, 15 cores
    # with half of the 2 the measurement runs on
    assert load_record(20.0, 2.0, 16, 2)["competing_share"] == 0.0
    assert load_record(30.0, 2.0, 16, 2)["competing_share"] == pytest.approx(0.5)
    # 2 CPUs, 2 threads (this project's machine): a second process using one core competes for half
    assert load_record(2.0, 2.0, 2, 2)["competing_share"] == pytest.approx(0.5)
    assert competed(load_record(2.0, 2.0, 2, 2)) and not competed(load_record(0.3, 2.0, 2, 2))   # 15% vs 7.5%
    assert not competed(load_record(0.05, 0.1, 2, 2))       # 50% of a tenth of a second: a tick, not judged


def test_the_real_meter_sees_another_busy_process() -> None:
    # a child spinning for 1 s of CPU time is other processes' CPU time: whatever else the machine runs, the
    # meter cannot miss it (no timing is asserted, CPU time is counted)
    stop = system_load()
    subprocess.run([sys.executable, "-c", "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.0: pass"],
                   check=True, timeout=60)
    load = stop()
    # 1 s of its CPU time over the wall time it took: above 0.15 unless the child waited for a core over 6 s
    assert load["other_cpus"] > 0.15 and load["wall_s"] >= 1.0 and load["cpus"] >= 1
    assert set(load) >= {"loadavg_1m_before", "loadavg_1m_after", "competing_share", "threads"}


def test_without_psutil_the_load_average_is_recorded_and_nothing_judged(monkeypatch: pytest.MonkeyPatch) -> None:
    # the GPU device image lacks psutil (bench/gpu_session.sh hides it in its dry run)
    monkeypatch.setitem(sys.modules, "psutil", None)
    load = system_load()()
    assert load["other_cpus"] is None and "psutil" in load["note"] and not competed(load)


def test_a_measurement_beside_competing_processes_is_used_and_not_cached(_cache_dir: Path,
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    # the issue's case: two refreshes at once, each roof about half the real one, rounds agreeing
    with caplog.at_level("WARNING"):
        k = measure_ceilings(device="cpu", quick=True, trial=steady(), caches=CACHES, load_meter=_busy(1.0))
    assert k.roof("fp32") == 1e11 and k.bytes_per_s == 2e10 and not k.flagged   # returned, to be used
    assert k.cache_file is None and not list(_cache_dir.rglob("*.json"))
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "not cached: other processes kept 1.00 of 2 CPUs busy" in warnings[0], warnings
    assert REFRESH in warnings[0] and any("other processes kept" in n for n in k.notes)
    assert k.load["competing_share"] == pytest.approx(0.5)
    quiet = measure_ceilings(device="cpu", quick=True, trial=steady(), caches=CACHES, load_meter=_busy(0.0))
    assert quiet.cache_file is not None
    saved = json.loads(Path(quiet.cache_file).read_text())
    assert saved["load"]["competing_share"] == 0.0 and saved["load"]["loadavg_1m_after"] == 2.1   # recorded beside it


def test_competing_load_does_not_stop_a_gpu_cache() -> None:
    # the rule is about CPU ceilings (a GPU's roofs do not share the host's cores); the load is recorded
    from hwprof.hardware.load import load_note
    k = C.Ceilings("cuda", "gpu", "2.13", "2026-12-01", "measured", {"bf16": 1e15}, load=load_record(2.0, 2.0, 2, 2))
    assert competed(k.load) and "not cached" in load_note(k.load)
    assert C.Ceilings.from_dict(k.to_dict()).load == k.load


# ----------------------------------------------------------------------------- damaged cache files
def _valid_cache() -> dict[str, Any]:
    k = measure_ceilings(device="cpu", quick=True, trial=steady(), caches=CACHES)
    return json.loads(Path(k.cache_file or "").read_text())


DAMAGED: dict[str, Callable[[dict[str, Any]], str]] = {
    "garbage": lambda d: "{not json",
    "a list": lambda d: "[1, 2, 3]",
    "a string roof": lambda d: json.dumps({**d, "flop_per_s": "fast"}),
    "a slow roof named fast": lambda d: json.dumps({**d, "flop_per_s": {"fp32": "fast"}}),
    "a negative roof": lambda d: json.dumps({**d, "flop_per_s": {"fp32": -3.2778e11}}),
    "an infinite bandwidth": lambda d: json.dumps({**d, "bytes_per_s": float("inf")}),
    "a level of text": lambda d: json.dumps({**d, "levels": ["L1"]}),
    "no device": lambda d: json.dumps({k: v for k, v in d.items() if k != "device_type"}),
    "a trial without numbers": lambda d: json.dumps({**d, "trials": [{"mode": "fp32"}]}),
}


@pytest.mark.parametrize("case", sorted(DAMAGED))
def test_a_damaged_cache_is_one_warning_then_measured_and_replaced(case: str, caplog: pytest.LogCaptureFixture) -> None:
    _path().write_text(DAMAGED[case](_valid_cache()))
    fake = steady(fp32=2e11)
    with caplog.at_level("WARNING"):
        k = measure_ceilings(device="cpu", quick=True, trial=fake, caches=CACHES)
    warnings = _warnings(caplog)
    assert len(warnings) == 1 and "ignoring damaged ceilings cache" in warnings[0] and REFRESH in warnings[0], warnings
    assert k.source == "measured" and k.roof("fp32") == 2e11 and fake.calls       # measured again ...
    assert measure_ceilings(device="cpu", quick=True, trial=FakeTrials({})).roof("fp32") == 2e11   # ... and cached


def test_a_damaged_cache_through_the_cli_is_one_line_and_a_finished_run(capsys: pytest.CaptureFixture[str],
                                                                        caplog: pytest.LogCaptureFixture) -> None:
    _path().parent.mkdir(parents=True)
    _path().write_text('{"flop_per_s": "fast"}')
    assert main(["ceilings", "--device", "cpu", "--quick"]) == 0
    out, err = capsys.readouterr()
    assert "fp32_flop_per_s" in out and "100.00GFLOP/s" in out
    lines = _stderr_lines(err, caplog)
    assert len(lines) == 1 and lines[0].startswith("hwprof: warning: ignoring damaged ceilings cache"), lines


def test_predict_on_a_damaged_ceilings_file_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for text, says in (("[1, 2, 3]", "a JSON list, not an object"), ('{"flop_per_s": "fast"}', "device_type"),
                       (json.dumps({**_valid_cache(), "flop_per_s": {"fp32": -3.2778e11}}), "not a positive rate")):
        (tmp_path / "k.json").write_text(text)
        assert main(["predict", "lenet5", "--on", str(tmp_path / "k.json")]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("hwprof predict: error: ") and says in err, err


# ----------------------------------------------------------------------------- unusable cache folders
def _read_only(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``folder`` read-only: chmod 555, and, since root writes through that, ``os.open`` refusing
    to create or write anything in it (EACCES), as the kernel does for everyone else."""
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o555)
    real = os.open

    def guarded(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
        writes = flags & (os.O_CREAT | os.O_WRONLY | os.O_RDWR)
        if writes and os.path.abspath(os.fspath(path)).startswith(str(folder) + os.sep):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
        return real(path, flags, *args, **kwargs)
    monkeypatch.setattr(os, "open", guarded)


@pytest.mark.parametrize("case", ["read-only folder", "HWPROF_CACHE_DIR is a file", "--cache-dir is a file",
                                  "a folder in place of the file"])
def test_an_unusable_cache_folder_is_one_line_and_a_finished_run(case: str, tmp_path: Path, _cache_dir: Path,
                                                                 monkeypatch: pytest.MonkeyPatch,
                                                                 capsys: pytest.CaptureFixture[str],
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    argv = ["ceilings", "--device", "cpu", "--quick", "--refresh"]
    afile = tmp_path / "afile"
    afile.write_text("not a folder\n")
    if case == "read-only folder":
        _read_only(_cache_dir / "ceilings", monkeypatch)
    elif case == "HWPROF_CACHE_DIR is a file":
        monkeypatch.setenv("HWPROF_CACHE_DIR", str(afile))
    elif case == "--cache-dir is a file":
        argv += ["--cache-dir", str(afile)]
    else:
        _path().mkdir(parents=True)
    try:
        rc = main(argv)
    finally:
        (_cache_dir / "ceilings").chmod(0o755) if (_cache_dir / "ceilings").exists() else None
    out, err = capsys.readouterr()
    assert rc == 0 and "fp32_flop_per_s" in out and "not cached" in out.splitlines()[0]
    lines = _stderr_lines(err, caplog)
    assert len(lines) == 1 and "is not usable" in lines[0] and "not caching" in lines[0], lines
    assert afile.read_text() == "not a folder\n" and not [p for p in _cache_dir.rglob("*.json") if p.is_file()]
    assert case != "a folder in place of the file" or _path().is_dir()      # not ours to remove


# ----------------------------------------------------------------------------- two measurements at once
def test_a_second_refresh_waits_for_the_first_and_reuses_its_result(caplog: pytest.LogCaptureFixture) -> None:
    # the first refresh holds the lock while its (fake) trials run; a second one started then waits
    # instead of measuring beside it, and returns what the first cached, having run no trial
    go = threading.Event()

    def held_back(mode: str, size: int) -> C.TrialResult:
        go.wait(30)
        return first_trials(mode, size)
    first_trials = steady(fp32=2e11)
    results: dict[str, C.Ceilings] = {}
    first = threading.Thread(target=lambda: results.update(
        first=measure_ceilings(device="cpu", quick=True, refresh=True, trial=held_back, caches=CACHES)))
    never = FakeTrials({})
    second = threading.Thread(target=lambda: results.update(
        second=measure_ceilings(device="cpu", quick=True, refresh=True, trial=never, caches=CACHES)))
    with caplog.at_level("INFO"):
        first.start()
        while not (_path().parent.exists() and list(_path().parent.glob("*.lock"))):
            time.sleep(0.01)
        second.start()
        deadline = time.monotonic() + 30
        while "waiting for another hwprof" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.01)
        go.set()
        first.join(30)
        second.join(30)
    assert "waiting for another hwprof" in caplog.text
    assert results["first"].source == "measured" and results["first"].cache_file is not None
    assert results["second"].source == "cache" and never.calls == []
    assert results["second"].roof("fp32") == 2e11 and "measured by another hwprof run" in " ".join(results["second"].notes)
