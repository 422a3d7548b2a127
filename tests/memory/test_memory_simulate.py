"""The simulated predictor: exact replays of small steps, and cross-checks against other trackers."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from hwprof.memory.allocator import ExactAllocatorModel
from hwprof.memory.fake_model import prepare_fake
from hwprof.memory.simulate import simulate
from hwprof.memory.tracker import MemoryTracker, cublas_workspace_bytes
from hwprof.modules import ModuleCalls
from hwprof.training import training_loss
from hwprof.zoo import build

MiB = 2**20
P = (1024 * 1024 + 1024) * 4            # Linear(1024, 1024): 4,198,400 B of parameters
X = 4 * 1024 * 4                        # its input at batch 4: 16,384 B


def small_cnn() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(inplace=True),
                         nn.Conv2d(16, 16, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 16 * 16, 10))


def test_inference_chain_allocated_and_reserved() -> None:
    model = nn.Sequential(nn.Linear(1024, 1024), nn.ReLU(), nn.Linear(1024, 1024))
    r = simulate(model, "1024", batch=4, mode="inference", device="cuda", workspace_bytes=0)
    # live at the peak: params 2 x P, the input x, and during the ReLU both its input y1 and output r1
    # (Sequential drops y1 only when the ReLU returns); later r1 + y2: 3 x 16,384 at most
    assert r.peak_requested_bytes == 2 * P + 3 * X == 8_445_952
    assert list(r.phase_peaks["iteration"].unique()) == [0]      # inference: one forward, no second iteration
    assert r.components["activations_saved"] == 0                 # no grad: nothing is saved for a backward
    # every size is a multiple of 512: the caching allocator adds nothing
    assert r.peak_allocated_bytes == 8_445_952
    # reserved: the two 4 MiB weights (1..10 MiB) share one 20 MiB segment (split, 16 MiB then 12 MiB
    # left), the biases and activations (<= 1 MiB) one 2 MiB small segment: 22 MiB
    assert r.reserved_bytes == 22 * MiB
    # with the default cuBLAS workspace (32 MiB on sm_90, its own 32 MiB segment), allocated once
    r = simulate(model, "1024", batch=4, mode="inference", device="cuda", workspace_bytes=32 * MiB)
    assert r.peak_allocated_bytes == 8_445_952 + 32 * MiB
    assert r.reserved_bytes == 54 * MiB


@pytest.mark.parametrize("optimizer,device,expected_bytes", [
    # backward peak: params P + input X + loss 4 B (sum) + its gradient 4 B (ones_like) + grads P
    ("sgd", "cpu", P + X + 4 + 4 + P),                                  # 8,413,192
    # on CUDA the two 4 B scalars take a 512 B block each
    ("sgd", "cuda", P + X + 512 + 512 + P),                             # 8,414,208
    # momentum: + the momentum buffer (P), live from the first step on
    ("momentum", "cpu", P + X + 4 + 4 + P + P),                         # 12,611,592
    # Adam on CPU (single-tensor): in the step, params + X + 2 P states + 2 x 4 B step counters + grads P
    # + (exp_avg_sq.sqrt() / bias_correction2_sqrt): two weight-sized temporaries (2 x 4 MiB) at once
    ("adam", "cpu", P + X + 2 * P + 8 + P + 2 * 4 * MiB),               # 25,198,600
    # Adam on CUDA (foreach, torch's default there): _foreach_sqrt of all second moments: + P;
    # the step counters are CPU scalars in a real CUDA run and are not counted
    ("adam", "cuda", P + X + 2 * P + P + P),                            # 21,008,384
])
def test_linear_training_step_peak(optimizer: str, device: str, expected_bytes: int) -> None:
    r = simulate(nn.Linear(1024, 1024), "1024", batch=4, optimizer=optimizer, device=device, workspace_bytes=0)
    assert r.peak_allocated_bytes == expected_bytes
    assert r.components["params"] == P
    assert r.components["grads"] == P
    assert r.components["optimizer_state"] == {"sgd": 0, "momentum": P, "adam": 2 * P}[optimizer] + \
        (8 if (optimizer, device) == ("adam", "cpu") else 0)
    # the output is summed into the 4 B loss and freed (the Linear saves its input, counted as an input)
    assert r.components["activations_saved"] == 4 and r.components["inputs"] == X
    # what the allocator adds to the requested bytes at the peak: SGD on CUDA, the loss and its gradient,
    # 4 B each in a 512 B block: 2 x 508 = 1,016 B; nothing elsewhere (the CPU model rounds nothing)
    assert r.components["allocator_rounding"] == (1016 if (optimizer, device) == ("sgd", "cuda") else 0)
    assert r.components["workspace"] == 0                   # workspace_bytes=0
    assert any("cuBLAS workspace 0 B per thread" in n for n in r.notes) == (device == "cuda")


def test_a_training_step_without_a_gradient_says_so() -> None:
    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(x).detach()

    r = simulate(Detached(), "4", batch=2, optimizer="sgd", device="cpu")
    assert r.notes[0] == "the output has no floating tensor requiring grad: no backward was run"
    assert r.components["grads"] == 0
    trained = simulate(nn.Linear(4, 4), "4", batch=2, optimizer="sgd", device="cpu")
    assert not any("no backward" in n for n in trained.notes)


def test_formula_equals_simulation_for_a_linear_layer_with_adam() -> None:
    from hwprof.memory.formula import formula
    f = formula(nn.Linear(1024, 1024), "1024", batch=4, optimizer="adam", device="cuda").components
    s = simulate(nn.Linear(1024, 1024), "1024", batch=4, optimizer="adam", device="cuda", workspace_bytes=0)
    assert f["peak_predicted"] == s.peak_allocated_bytes == 21_008_384


def test_train_peak_holds_the_state_and_exceeds_inference() -> None:
    model, spec = build("mobilenet_v1", device="meta")
    train = simulate(model, spec, batch=2, optimizer="adam", device="cuda")
    inference = simulate(model, spec, batch=2, mode="inference", device="cuda")
    c = train.components
    assert train.peak_allocated_bytes >= c["params"] + c["grads"] + c["optimizer_state"]
    assert train.peak_allocated_bytes > inference.peak_allocated_bytes
    assert train.reserved_bytes >= train.peak_allocated_bytes
    assert set(train.phase_peaks["phase"]) == {"forward", "backward", "step", "zero_grad"}
    # the steady state (second iteration, optimizer state live) is the peak
    assert "iteration 2" in train.peak_phase


def test_matches_memtracker_under_fake_mode() -> None:
    mt = pytest.importorskip("torch.distributed._tools.mem_tracker")
    s = prepare_fake(small_cnn(), "3x16x16", batch=8, device="cpu")
    with s.fake_mode:
        opt = torch.optim.Adam(s.model.parameters(), foreach=True)
        tracker = mt.MemTracker()
        tracker.track_external(s.model, opt, *s.inputs)
        with tracker:
            for _ in range(2):
                training_loss(s.model(*s.inputs)).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)
                tracker.reset_mod_stats()
        theirs = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    ours = simulate(small_cnn(), "3x16x16", batch=8, optimizer="adam", device="cpu", foreach=True)
    assert ours.peak_allocated_bytes == theirs == 1_369_360


def test_matches_memtracker_on_real_tensors() -> None:
    """The replay on fake tensors against torch's MemTracker following the same two steps on real ones
    (MemTracker counts storages by their own bookkeeping: no code of hwprof's sees the real tensors)."""
    mt = pytest.importorskip("torch.distributed._tools.mem_tracker")
    torch.manual_seed(0)
    model = small_cnn()
    x = torch.randn(8, 3, 16, 16)
    work = copy.deepcopy(model)
    opt = torch.optim.Adam(work.parameters(), foreach=False)
    tracker = mt.MemTracker()
    tracker.track_external(work, opt, x)
    with tracker:
        for _ in range(2):
            loss = training_loss(work(x))
            loss.backward()
            del loss
            opt.step()
            opt.zero_grad(set_to_none=True)
            tracker.reset_mod_stats()
    theirs = tracker.get_tracker_snapshot("peak")[torch.device("cpu")]["Total"]
    fake = simulate(model, x, optimizer="adam", device="cpu")
    assert fake.peak_allocated_bytes == theirs == 1_369_360   # the fake-mode MemTracker's figure above, too


def test_backward_allocations_belong_to_the_module_whose_node_runs() -> None:
    """Forward allocations go to the running module call, backward ones to the call that created
    the running autograd node (the attribution the counter and the per-layer timer share)."""
    model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
    x = torch.randn(3, 8)
    with ModuleCalls(model) as calls:
        tracker = MemoryTracker(ExactAllocatorModel(), calls)
        for t in (*model.parameters(), x):
            tracker.register(t, "existing")
        with tracker:
            tracker.set_phase(0, "forward")
            loss = training_loss(model(x))
            calls.label_backward([loss])
            tracker.set_phase(0, "backward")
            loss.backward()
        tracker.close()
    forward = [(r.op, r.module) for r in tracker.records if r.phase == "forward"]
    assert forward == [("addmm", "0"), ("relu", "1"), ("addmm", "2"), ("sum", "")]   # the loss is no module's
    backward = [(r.op, r.module, r.nbytes) for r in tracker.records if r.phase == "backward"]
    assert backward == [
        ("ones_like", "", 4),                        # the seed gradient, made before any node runs
        ("mm", "2", 3 * 16 * 4), ("mm", "2", 4 * 16 * 4), ("sum", "2", 4 * 4),   # grad input, weight, bias
        ("threshold_backward", "1", 3 * 16 * 4),
        ("mm", "0", 16 * 8 * 4), ("sum", "0", 16 * 4),    # no grad input: x needs none
    ]


def test_cublas_workspace_per_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert cublas_workspace_bytes(9) == 4096 * 8 * 1024                   # 32 MiB on sm_90
    assert cublas_workspace_bytes(8) == 4096 * 1024 * 2 + 16 * 1024 * 8  # 8,519,680 B before
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    assert cublas_workspace_bytes(8) == 4096 * 1024 * 8
    r = simulate(nn.Linear(1024, 1024), "1024", batch=4, optimizer="sgd", device="cuda", workspace_bytes=MiB)
    # one workspace for the forward thread (addmm), one for the autograd thread (mm)
    assert r.components["workspace"] == 2 * MiB
    assert r.peak_allocated_bytes == P + X + 512 + 512 + P + 2 * MiB


class _Attention(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.qkv = nn.Linear(64, 3 * 64)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        q, k, v = (t.view(b, s, 4, 16).transpose(1, 2) for t in self.qkv(x).split(d, dim=2))
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=0.1)


def test_cuda_attention_is_emulated_on_a_cpu_replay() -> None:
    cpu = simulate(_Attention(), "256x64", batch=2, device="cpu")
    cuda = simulate(_Attention(), "256x64", batch=2, device="cuda", workspace_bytes=0)
    ops = set(cuda.timeline["op"])
    assert "_scaled_dot_product_efficient_attention" in ops       # fp32: the memory-efficient kernel
    # the CPU math path keeps 2 x 4 heads x 256 x 256 attention probabilities (2 MiB in fp32) for backward
    assert cpu.components["activations_saved"] > cuda.components["activations_saved"] + 2 * MiB
    mha = nn.TransformerEncoderLayer(64, 4, 128, batch_first=True)
    r = simulate(mha, "256x64", batch=2, device="cuda", workspace_bytes=0)
    assert "_scaled_dot_product_efficient_attention" in set(r.timeline["op"])


def test_meta_model_and_bf16() -> None:
    with torch.device("meta"):
        model = nn.Linear(1024, 1024)
    r = simulate(model, "1024", batch=4, optimizer="adam", dtype="bf16", device="cuda", workspace_bytes=0)
    assert r.components["params"] == P // 2                  # 2 B per value
    assert r.components["optimizer_state"] == P              # Adam's states follow the parameters' dtype


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the fallback on a machine without CUDA")
def test_fake_cuda_request_falls_back_to_cpu_without_cuda() -> None:
    r = simulate(nn.Linear(8, 8), "8", batch=2, device="cuda", fake_device="cuda")
    assert r.fake_device == "cpu"


def test_rnn_training_workspace_is_named_as_not_modelled() -> None:
    """oneDNN's LSTM keeps a workspace from forward to backward that its fake kernel returns
    empty (measured on CPU with hwprof.measuring.alloc_trace: 31.3 MiB per layer for the zoo's
    lstm at batch 32); the prediction says so instead of looking exact."""
    model = nn.LSTM(8, 16, batch_first=True)
    train = simulate(model, torch.randn(2, 5, 8), mode="train", optimizer="adam", device="cpu")
    assert any("not modelled: oneDNN's RNN workspace" in n and "LSTM" in n for n in train.notes)
    infer = simulate(model, torch.randn(2, 5, 8), mode="inference", device="cpu")
    assert not any("not modelled" in n for n in infer.notes)
