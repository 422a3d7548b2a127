"""SIGINT, SIGTERM and SIGHUP end a command alike: one line, exit 128 + n, no temporary folder left;
signals after the first are ignored (no traceback however often Ctrl-C is pressed); a folder left
by a killed run (SIGKILL: nothing can clean up) is removed by the next run into the same folder."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from hwprof.cli import main

# a real `hwprof` process that receives `SIGNAL` while its --out folder is half written: after the
# result files, before the manifest (hwprof.cli.common._write_manifest is the last step)
WRITER = '''
import os, signal, sys, time
import hwprof.cli.common as common
from hwprof.cli import main

real = common._write_manifest
SIG = getattr(signal, sys.argv[1])
def signalled(folder):
    os.kill(os.getpid(), SIG)
    time.sleep(30)          # the handler raises at once; SIGKILL ends the process here
    return real(folder)
common._write_manifest = signalled
sys.argv = ["hwprof", *sys.argv[2:]]
sys.exit(main())
'''


def _env(*paths: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")])
    return env


def _writer(tmp_path: Path, sig: str, out: Path) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "writer.py"
    script.write_text(textwrap.dedent(WRITER))
    return subprocess.run([sys.executable, str(script), sig, "count", "lenet5", "--out", str(out)],
                          capture_output=True, text=True, timeout=300, env=_env())


def _siblings(parent: Path) -> list[str]:
    return sorted(p.name for p in parent.iterdir())


@pytest.mark.parametrize("sig, rc, line", [("SIGTERM", 143, "hwprof count: interrupted (SIGTERM)"),
                                           ("SIGHUP", 129, "hwprof count: interrupted (SIGHUP)"),
                                           ("SIGINT", 130, "hwprof count: interrupted")])
def test_a_signal_while_writing_is_one_line_and_leaves_no_temporary_folder(sig: str, rc: int, line: str,
                                                                            tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert main(["count", "lenet5", "--out", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    r = _writer(tmp_path, sig, out)
    assert r.returncode == rc and r.stderr.splitlines() == [line], r.stderr
    assert _siblings(tmp_path) == ["run", "writer.py"]                    # no .run.tmp-* left
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before      # the earlier result as it was


def test_a_killed_runs_temporary_folder_is_removed_by_the_next_run(tmp_path: Path,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "run"
    r = _writer(tmp_path, "SIGKILL", out)
    assert r.returncode == -signal.SIGKILL
    stale = [n for n in _siblings(tmp_path) if n.startswith(".run.tmp-")]
    assert len(stale) == 1                                                # what SIGKILL leaves behind
    assert main(["count", "lenet5", "--out", str(out)]) == 0
    assert _siblings(tmp_path) == ["run", "writer.py"]
    assert "hwprof.partial" not in " ".join(p.name for p in out.iterdir())


def test_five_quick_ctrl_cs_print_one_line_and_no_traceback(user_models: Path) -> None:
    # the first SIGINT interrupts the model's forward; the other four come while hwprof unwinds,
    # prints its line and exits: without ignoring them, one lands in a handler or in the
    # interpreter's teardown and shows a KeyboardInterrupt traceback
    p = subprocess.Popen([sys.executable, "-m", "hwprof", "count", "hwprof_test_models:sleeps", "--input", "4"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_env(user_models))
    assert p.stdout is not None and p.stdout.readline() == "in forward\n"
    for _ in range(5):
        p.send_signal(signal.SIGINT)
        time.sleep(0.01)
    _, err = p.communicate(timeout=120)
    assert p.returncode == 130 and err == "hwprof count: interrupted\n", err


def test_sigterm_in_process_returns_143_and_restores_the_handlers(user_models: Path, monkeypatch: pytest.MonkeyPatch,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    import hwprof.cli.count as count_cli

    def terminated(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)     # as `kill PID` would
        time.sleep(5)
    monkeypatch.setattr(count_cli, "count", terminated)
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    assert main(["count", "lenet5"]) == 143
    assert capsys.readouterr().err == "hwprof count: interrupted (SIGTERM)\n"
    assert {s: signal.getsignal(s) for s in before} == before


def test_a_signal_ignored_at_start_stays_ignored(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    # `nohup hwprof ...` starts with SIGHUP ignored: a hang-up must not end the run
    import hwprof.cli.count as count_cli

    real = count_cli.count

    def hung_up(*args: object, **kwargs: object) -> object:
        os.kill(os.getpid(), signal.SIGHUP)
        return real(*args, **kwargs)
    monkeypatch.setattr(count_cli, "count", hung_up)
    previous = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        assert main(["count", "lenet5"]) == 0
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, previous)


def test_a_rank_other_than_0_ends_silently(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    # under torchrun only rank 0 prints; when one rank fails the launcher SIGTERMs the others, whose
    # line would only repeat rank 0's (tests/distributed/test_torchrun.py: "the other rank says nothing")
    import hwprof.cli.count as count_cli

    def terminated(*args: object, **kwargs: object) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
    monkeypatch.setattr(count_cli, "count", terminated)
    monkeypatch.setenv("RANK", "1")
    assert main(["count", "lenet5"]) == 143
    assert capsys.readouterr().err == ""
