"""bench/memory_validation.py runs end to end (a fake measure here) and records an OOM point."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd
import pytest

import hwprof.memory.validate as validate_mod
from hwprof.errors import MeasurementError

SCRIPT = Path(__file__).resolve().parents[2] / "bench" / "memory_validation.py"


def load_script() -> Any:
    spec = importlib.util.spec_from_file_location("memory_validation", SCRIPT)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_sweep_records_oom_and_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def measure(model: Any, inputs: Any, *, batch: int | None = None, **kw: Any) -> Any:
        if batch is not None and batch > 8:
            raise MeasurementError("bwd", batch, "out of memory", oom=True)
        return SimpleNamespace(memory={"rss_peak_bytes": 3_000_000, "rss_baseline_bytes": 1_000_000})
    monkeypatch.setattr(validate_mod, "load_measure", lambda: measure)
    bench = load_script()
    assert bench.main(["--out", str(tmp_path), "--device", "cpu", "--quick", "--models", "lenet5"]) == 0
    df = pd.read_csv(tmp_path / "memory-validation-cpu.csv")
    # lenet5 at batch 8 and 32, train and inference, 4 predictors each
    assert len(df) == 2 * 2 * 4
    assert set(df["predictor"]) == {"seed", "seed_per_layer", "formula", "simulated"}
    assert df.loc[df["batch"] == 32, "oom"].all() and not df.loc[df["batch"] == 8, "oom"].any()
    assert df.loc[df["batch"] == 32, "error_pct"].isna().all()
    assert (df.loc[df["batch"] == 8, "compared_bytes"] == 2_000_000).all()
