"""The fake CUDA device itself: its stand-ins answer to the names and arguments of the real ones,
in the real units, and refuse what CUDA refuses (reading an event before a synchronisation).

These tests check the test double, so that the tests that use it (``test_fake_cuda_*.py``) check
hwprof's CUDA code paths against torch's and pynvml's real interface. None of them checks a number
a GPU would give."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
import torch
from fake_cuda import SEGMENT_BYTES, FakeGpu, FakeProperties, _event_class, _torch_cuda, fake_pynvml

from hwprof.errors import is_oom


def _params(fn: object) -> list[tuple[str, bool]]:
    """(name, has a default) of each parameter, ``self``/``cls``/``obj`` left out."""
    sig = inspect.signature(fn)  # type: ignore[arg-type]
    return [(p.name, p.default is not inspect.Parameter.empty) for p in sig.parameters.values()
            if p.name not in ("self", "cls", "obj")]


@pytest.mark.parametrize("name", sorted(set(_torch_cuda(FakeGpu())) - {"Event", "device"}))
def test_torch_cuda_stand_ins_have_the_real_signatures(name: str) -> None:
    real = getattr(torch.cuda, name)
    fake = _torch_cuda(FakeGpu())[name]
    assert [n for n, _ in _params(fake)] == [n for n, _ in _params(real)], name
    assert _params(fake) == _params(real), f"{name}: defaults differ"


def test_event_stand_in_has_the_real_methods() -> None:
    fake = _event_class(FakeGpu())
    assert _params(fake.__init__) == _params(torch.cuda.Event.__new__)
    for method in ("record", "synchronize", "query", "wait", "elapsed_time"):
        assert _params(getattr(fake, method)) == _params(getattr(torch.cuda.Event, method)), method


def test_device_properties_are_fields_of_torchs_stub() -> None:
    """The fake's properties are attributes torch's ``_CudaDeviceProperties`` declares (its stub;
    a CPU build has no real instance to compare with)."""
    stub = Path(torch.__file__).parent / "_C" / "__init__.pyi"
    block = re.search(r"class _CudaDeviceProperties:\n((?:    \w+: .+\n)+)", stub.read_text())
    assert block is not None
    declared = set(re.findall(r"^    (\w+):", block.group(1), flags=re.M))
    assert set(FakeProperties.__dataclass_fields__) <= declared


def test_pynvml_stand_in_matches_pynvml() -> None:
    pynvml = pytest.importorskip("pynvml")
    fake = fake_pynvml(FakeGpu())
    for name in dir(fake):
        if name.startswith("nvml"):
            assert _params(getattr(fake, name)) == _params(getattr(pynvml, name)), name
        elif name.startswith("NVML_"):
            assert getattr(fake, name) == getattr(pynvml, name), name
    fields = {f for f, _ in pynvml.c_nvmlMemory_t._fields_}
    fake.nvmlInit()
    info = fake.nvmlDeviceGetMemoryInfo(fake.nvmlDeviceGetHandleByIndex(0))
    assert set(vars(info)) <= fields


def test_an_event_is_read_only_after_a_synchronisation(fake_gpu: FakeGpu) -> None:
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    with pytest.raises(RuntimeError, match="recorded"):
        start.elapsed_time(end)
    start.record()
    end.record()
    with pytest.raises(RuntimeError, match="not ready"):
        start.elapsed_time(end)
    end.synchronize()                      # completes every event recorded before it, as a stream does
    # two records, one clock step (1 ms) apart: elapsed_time is in milliseconds, as torch's
    assert start.elapsed_time(end) == pytest.approx(fake_gpu.event_step_ns / 1e6)
    untimed = torch.cuda.Event()
    untimed.record()
    torch.cuda.synchronize()
    with pytest.raises(RuntimeError, match="enable_timing"):
        start.elapsed_time(untimed)


def test_tensors_on_cuda_are_counted_until_they_die(fake_gpu: FakeGpu) -> None:
    x = torch.empty(1000, dtype=torch.float32, device="cuda")
    assert x.device.type == "cpu"                                 # the storage lives on the CPU
    assert torch.cuda.memory_allocated() == 4000                  # 1000 float32
    y = torch.ones(10, dtype=torch.float64).to("cuda:0")          # Tensor.to with a device
    z = y.view(2, 5).cuda()                                       # a view: the same storage, counted once
    assert torch.cuda.memory_allocated() == 4080
    assert torch.cuda.memory_reserved() == SEGMENT_BYTES         # 2 MiB segments
    del x
    assert torch.cuda.memory_allocated() == 80 and torch.cuda.max_memory_allocated() == 4080
    torch.cuda.reset_peak_memory_stats()
    assert torch.cuda.max_memory_allocated() == 80
    free, total = torch.cuda.mem_get_info()
    assert free + torch.cuda.memory_reserved() + fake_gpu.context_bytes == total
    del y, z
    torch.cuda.empty_cache()
    assert torch.cuda.memory_allocated() == 0 and torch.cuda.memory_reserved() == 0


def test_out_of_memory_is_torchs_error(fake_gpu: FakeGpu) -> None:
    torch.cuda.set_per_process_memory_fraction(0.5)
    assert torch.cuda.get_per_process_memory_fraction() == 0.5
    with pytest.raises(torch.cuda.OutOfMemoryError) as e:
        torch.empty(fake_gpu.total_memory_bytes // 2 + 1, dtype=torch.uint8, device="cuda")
    assert is_oom(e.value)


def test_a_cpu_device_is_refused_as_torch_refuses_it(fake_gpu: FakeGpu) -> None:
    with pytest.raises(ValueError, match="Expected a cuda device"):
        torch.cuda.max_memory_allocated(torch.device("cpu"))
    assert torch.cuda.max_memory_allocated(torch.device("cuda", 0)) == 0
    assert torch.cuda.get_device_name(torch.device("cuda")) == fake_gpu.name
