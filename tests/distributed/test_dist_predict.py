"""Predictions on torch's fake process group, in this process: collectives per step and per-rank memory."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from dist_models import PARAM_BYTES, tiny_mlp
from torch import nn

from hwprof.distributed.group import DistributedError
from hwprof.distributed.predict import ddp_buckets, fake_process_group, predict
from hwprof.distributed.wrap import fsdp_blocks

# the three blocks of TinyMLP, unsharded: Linear(16, 32), Linear(32, 32), Linear(32, 8) with biases
BLOCK_BYTES = (4 * (16 * 32 + 32), 4 * (32 * 32 + 32), 4 * (32 * 8 + 8))   # 2176, 4224, 1056 B


def _bytes(pred: object, phase: str, kind: str) -> list[int]:
    return [c.bytes for c in pred.collectives if c.phase == phase and c.kind == kind]  # type: ignore[attr-defined]


def test_ddp_all_reduces_every_gradient_once_per_step() -> None:
    p = predict(tiny_mlp(), "16", "ddp", 2, batch=4, optimizer="sgd", count_flops=False)
    assert sum(_bytes(p, "bwd", "all_reduce")) == PARAM_BYTES         # 7456 B: the gradients
    assert {c.kind for c in p.collectives} == {"all_reduce"}
    assert dist.is_initialized() is False                                 # the fake group is gone


def test_fsdp_gathers_each_block_and_scatters_every_gradient() -> None:
    p = predict(tiny_mlp(), "16", "fsdp", 2, batch=4, optimizer="sgd", count_flops=False)
    # forward gathers each block once; backward re-gathers the blocks resharded after forward
    assert sorted(_bytes(p, "fwd", "all_gather_into_tensor")) == sorted(BLOCK_BYTES)
    assert set(_bytes(p, "bwd", "all_gather_into_tensor")) <= set(BLOCK_BYTES)
    assert sorted(_bytes(p, "bwd", "reduce_scatter_tensor")) == sorted(BLOCK_BYTES)   # the full gradients
    assert sum(BLOCK_BYTES) == PARAM_BYTES


def test_fsdp_memory_per_rank_falls_with_the_world_size_and_ddp_does_not() -> None:
    fsdp = [predict(tiny_mlp(), "16", "fsdp", n, batch=4, optimizer="adam", count_flops=False) for n in (2, 8)]
    ddp = [predict(tiny_mlp(), "16", "ddp", n, batch=4, optimizer="adam", count_flops=False) for n in (2, 8)]
    # FSDP2 keeps 1/n of the parameters (and of Adam's two states) per rank: 7456/2 vs 7456/8
    assert fsdp[0].at_peak["params"] == PARAM_BYTES // 2 and fsdp[1].at_peak["params"] == PARAM_BYTES // 8
    assert fsdp[1].peak_bytes < fsdp[0].peak_bytes
    assert ddp[0].peak_bytes == ddp[1].peak_bytes                         # DDP replicates everything


def test_flops_per_rank_are_the_local_counts() -> None:
    from hwprof.counting.counter import count

    p = predict(tiny_mlp(), "16", "ddp", 4, batch=4, optimizer=None)
    c = count(tiny_mlp(), "16", batch=4, backward=True, mode="train")
    assert (p.flops_fwd, p.flops_bwd) == (c.totals["flops_fwd"], c.totals["flops_bwd"])


def test_ddp_buckets_follow_the_reducer_assignment() -> None:
    # gradients ready in this order: 0.8 MiB, 0.4 MiB, 2 KiB; the first bucket closes past 1 MiB
    ready = [torch.empty(200_000), torch.empty(100_000), torch.empty(512)]
    assert ddp_buckets(ready, 2**20, 25 * 2**20) == [1_200_000, 2048]
    assert ddp_buckets([], 2**20, 25 * 2**20) == []


def test_a_prediction_refuses_an_initialised_group_and_a_bad_size() -> None:
    with fake_process_group(2), pytest.raises(DistributedError, match="own fake process group"):
        predict(tiny_mlp(), "16", "ddp", 2, count_flops=False)
    with pytest.raises(DistributedError, match=">= 1"):
        predict(tiny_mlp(), "16", "fsdp", 0, count_flops=False)
    with pytest.raises(ValueError, match="parallel must be one of"):
        predict(tiny_mlp(), "16", "tp", 2, count_flops=False)


def test_fsdp_blocks_are_the_children_of_the_outermost_containers() -> None:
    from hwprof import zoo

    assert fsdp_blocks(tiny_mlp()) == ["blocks.0", "blocks.1", "blocks.2"]
    gpt, _ = zoo.build("gpt_tiny", device="meta")
    assert fsdp_blocks(gpt) == ["blocks.0", "blocks.1"]
    assert fsdp_blocks(nn.Linear(2, 2)) == []
