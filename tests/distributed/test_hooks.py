"""The general changes the distributed package needs in the runner and the memory replay, each checked on its
own (every test here fails on the code before them)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.testing._internal.two_tensor import TwoTensor

import hwprof
from hwprof.measuring.alloc_trace import storage_bytes, window_peak_bytes
from hwprof.memory.allocator import make_allocator
from hwprof.memory.simulate import MemoryTracker, simulate

QUICK = {"budget_s": 0.01, "min_reps": 1, "max_reps": 1, "warmup": 0}


# --------------------------------------------------------------------------- runner
def test_a_wrapper_subclass_is_counted_by_its_inner_tensors() -> None:
    # a DTensor's own storage is a placeholder of the *global* size; its memory is the local shard.
    # TwoTensor wraps two 10-float tensors: 2 x 40 B (a view of one of them adds nothing)
    a, b = torch.ones(10), torch.ones(10)
    t = TwoTensor(a, b)
    assert storage_bytes([t, a[2:]]) == 80
    from hwprof.measuring.alloc_trace import inner_tensors

    assert [x.data_ptr() for x in inner_tensors(t)] == [a.data_ptr(), b.data_ptr()]


def test_resident_bytes_count_as_live_before_the_allocator_trace() -> None:
    model = nn.Linear(64, 64)   # 4160 params = 16640 B; a batch of 8 x 64 floats = 2048 B
    plain = hwprof.measure(model, "64", batch=8, device="cpu", **QUICK).memory
    held = hwprof.measure(model, "64", batch=8, device="cpu", resident_bytes=1000, **QUICK).memory
    assert plain["alloc_trace_live_before_bytes"] == 16640 + 2048
    assert held["alloc_trace_live_before_bytes"] == 16640 + 2048 + 1000
    assert held["alloc_trace_peak_bytes"] - plain["alloc_trace_peak_bytes"] == 1000


def test_a_free_that_went_unrecorded_bounds_the_peak() -> None:
    # ptr 7 allocated (100 B) and allocated again (60 B) without a free in between: its free went unrecorded.
    # Counted live until then, the peak is 100 + 50 = 150; without that block it is 50 + 60 = 110: the
    # peak may be 40 B too high
    from hwprof.measuring.alloc_trace import _replay

    r = _replay([(0, 7, 100), (1, 8, 50), (2, 7, 60), (3, 8, -50), (4, 7, -60)])
    assert (r.peak, r.net, r.peak_excess) == (150, 0, 40)
    # a block allocated after the peak, whose free went unrecorded, does not move it: 150 either way
    assert _replay([(0, 8, 150), (1, 8, -150), (2, 7, 10), (3, 7, 20)]).peak_excess == 0
    assert window_peak_bytes([(0, 7, 100), (1, 7, -100)]) == (100, 0, 1)


def test_a_block_never_seen_freed_counts_against_the_peak_only_when_allocated_before_it() -> None:
    from hwprof.measuring.alloc_trace import _replay

    # ptr 1 (100 B) freed; ptr 2 (80 B) and ptr 3 (30 B) live together: peak 110 at t=2; ptr 4 (40 B) allocated
    # after the peak and never freed: net 40, but nothing unseen sits in the peak
    after = _replay([(0, 1, 100), (1, 1, -100), (2, 2, 80), (2, 3, 30), (3, 2, -80), (4, 3, -30), (5, 4, 40)])
    assert (after.peak, after.net, after.unfreed_at_peak) == (110, 40, 0)
    # ptr 3 never freed: it was counted in the peak of 110 and is still live at the end: 30 B of the peak unsure
    before = _replay([(0, 1, 100), (1, 1, -100), (2, 2, 80), (2, 3, 30), (3, 2, -80)])
    assert (before.peak, before.net, before.unfreed_at_peak) == (110, 30, 30)


# --------------------------------------------------------------------------- memory replay
class _Toy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.randn(64, 64))     # 16384 B

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w


@contextlib.contextmanager
def _halve(fmodel: nn.Module) -> Iterator[nn.Module]:
    """A 'sharding' wrapper: the parameter is replaced by a new one of half its columns (8192 B)."""
    fmodel.w = nn.Parameter(torch.empty(64, 32))
    yield fmodel


def test_wrap_runs_the_step_on_what_it_yields_and_frees_what_it_replaced() -> None:
    def backward_peak(wrap: object = None) -> int:
        sim = simulate(_Toy(), "64", batch=2, mode="train", device="cpu", wrap=wrap)  # type: ignore[arg-type]
        peaks = sim.phase_peaks.set_index("phase")["peak_allocated_bytes"]
        return int(peaks["backward"])

    # the replaced 16384 B parameter is freed, not kept by the replay: in backward the halved model holds
    # 8192 B of parameter and 8192 B of gradient instead of 16384 + 16384
    assert backward_peak() - backward_peak(_halve) == 16384


def test_a_parameter_storage_resized_between_ops_is_seen() -> None:
    # FSDP2 frees gathered parameters with untyped_storage().resize_(0): no op is dispatched
    fm = FakeTensorMode()
    with fm:
        p = nn.Parameter(torch.empty(256))            # 1024 B
    alloc = make_allocator("cpu")
    tracker = MemoryTracker(alloc)
    with fm:
        tracker.register(p, "params")
        with tracker:
            y = torch.add(p, 1)                        # an op takes it: watched from now on
            before = alloc.allocated_bytes
            p.untyped_storage().resize_(0)
            z = torch.ones(1)                          # any next op
            after = alloc.allocated_bytes
            del y, z
    tracker.close()
    assert before - after == 1024 - 4                  # the parameter's 1024 B gone, the new 4 B tensor live


def test_restore_false_leaves_a_model_the_caller_owns_as_the_run_left_it() -> None:
    # an SGD step moves the weights; the runner puts them back unless told that the caller owns the model
    torch.manual_seed(0)
    model = nn.Linear(4, 4)
    before = model.weight.detach().clone()
    hwprof.measure(model, "4", batch=2, device="cpu", mode="train", optimizer="sgd", alloc_trace=False, **QUICK)
    assert torch.equal(model.weight, before)
    hwprof.measure(model, "4", batch=2, device="cpu", mode="train", optimizer="sgd", alloc_trace=False, restore=False,
                   **QUICK)
    assert not torch.equal(model.weight, before)
