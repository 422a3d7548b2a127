"""CUDA-only memory checks (skipped cleanly without a GPU)."""

from __future__ import annotations

import pytest
import torch

from hwprof.device import free_device_memory
from hwprof.memory.fit import device_total_bytes

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_fit_auto_budget_is_what_the_process_can_allocate() -> None:
    torch.cuda.init()
    total = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    budget = device_total_bytes("cuda")
    assert 0 < budget < total          # the CUDA context is already taken from the free memory


def test_cublas_workspaces_are_released() -> None:
    a = torch.randn(256, 256, device="cuda")
    (a @ a).sum().item()               # creates this thread's cuBLAS workspace
    del a
    free_device_memory(torch.device("cuda"), cublas_workspaces=True)
    assert torch.cuda.memory_allocated() == 0
