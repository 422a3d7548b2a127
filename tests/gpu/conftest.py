"""The fake CUDA device (``fake_cuda.py``) as a fixture, and the measurement tests' helpers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "measuring"))   # measure_helpers

from fake_cuda import FakeGpu, installed  # noqa: E402


@pytest.fixture
def fake_gpu(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeGpu]:
    """A fake CUDA device for the test (see fake_cuda.py): the code path runs, the numbers are the fake's."""
    with installed(monkeypatch) as gpu:
        yield gpu
