"""Golden files: the CLI's whole table/CSV/JSON/Markdown output on the seed models is unchanged.

A failure prints a diff; if the change is intended, regenerate (``make golden``) and commit the
new files with the change that explains them."""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from cases import CASES, FILES, run_cli  # noqa: E402


@pytest.mark.parametrize("name", sorted(CASES))
def test_cli_output_matches_golden(name: str) -> None:
    expected = (FILES / name).read_text()
    got = run_cli(CASES[name])
    if got != expected:
        diff = "".join(difflib.unified_diff(expected.splitlines(True), got.splitlines(True),
                                            f"golden/{name}", "now", n=1))
        pytest.fail(f"hwprof {' '.join(CASES[name])} changed (run `make golden` if intended):\n{diff[:4000]}")


def test_no_stale_golden_files() -> None:
    assert sorted(p.name for p in FILES.iterdir()) == sorted(CASES)
