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
    # forward gathers each block once, in order; every block is resharded after its forward
    # (reshard_after_forward), so backward gathers each again, last block first, and reduce-scatters its
    # full gradient after its backward
    assert _bytes(p, "fwd", "all_gather_into_tensor") == [2176, 4224, 1056]
    assert _bytes(p, "bwd", "all_gather_into_tensor") == [1056, 4224, 2176]
    assert _bytes(p, "bwd", "reduce_scatter_tensor") == [1056, 4224, 2176]
    assert [c.kind for c in p.collectives if c.phase == "bwd"] == [
        "all_gather_into_tensor", "all_gather_into_tensor", "reduce_scatter_tensor", "all_gather_into_tensor",
        "reduce_scatter_tensor", "reduce_scatter_tensor"]
    assert sum(BLOCK_BYTES) == PARAM_BYTES


def test_fsdp_memory_per_rank_falls_with_the_world_size_and_ddp_does_not() -> None:
    fsdp = [predict(tiny_mlp(), "16", "fsdp", n, batch=4, optimizer="adam", count_flops=False) for n in (2, 8)]
    ddp = [predict(tiny_mlp(), "16", "ddp", n, batch=4, optimizer="adam", count_flops=False) for n in (2, 8)]
    # FSDP2 keeps 1/n of the parameters (and of Adam's two states) per rank: 7456/2 vs 7456/8
    assert fsdp[0].at_peak["params"] == PARAM_BYTES // 2 and fsdp[1].at_peak["params"] == PARAM_BYTES // 8
    assert fsdp[1].peak_bytes < fsdp[0].peak_bytes
    assert ddp[0].peak_bytes == ddp[1].peak_bytes                         # DDP replicates everything


def test_flops_per_rank_are_the_local_counts() -> None:
    """Each rank runs its own batch of 4, whatever the world size. By hand (2 FLOPs per MAC):
    forward 2*4*16*32 + 4*32 (ReLU) + 2*4*32*32 + 4*32 + 2*4*32*8 = 4096 + 128 + 8192 + 128 + 2048 = 14,592;
    backward: the last Linear's grad input and weight 2 x 2048 + bias 4*8, ReLU 128, the middle Linear
    2 x 8192 + 4*32, ReLU 128, the first Linear's grad weight only (its input needs none) 4096 + 4*32:
    4128 + 128 + 16,512 + 128 + 4224 = 25,120."""
    for world in (4, 64):
        p = predict(tiny_mlp(), "16", "ddp", world, batch=4, optimizer=None)
        assert (p.flops_fwd, p.flops_bwd) == (14_592, 25_120)


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
