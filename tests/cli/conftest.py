"""Fixtures of the CLI tests: fixed ceilings instead of a measurement, user model modules."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest
from cli_helpers import fixed_ceilings

from hwprof.hardware.ceilings import Ceilings


@pytest.fixture
def no_ceilings_measured(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """``hwprof profile`` gets :func:`fixed_ceilings`; the list records each call."""
    calls: list[Any] = []

    def fake(*args: Any, **kwargs: Any) -> Ceilings:
        calls.append((args, kwargs))
        return fixed_ceilings()
    monkeypatch.setattr("hwprof.cli.profile.measure_ceilings", fake)
    return calls


USER_MODELS = '''
import logging
import os
import signal

import torch
from torch import nn


class Boom(nn.Module):
    def forward(self, x):
        raise RuntimeError("boom: this layer is broken")


def raises():
    """A model whose second layer raises in forward."""
    return nn.Sequential(nn.Linear(4, 4), Boom(), nn.Linear(4, 2))


class CtrlC(nn.Module):
    def forward(self, x):
        os.kill(os.getpid(), signal.SIGINT)   # what Ctrl-C in the terminal does
        return x


def interrupted():
    """A model whose forward is interrupted by SIGINT."""
    return nn.Sequential(nn.Linear(4, 4), CtrlC())


class Sleeps(nn.Module):
    def forward(self, x):
        print("in forward", flush=True)   # the test sends its signals once this line is out
        import time
        time.sleep(60)
        return x


def sleeps():
    """A model whose forward says so on stdout, then sleeps for a minute (a signal ends it)."""
    return nn.Sequential(nn.Linear(4, 4), Sleeps())


def warns():
    """A model whose construction logs a warning on an hwprof logger."""
    logging.getLogger("hwprof.fake").warning("something odd about this model")
    return nn.Sequential(nn.Linear(4, 4))


def fails_to_build():
    raise ValueError("bad hyper-parameter")
'''


@pytest.fixture
def user_models(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``hwprof_test_models`` importable (in this process and, through PYTHONPATH, in subprocesses):
    ``raises``, ``interrupted``, ``sleeps``, ``warns``, ``fails_to_build``. Returns its folder."""
    folder = tmp_path / "user_models"
    folder.mkdir()
    (folder / "hwprof_test_models.py").write_text(textwrap.dedent(USER_MODELS))
    monkeypatch.syspath_prepend(str(folder))
    return folder
