"""The user's model failing inside a command is one line that names the module and says what to do
from the command line (not API advice such as "pass loss_fn="), exit 2; HWPROF_TRACEBACK=1 shows
the traceback instead. A failure that is not the model's (a bug) keeps its traceback."""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

import pytest

from hwprof.cli import main

FAILING_MODELS = '''
import torch
from torch import nn


class Returns(nn.Module):
    """forward returns ``what(self.fc(x))``."""
    def __init__(self, what):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.what = what

    def forward(self, x):
        return self.what(self.fc(x))


def returns_none():
    return Returns(lambda y: None)


def returns_int():
    return Returns(lambda y: 3)


def returns_long():
    return Returns(lambda y: y.argmax(-1))


if not hasattr(torch.ops.hwprof_test, "twice"):
    @torch.library.custom_op("hwprof_test::twice", mutates_args=())
    def twice(x: torch.Tensor) -> torch.Tensor:
        return x * 2

    @twice.register_fake
    def _(x):
        return torch.empty_like(x)


class CustomOp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.ops.hwprof_test.twice(self.fc(x))


def custom_op():
    return nn.Sequential(nn.Linear(4, 4), CustomOp())


class Item(nn.Module):
    def forward(self, x):
        return x if x.sum().item() > 0 else -x


class NonZero(nn.Module):
    def forward(self, x):
        return x[x > 0]


def item():
    return nn.Sequential(nn.Linear(4, 4), Item())


def nonzero():
    return nn.Sequential(nn.Linear(4, 4), NonZero())


class SecondCall(nn.Module):
    """Fine on its first call, broken on every later one (state kept between calls)."""
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls > 1:
            raise RuntimeError("the cache was already consumed")
        return x


def fails_later():
    return nn.Sequential(nn.Linear(4, 4), SecondCall())
'''


@pytest.fixture
def failing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    folder = tmp_path / "models"
    folder.mkdir()
    (folder / "hwprof_failing_models.py").write_text(textwrap.dedent(FAILING_MODELS))
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delenv("HWPROF_TRACEBACK", raising=False)
    return "hwprof_failing_models"


@pytest.fixture
def fixed(monkeypatch: pytest.MonkeyPatch) -> None:
    from cli_helpers import fixed_ceilings
    monkeypatch.setattr("hwprof.cli.profile.measure_ceilings", fixed_ceilings)


FAST = ["--device", "cpu", "--budget", "0.01"]
# (argv after the model, module named, what the line tells to do)
CASES: list[tuple[str, list[str], str, str]] = [
    ("returns_none", ["measure", "--mode", "train", *FAST], "module '<root>' (Returns)", "--mode inference"),
    ("returns_int", ["measure", "--mode", "train", *FAST], "module '<root>' (Returns)", "--mode inference"),
    ("returns_long", ["measure", "--mode", "train", *FAST], "module '<root>' (Returns)", "--mode inference"),
    ("returns_none", ["profile", "--mode", "train", "--device", "cpu", "--quick"], "(Returns)", "--mode inference"),
    ("custom_op", ["count", "--backward"], "custom op hwprof_test.twice", "without --backward"),
    ("custom_op", ["measure", "--mode", "train", *FAST], "custom op hwprof_test.twice", "--mode inference"),
    ("item", ["count"], "module '1' (Item) calls .item()", "`hwprof measure` runs it for real"),
    ("item", ["memory"], "module '1' (Item)", "`hwprof measure`"),
    ("item", ["predict", "--on", "H100"], "module '1' (Item)", "`hwprof measure`"),
    ("nonzero", ["count"], "module '1' (NonZero) calls an op whose output size depends on the values",
     "`hwprof measure`"),
    ("fails_later", ["measure", *FAST], "module '1' (SecondCall) failed while hwprof measure ran it: RuntimeError: "
     "the cache was already consumed", "HWPROF_TRACEBACK=1"),
    ("fails_later", ["profile", "--device", "cpu", "--quick"], "module '1' (SecondCall)", "HWPROF_TRACEBACK=1"),
]


@pytest.mark.parametrize("model, argv, names, todo", CASES, ids=[f"{c[1][0]} {c[0]}" for c in CASES])
def test_a_model_failure_is_one_line_naming_the_module_and_what_to_do(model: str, argv: list[str], names: str,
                                                                       todo: str, failing: str, fixed: None,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    rc = main([argv[0], f"{failing}:{model}", "--input", "4", *argv[1:]])
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert rc == 2 and len(lines) == 1 and lines[0].startswith(f"hwprof {argv[0]}: error: "), err
    assert names in lines[0] and todo in lines[0], lines[0]
    assert "loss_fn" not in err and "Traceback" not in err + out


def test_hwprof_traceback_shows_the_traceback(failing: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HWPROF_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="the cache was already consumed"):
        main(["measure", f"{failing}:fails_later", "--input", "4", *FAST])


def test_a_failure_in_hwprof_itself_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    # an exception from hwprof's own code, even inside a module call (one of its hooks), is a bug:
    # it must not be dressed up as the model's failure
    import hwprof.cli.count as count_cli

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug in hwprof")
    monkeypatch.setattr(count_cli, "count_outputs", broken)
    with pytest.raises(RuntimeError, match="a bug in hwprof"):
        main(["count", "lenet5"])



def test_an_exception_from_an_hwprof_hook_inside_a_module_call_is_not_the_models() -> None:
    # the traceback walk stops at the innermost nn.Module call; a frame of hwprof's below it (a
    # forward hook, the counting dispatch mode) makes it hwprof's failure: explain() says None
    import torch
    from torch import nn

    import hwprof
    from hwprof.cli.failures import explain

    where = str(Path(hwprof.__file__).parent / "a_hook.py")   # code that says it lives in hwprof/
    scope: dict[str, Any] = {}
    exec(compile("def hook(module, args):\n    raise ValueError('inside a hook')\n", where, "exec"), scope)
    outside: dict[str, Any] = {}
    exec(compile("def hook(module, args):\n    raise ValueError('inside a hook')\n", "/elsewhere/user.py", "exec"),
         outside)
    for fn, expected_none in ((scope["hook"], True), (outside["hook"], False)):
        layer = nn.Linear(4, 4)
        layer.register_forward_pre_hook(fn)
        with pytest.raises(ValueError) as info:
            layer(torch.zeros(1, 4))
        assert (explain(info.value, "count") is None) == expected_none
