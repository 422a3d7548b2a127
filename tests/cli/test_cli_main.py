"""The command line's plumbing: Ctrl-C, import errors, a failing model constructor, what stderr shows."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import hwprof.cli as cli
from hwprof.cli import main
from hwprof.cli.common import LogFormatter


def _env(*paths: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.pop("KINETO_LOG_LEVEL", None)
    env["PYTHONPATH"] = os.pathsep.join([*map(str, paths), env.get("PYTHONPATH", "")])
    return env


# ----------------------------------------------------------------------------- Ctrl-C
@pytest.mark.parametrize("where", ["hwprof.cli.count.count", "hwprof.cli.count.count_outputs",
                                   "hwprof.cli.count._build_without_memory"])
def test_ctrl_c_anywhere_is_one_line_and_130(where: str, monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    def interrupted(*args: Any, **kwargs: Any) -> Any:
        raise KeyboardInterrupt
    monkeypatch.setattr(where, interrupted)
    assert main(["count", "lenet5"]) == 130
    assert capsys.readouterr().err == "hwprof count: interrupted\n"


def test_ctrl_c_in_a_real_process(user_models: Path, tmp_path: Path) -> None:
    # the model's forward sends SIGINT to its own process, as Ctrl-C in the terminal does
    r = subprocess.run([sys.executable, "-m", "hwprof", "count", "hwprof_test_models:interrupted", "--input", "4",
                        "--out", str(tmp_path / "o")], capture_output=True, text=True, timeout=300,
                       env=_env(user_models))
    assert r.returncode == 130 and r.stderr == "hwprof count: interrupted\n", r.stderr
    assert sorted(os.listdir(tmp_path)) == ["user_models"]   # no folder, not even half of one


# ----------------------------------------------------------------------------- import errors
def _command_module(folder: Path, name: str, body: str) -> str:
    (folder / f"{name}.py").write_text(body + "\n\ndef add_arguments(p):\n    pass\n\n\ndef run(args):\n    return 0\n")
    return name


def test_a_real_import_error_propagates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    module = _command_module(tmp_path, "hwprof_test_cmd_bug", "from hwprof.errors import NoSuchName")
    monkeypatch.setitem(cli.COMMANDS, "bug", (module, "a command with a bug"))
    with pytest.raises(ImportError, match="NoSuchName"):
        main(["count", "lenet5"])
    module = _command_module(tmp_path, "hwprof_test_cmd_bug2", "import hwprof.no_such_module")
    monkeypatch.setitem(cli.COMMANDS, "bug", (module, "a command importing a module that does not exist"))
    with pytest.raises(ModuleNotFoundError, match="hwprof.no_such_module"):
        main(["bug"])


def test_a_missing_optional_dependency_is_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.syspath_prepend(str(tmp_path))
    module = _command_module(tmp_path, "hwprof_test_cmd_optional", "import hwprof_test_absent_extra.sub")
    monkeypatch.setitem(cli.COMMANDS, "extra", (module, "a command needing an optional package"))
    monkeypatch.setattr(cli, "OPTIONAL_DEPENDENCIES", cli.OPTIONAL_DEPENDENCIES | {"hwprof_test_absent_extra"})
    assert main(["extra"]) == 2
    assert capsys.readouterr().err == ("hwprof extra: error: this command needs the optional package "
                                       "'hwprof_test_absent_extra', which is not installed\n")
    assert main(["count", "lenet5", "--input", "1x28x28"]) == 0     # the other commands still work


def test_a_failing_model_constructor_is_one_line(user_models: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["memory", "hwprof_test_models:fails_to_build"]) == 2
    assert capsys.readouterr().err == ("hwprof memory: error: building model 'hwprof_test_models:fails_to_build' "
                                       "failed: ValueError: bad hyper-parameter\n")


# ----------------------------------------------------------------------------- stderr
def test_log_formatter() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(LogFormatter())
    for name, level in (("hwprof.measuring.timers", logging.WARNING), ("hwprof", logging.INFO),
                        ("matplotlib.font_manager", logging.ERROR)):
        handler.handle(logging.LogRecord(name, level, __file__, 1, "odd: %d", (3,), None))
    assert stream.getvalue().splitlines() == ["hwprof: warning: odd: 3", "hwprof: info: odd: 3",
                                              "matplotlib.font_manager: error: odd: 3"]


def test_stderr_has_hwprof_lines_and_no_kineto_lines_or_bars(user_models: Path) -> None:
    r = subprocess.run([sys.executable, "-m", "hwprof", "count", "hwprof_test_models:warns", "--input", "4"],
                       capture_output=True, text=True, timeout=300, env=_env(user_models))
    assert r.returncode == 0, r.stderr
    assert r.stderr == "hwprof: warning: something odd about this model\n"
    # measure runs torch.profiler sessions (allocator trace, per-op times), whose Kineto library
    # prints `USDT:... profiler_start` lines; with stderr in a pipe, no progress bars either
    r = subprocess.run([sys.executable, "-m", "hwprof", "measure", "lenet5", "--device", "cpu", "--budget", "0.01",
                        "--per-op"], capture_output=True, text=True, timeout=600, env=_env())
    assert r.returncode == 0, r.stderr
    assert "USDT" not in r.stderr and "STAGE" not in r.stderr and "\r" not in r.stderr, r.stderr
    assert all(line.startswith("hwprof: ") for line in r.stderr.splitlines()), r.stderr


def test_kineto_level_left_alone_when_set(monkeypatch: pytest.MonkeyPatch) -> None:
    from hwprof.cli.common import quiet_profiler_log

    monkeypatch.setenv("KINETO_LOG_LEVEL", "2")
    quiet_profiler_log()
    assert os.environ["KINETO_LOG_LEVEL"] == "2"
    monkeypatch.delenv("KINETO_LOG_LEVEL")
    quiet_profiler_log()
    assert os.environ["KINETO_LOG_LEVEL"] == "6"


def test_the_cli_help_states_the_zoo_default_sequence_length() -> None:
    # cli/common repeats the value so that it imports no torch; they must agree
    from hwprof import zoo
    from hwprof.cli import common
    assert common.HF_DEFAULT_SEQ == zoo.HF_DEFAULT_SEQ
