"""Fixtures for the measurement tests: a scripted clock and tiny CPU models."""

from __future__ import annotations

import pytest
from measure_helpers import FakeClock, TinyNet


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock(step_ns=1_000)


@pytest.fixture
def tiny_net() -> TinyNet:
    return TinyNet()
