"""The CUDA caching-allocator model: rounding, segment sizes, best fit, splitting, merging.

Constants from c10/cuda/CUDACachingAllocator.cpp: kMinBlockSize 512 B, kSmallSize 1 MiB,
kSmallBuffer 2 MiB, kLargeBuffer 20 MiB, kMinLargeAlloc 10 MiB, kRoundLarge 2 MiB.
"""

from __future__ import annotations

from hwprof.memory.allocator import (
    CachingAllocatorModel,
    ExactAllocatorModel,
    make_allocator,
    round_block_bytes,
    segment_bytes,
)

MiB = 2**20


def test_round_block_bytes() -> None:
    assert round_block_bytes(0) == 0                 # empty tensors allocate nothing
    assert round_block_bytes(1) == 512               # below kMinBlockSize -> 512
    assert round_block_bytes(4) == 512               # a fp32 scalar costs 512 B on CUDA
    assert round_block_bytes(512) == 512
    assert round_block_bytes(513) == 1024            # 512 * ceil(513 / 512)
    assert round_block_bytes(1000) == 1024
    assert round_block_bytes(MiB + 1) == MiB + 512


def test_segment_bytes() -> None:
    assert segment_bytes(512) == 2 * MiB             # <= 1 MiB: small pool, 2 MiB segment
    assert segment_bytes(MiB) == 2 * MiB
    assert segment_bytes(MiB + 512) == 20 * MiB      # 1 MiB < size < 10 MiB: kLargeBuffer
    assert segment_bytes(10 * MiB - 512) == 20 * MiB
    assert segment_bytes(10 * MiB) == 10 * MiB       # >= 10 MiB: rounded up to 2 MiB
    assert segment_bytes(10 * MiB + 512) == 12 * MiB


def test_small_pool_packs_blocks_in_one_segment_and_caches_it() -> None:
    a = CachingAllocatorModel()
    assert a.malloc(1, 1000) == 1024                 # 1000 B -> 1024 B block in a new 2 MiB segment
    assert a.malloc(2, 3000) == 3072                 # 3000 B -> 3072 B, split from the same segment
    assert (a.allocated_bytes, a.reserved_bytes, a.segments) == (4096, 2 * MiB, 1)
    a.free(1)
    a.free(2)
    assert (a.allocated_bytes, a.reserved_bytes) == (0, 2 * MiB)     # the segment stays cached
    assert a.peak_allocated_bytes == 4096
    assert a.requested_bytes == 0
    # the freed blocks merged with the segment's tail into one free 2 MiB block,
    # so a 1 MiB request (the largest small one) reuses it: no new segment
    a.malloc(3, MiB)
    assert (a.reserved_bytes, a.segments) == (2 * MiB, 1)


def test_unsplit_large_block_is_counted_whole() -> None:
    a = CachingAllocatorModel()
    # 11 MiB + 1 B -> block 11 MiB + 512 B -> segment 12 MiB; the 1 MiB - 512 B tail is not
    # more than 1 MiB, so the block is not split and allocated_bytes counts all 12 MiB
    assert a.malloc(1, 11 * MiB + 1) == 12 * MiB
    assert (a.allocated_bytes, a.reserved_bytes) == (12 * MiB, 12 * MiB)
    assert a.requested_bytes == 11 * MiB + 1


def test_best_fit_split_and_merge_in_the_large_pool() -> None:
    a = CachingAllocatorModel()
    a.malloc(1, 5 * MiB)              # new 20 MiB segment (1 MiB < 5 MiB < 10 MiB); tail 15 MiB split off
    a.malloc(2, 5 * MiB)              # best fit: the 15 MiB tail; split again, 10 MiB free
    assert (a.allocated_bytes, a.reserved_bytes, a.segments) == (10 * MiB, 20 * MiB, 1)
    a.free(1)                         # free blocks: 5 MiB (address 0) and 10 MiB (tail)
    assert a.malloc(3, 4 * MiB + 512) == 5 * MiB     # best fit is the 5 MiB block; its 1 MiB - 512 B
    assert a.allocated_bytes == 10 * MiB             # tail is not > 1 MiB: not split, counted whole
    a.free(2)
    a.free(3)                         # everything merges back into one free 20 MiB block
    a.malloc(4, 18 * MiB)             # fits the cached 20 MiB (tail 2 MiB > 1 MiB: split)
    assert (a.allocated_bytes, a.reserved_bytes, a.segments) == (18 * MiB, 20 * MiB, 1)
    assert a.peak_reserved_bytes == 20 * MiB


def test_pools_do_not_share_segments() -> None:
    a = CachingAllocatorModel()
    a.malloc(1, 1024)                 # small pool: 2 MiB segment
    a.free(1)
    a.malloc(2, MiB + 512)            # a large request never uses the cached small segment: +20 MiB
    assert (a.reserved_bytes, a.segments) == (22 * MiB, 2)


def test_resize_and_zero_bytes() -> None:
    a = CachingAllocatorModel()
    assert a.malloc(1, 0) == 0 and a.allocated_bytes == 0 and a.segments == 0
    a.resize(1, 2048)                 # resize_ of an empty storage: a 2048 B block appears
    assert a.allocated_bytes == 2048
    a.free(1)
    a.free(1)                         # freeing twice is harmless
    assert a.allocated_bytes == 0


def test_exact_model_and_factory() -> None:
    e = ExactAllocatorModel()
    e.malloc(1, 1000)
    e.malloc(2, 3)
    assert (e.allocated_bytes, e.reserved_bytes, e.peak_allocated_bytes) == (1003, 1003, 1003)
    e.free(1)
    assert (e.allocated_bytes, e.peak_allocated_bytes) == (3, 1003)
    assert isinstance(make_allocator("cuda"), CachingAllocatorModel)
    assert isinstance(make_allocator("cpu"), ExactAllocatorModel)
