"""The API keeps Kineto's session lines off stderr, and nothing else: the user's own output stays."""

from __future__ import annotations

import os
import subprocess
import sys

SCRIPT = """
import sys, torch, hwprof
from torch import nn

class Loud(nn.Module):
    def forward(self, x):
        print("the user's own line", file=sys.stderr)
        return x * 2

m = hwprof.measure(nn.Sequential(nn.Linear(4, 4), Loud()), "4", per_op=True, budget_s=0.01, warmup=0,
                   min_reps=1, max_reps=1, layer_reps=1)
print("per-op rows", len(m.ops))
"""


def test_api_calls_print_no_kineto_lines_but_keep_the_users() -> None:
    env = {k: v for k, v in os.environ.items() if k != "KINETO_LOG_LEVEL"}
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "USDT" not in r.stderr and "profiler_start" not in r.stderr, r.stderr
    assert "the user's own line" in r.stderr                 # the model's output inside the sessions is kept
    assert int(r.stdout.split()[-1]) > 0                      # the per-op pass did record


def test_a_users_kineto_level_is_left_alone() -> None:
    env = {**os.environ, "KINETO_LOG_LEVEL": "0"}            # the user asked for Kineto's messages
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120, env=env)
    assert r.returncode == 0, r.stderr
    assert "profiler_start" in r.stderr
