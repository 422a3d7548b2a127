"""`hwprof run -- python script.py`: an unmodified script, its output and exit code its own, a profile folder."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pandas as pd
import pytest
from step_scenarios import CEILINGS

from hwprof.cli import main
from hwprof.cli.run import own_arguments, target_of
from hwprof.errors import HwprofError

SCRIPT = textwrap.dedent('''
    import sys
    import torch
    import torch.nn.functional as F
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    steps = int(sys.argv[1])
    for i in range(steps):
        x, y = torch.randn(8, 16), torch.randint(0, 4, (8,))
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()
        print(f"step {i} loss {loss.item():.8f}")
    print("args", sys.argv[2:])
    sys.exit(3)
''')


@pytest.fixture
def script(tmp_path: Path) -> Path:
    p = tmp_path / "train.py"
    p.write_text(SCRIPT)
    return p


@pytest.fixture
def fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("hwprof.cli.run._ceilings", lambda args, device: CEILINGS)


def _plain(script: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=120)


def test_same_output_same_exit_code_and_a_profile_folder(script: Path, tmp_path: Path, fixed: None,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    plain = _plain(script, "7", "--out", "theirs")
    assert plain.returncode == 3
    out = tmp_path / "out"
    rc = main(["run", "--steps", "2:6", "--out", str(out), "--", "python", str(script), "7", "--out", "theirs"])
    captured = capsys.readouterr()
    assert rc == 3                                   # the script's own exit code
    assert captured.out == plain.stdout              # its losses, bit for bit, and its own --out argument
    layers = pd.read_csv(out / "layers.csv", index_col="path")
    assert {"model.0", "model.2"} <= set(layers.index)
    assert (out / "report.html").is_file() and (out / "trace.json").is_file() and (out / "manifest.json").is_file()
    assert "captured steps 2:6" in captured.err and "step:" in captured.err   # hwprof's report on stderr


def test_a_script_that_never_reaches_the_steps_says_how_far_it_got(script: Path, fixed: None,
                                                                    capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["run", "--steps", "3:6", str(script), "2"])
    err = capsys.readouterr().err
    assert rc == 3                                   # the script failed (exit 3): its code, not hwprof's
    assert "ran 2 step(s)" in err and "3:6" in err


def test_in_a_real_process(script: Path, tmp_path: Path) -> None:
    env = {**os.environ, "HWPROF_CACHE_DIR": str(tmp_path / "cache")}
    r = subprocess.run([sys.executable, "-m", "hwprof", "run", "--quick", "--steps", "1:4", "--out", str(tmp_path / "o"),
                        "--", "python", str(script), "5"], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 3, r.stderr
    assert r.stdout == _plain(script, "5").stdout
    assert (tmp_path / "o" / "layers.csv").is_file()
    assert "Traceback" not in r.stderr


def test_target_forms(script: Path) -> None:
    assert target_of(["--", "python", str(script), "a"]).argv == [str(script), "a"]
    assert target_of([str(script)]).path == script
    assert target_of(["--", sys.executable, "-m", "pkg.mod", "x"]).module == "pkg.mod"
    for bad, msg in (([], "no script"), (["python", "-c", "1"], "not supported"), (["nope.py"], "no such file")):
        with pytest.raises(HwprofError, match=msg):
            target_of(bad)


def test_own_arguments_stop_at_the_script() -> None:
    assert own_arguments(["--steps", "1:3", "--out", "d", "--", "python", "t.py", "--out", "x"]) == \
        ["--steps", "1:3", "--out", "d"]
    assert own_arguments(["t.py", "--out", "x"]) == []


def test_bad_steps_is_one_line(script: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", "--steps", "6:3", str(script)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("hwprof run: error: ") and "--steps" in err[0], err
