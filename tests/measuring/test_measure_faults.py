"""Faults: no CUDA, out of memory (injected), wrong input shape, NVML unavailable."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import hwprof.measuring.probes as probes
import hwprof.measuring.runner as runner
from hwprof.device import resolve_device
from hwprof.errors import DeviceUnavailableError, InputShapeError, MeasurementError
from hwprof.measuring.runner import is_oom, measure

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="checks behaviour without CUDA")
QUICK = dict(budget_s=0.01, warmup=1, min_reps=2, max_reps=2)


@no_cuda
def test_cuda_without_cuda_raises_one_line() -> None:
    with pytest.raises(DeviceUnavailableError) as e:
        measure(nn.Linear(2, 2), "2", device="cuda")
    assert "\n" not in str(e.value)
    assert "CUDA is not available" in str(e.value)


@no_cuda
def test_auto_picks_cpu_with_a_note() -> None:
    notes: list[str] = []
    assert resolve_device("auto", notes).type == "cpu"
    m = measure(nn.Linear(2, 2), "2", device="auto", **QUICK)
    assert m.device["type"] == "cpu"
    assert any("picked cpu" in n for n in m.notes)


def test_unknown_device_is_refused() -> None:
    with pytest.raises(DeviceUnavailableError):
        resolve_device("tpu")


class _OomInBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):  # type: ignore[no-untyped-def]
        return x * 1.0

    @staticmethod
    def backward(ctx, g):  # type: ignore[no-untyped-def]
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")


class OomBackward(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.lin = nn.Linear(4, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _OomInBackward.apply(self.lin(x))


def test_oom_in_backward_names_the_phase() -> None:
    model = OomBackward()
    with pytest.raises(MeasurementError) as e:
        measure(model, "4", batch=3, device="cpu", mode="train", optimizer="adam", **QUICK)
    err = e.value
    assert err.oom is True
    assert err.phase == "bwd"
    assert err.batch == 3
    assert "out of memory" in str(err)
    assert model.training is True and model.lin.weight.grad is None   # restored


class OomForward(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 GB")


def test_cpu_oom_in_first_forward_is_a_measurement_error_not_a_shape_error() -> None:
    with pytest.raises(MeasurementError) as e:
        measure(OomForward(), "4", device="cpu", **QUICK)
    assert e.value.oom and e.value.phase == "fwd_nograd"


def test_is_oom() -> None:
    assert is_oom(RuntimeError("CUDA out of memory. Tried to allocate"))
    assert is_oom(torch.cuda.OutOfMemoryError("x"))
    assert not is_oom(RuntimeError("mat1 and mat2 shapes cannot be multiplied"))


def test_wrong_input_shape_names_the_module() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Sequential(nn.Linear(16, 2)))
    with pytest.raises(InputShapeError) as e:
        measure(model, "4", batch=5, device="cpu", **QUICK)
    err = e.value
    assert err.module_path == "2.0"
    assert err.module_type == "Linear"
    assert err.input_shapes == [(5, 8)]
    assert "2.0" in str(err) and "\n" not in str(err)


def _no_pynvml() -> object:
    raise ImportError("No module named 'pynvml'")


def test_nvml_missing_gives_none_fields_and_one_note(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(probes, "_import_pynvml", _no_pynvml)
    with probes.MemoryProbes(torch.device("cpu"), use_nvml=True) as p:
        pass
    out = p.result()
    assert out.nvml_used_peak_bytes is None and out.nvml_baseline_bytes is None
    assert out.nvml_process_bytes is None
    assert len(p.notes) == 1 and "NVML unavailable" in p.notes[0]
    # the same through measure(): the run goes on, the note reaches m.notes
    monkeypatch.setattr(runner, "_use_nvml", lambda dev: True)
    m = measure(nn.Linear(2, 2), "2", device="cpu", **QUICK)
    assert m.memory["nvml_used_peak_bytes"] is None
    assert sum("NVML unavailable" in n for n in m.notes) == 1


def test_nvml_without_driver_is_a_note_not_a_crash() -> None:
    nv = probes.Nvml(torch.device("cuda", 0))
    if nv.ok:
        nv.close()
        pytest.skip("NVML works here")
    assert nv.reason and nv.reason.startswith("NVML unavailable")


def test_rss_probes_on_cpu() -> None:
    m = measure(nn.Linear(64, 64), "64", batch=8, device="cpu", **QUICK)
    mem = m.memory
    assert mem["rss_peak_bytes"] >= mem["rss_baseline_bytes"] > 0
    assert mem["ru_maxrss_bytes"] >= mem["rss_peak_bytes"] // 2
    assert mem["alloc_peak_bytes"] is None and mem["reserved_peak_bytes"] is None
    assert not torch.cuda.is_initialized()   # no probe created a CUDA context


def test_peak_sampler_keeps_the_maximum() -> None:
    values = iter([5, 9, 3] + [1] * 10_000)
    s = probes.PeakSampler(lambda: next(values), interval_s=0.001).start()
    peak = s.stop()
    assert peak == 9 and s.samples >= 2


def test_threads_are_set_and_restored() -> None:
    prev = torch.get_num_threads()
    m = measure(nn.Linear(2, 2), "2", device="cpu", threads=1, **QUICK)
    assert m.device["threads"] == 1
    assert torch.get_num_threads() == prev


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        measure(nn.Linear(2, 2), "2", device="cpu", mode="training")
    with pytest.raises(ValueError):
        measure(nn.Linear(2, 2), "2", device="cpu", mode="train", optimizer="lion")
