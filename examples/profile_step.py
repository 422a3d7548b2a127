"""hwprof.profile_step on a training step of one's own (gradient accumulation, two models) and
hwprof.capture around a loop:

    python examples/profile_step.py
"""

import torch
import torch.nn.functional as F
from torch import nn

import hwprof

torch.manual_seed(0)
student = nn.Sequential(nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 10))
teacher = nn.Sequential(nn.Linear(64, 512), nn.ReLU(), nn.Linear(512, 10)).eval()
opt = torch.optim.AdamW(student.parameters(), lr=1e-3)
x, y = torch.randn(4, 16, 64), torch.randint(0, 10, (4, 16))


def train_step(x: torch.Tensor, y: torch.Tensor) -> None:
    """Distillation over 4 accumulated micro-batches: the teacher runs inside the loss."""
    opt.zero_grad()
    for xb, yb in zip(x, y, strict=True):
        with torch.no_grad():
            soft = F.softmax(teacher(xb), -1)
        logits = student(xb)
        loss = F.cross_entropy(logits, yb) + F.kl_div(F.log_softmax(logits, -1), soft, reduction="batchmean")
        (loss / len(x)).backward()
    opt.step()


p = hwprof.profile_step(train_step, x, y)          # the step runs for real; student, teacher, opt restored
print(f"step {p.summary['step_time_s'] * 1e3:.2f} ms, {p.summary['flops'] / 1e6:.1f} MFLOP; split:",
      {k: round(v * 1e3, 3) for k, v in p.summary["step_split"].items() if k.endswith("_s")})
print(p.layers[["type", "calls", "flops", "time_s", "bound"]])

with hwprof.capture(steps="2:6") as cap:             # around the user's own loop: nothing restored, nothing changed
    for _ in range(8):
        train_step(x, y)
print(cap.profile.summary["step_time_s"], "s per captured step")
