"""Counting a 7B decoder-only transformer (32 layers, d_model 4096, 32 heads, seq 2048, batch 1),
forward + backward, on meta tensors: budget < 5 s and peak RSS < 1 GB on a 2-core CPU.

Run: .venv/bin/python -m pytest bench/test_count_7b.py --benchmark-only
(results/count/7b-count-<machine>.json is written by bench/count_7b.py, which also records RSS).
"""

from __future__ import annotations

import torch

import hwprof
from hwprof import zoo


def test_count_7b_forward_backward(benchmark) -> None:  # type: ignore[no-untyped-def]
    model, spec = zoo.build("gpt_7b", device="meta")
    c = benchmark.pedantic(hwprof.count, args=(model, spec), kwargs={"backward": True}, rounds=3, iterations=1)
    assert c.totals["params"] == sum(p.numel() for p in model.parameters())
    assert not c.uncounted
    assert benchmark.stats["median"] < 5.0
    assert next(model.parameters()).device == torch.device("meta")
